//! Who may do what to a document's metadata, by role (sans-IO: the REST handlers ask, the
//! tests drive it directly). What sessions may do to the content is the owner core's
//! check (`tandem_net::access`).

use tandem_net::protocol::Role;

use crate::store::DocumentView;

/// Renaming: editors and the owner.
pub fn may_rename(role: Role) -> bool {
    role >= Role::Editor
}

/// Link sharing and the "editors can share" switch: the owner (by their own role; see
/// [`DocumentView::own`]).
pub fn may_change_sharing(own: Option<Role>) -> bool {
    own == Some(Role::Owner)
}

/// Deleting: the owner.
pub fn may_delete(own: Option<Role>) -> bool {
    own == Some(Role::Owner)
}

/// Giving someone `role` (sharing, changing or revoking a role): the owner; editors too
/// when the owner turned "editors can share" on. Nobody grants `owner` (ownership is
/// transferred), and a role given through the link alone grants nothing.
pub fn may_grant(view: &DocumentView, role: Role) -> Result<(), String> {
    if role == Role::Owner {
        return Err("a document has one owner: transfer ownership instead".into());
    }
    // The caller's own role: the link's grants nothing here (someone with an editor link
    // must not be able to share, revoke real editors, or make their own access permanent).
    match view.own {
        Some(Role::Owner) => Ok(()),
        Some(Role::Editor) if view.doc.editors_can_share => Ok(()),
        Some(Role::Editor) => Err("only the owner may share this document".into()),
        None if view.role >= Role::Viewer => Err("access through the link does not let you share".into()),
        _ => Err("viewers and commenters may not share".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Document;

    fn view(role: Role, editors_can_share: bool) -> DocumentView {
        let doc = Document {
            id: "d".into(),
            title: "t".into(),
            owner_id: "o".into(),
            created_ms: 0,
            updated_ms: 0,
            link_role: None,
            editors_can_share,
            acl_version: 1,
        };
        DocumentView { doc, role, own: Some(role) }
    }

    #[test]
    fn roles_decide() {
        assert!(may_grant(&view(Role::Owner, false), Role::Editor).is_ok());
        assert!(may_grant(&view(Role::Owner, false), Role::Owner).is_err());
        assert!(may_grant(&view(Role::Editor, false), Role::Viewer).is_err());
        assert!(may_grant(&view(Role::Editor, true), Role::Editor).is_ok());
        assert!(may_grant(&view(Role::Commenter, true), Role::Viewer).is_err());
        assert!(may_grant(&view(Role::Viewer, true), Role::Viewer).is_err());
        assert!(may_rename(Role::Editor) && !may_rename(Role::Commenter));
        assert!(may_delete(Some(Role::Owner)) && !may_delete(Some(Role::Editor)) && !may_delete(None));
        assert!(may_change_sharing(Some(Role::Owner)) && !may_change_sharing(Some(Role::Editor)));
        // Through an editor link, with "editors can share" on: still no sharing.
        let mut link = view(Role::Editor, true);
        link.own = None;
        assert!(may_grant(&link, Role::Viewer).is_err());
    }
}
