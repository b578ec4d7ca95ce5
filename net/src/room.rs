//! A document on its owner core: the sequencer's state, who is subscribed, and which
//! selections changed since presence was last sent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use tandem_engine::{ClientId, DocState};

use crate::access::AccessList;
use crate::protocol::{Encoding, Peer, Role};
use crate::session::{ConnId, SessionInfo};

/// Subscribers on one core with one encoding: one frame and one connection list serve them
/// all. The list is shared with in-flight deliveries and copied only when it changes.
#[derive(Debug)]
pub(crate) struct Group {
    pub(crate) core: u16,
    pub(crate) encoding: Encoding,
    pub(crate) conns: Arc<Vec<ConnId>>,
}

/// One document on its owner core.
#[derive(Debug)]
pub(crate) struct Room {
    pub(crate) state: DocState,
    subs: HashMap<ConnId, Arc<SessionInfo>>,
    pub(crate) groups: Vec<Group>,
    /// Sessions per client: a client joins with its first and leaves with its last.
    clients: HashMap<ClientId, u32>,
    /// Clients whose selection changed since the last presence message.
    pub(crate) dirty: Vec<ClientId>,
    pub(crate) last_presence: Option<Instant>,
    /// Ops, and their approximate bytes, since the last snapshot.
    pub(crate) since_snapshot: (u64, u64),
    /// Since when nobody has had the document open (an idle document may be evicted).
    pub(crate) idle_since: Option<Instant>,
    /// Who may do what (none when the server checks no roles: everyone may edit).
    pub(crate) access: Option<Arc<AccessList>>,
    /// When the control plane was last told the document was edited.
    pub(crate) edit_reported: Option<Instant>,
    /// The `notes` frame sent after every `opened`, encoded once per revision and encoding
    /// (binary, JSON): a join storm on a commented document encodes it once, not per open.
    pub(crate) notes_frames: [Option<(u64, crate::codec::Frame)>; 2],
}

impl Room {
    /// The `notes` frame for the document as it is now, in `encoding` (cached per revision).
    pub(crate) fn notes_frame(&mut self, doc: &str, encoding: crate::protocol::Encoding) -> crate::codec::Frame {
        let slot = &mut self.notes_frames[usize::from(encoding == crate::protocol::Encoding::Json)];
        let rev = self.state.rev();
        if let Some((at, frame)) = slot
            && *at == rev
        {
            return frame.clone();
        }
        let msg = crate::protocol::ServerMsg::Notes {
            doc: doc.to_owned(),
            rev,
            notes: crate::protocol::Json(self.state.notes().clone()),
        };
        let frame = crate::codec::encode_server(&msg, encoding);
        *slot = Some((rev, frame.clone()));
        frame
    }

    pub(crate) fn new(state: DocState, access: Option<Arc<AccessList>>) -> Self {
        Self {
            state,
            subs: HashMap::new(),
            groups: Vec::new(),
            clients: HashMap::new(),
            dirty: Vec::new(),
            last_presence: None,
            since_snapshot: (0, 0),
            idle_since: None,
            notes_frames: [None, None],
            access,
            edit_reported: None,
        }
    }

    /// What `user` may do here (`Editor` when the server checks no roles).
    pub(crate) fn role_of(&self, user: &str) -> Option<Role> {
        match &self.access {
            Some(list) => list.role_of(user),
            None => Some(Role::Editor),
        }
    }

    /// True when nobody has the document open.
    pub(crate) fn is_empty(&self) -> bool {
        self.subs.is_empty()
    }

    /// The other sessions of `client` subscribed here (a client id has one session per
    /// document: the newest connection supersedes the others).
    pub(crate) fn sessions_of(&self, client: ClientId, except: ConnId) -> Vec<Arc<SessionInfo>> {
        self.subs.values().filter(|i| i.client == client && i.conn != except).cloned().collect()
    }

    /// Every subscriber.
    pub(crate) fn subscribers(&self) -> impl Iterator<Item = &Arc<SessionInfo>> {
        self.subs.values()
    }

    pub(crate) fn is_subscribed(&self, conn: ConnId) -> bool {
        self.subs.contains_key(&conn)
    }

    /// Subscribes a session; true when its client was not here before (it joined).
    pub(crate) fn subscribe(&mut self, info: Arc<SessionInfo>) -> bool {
        let conn = info.conn;
        let client = info.client;
        let encoding = info.encoding;
        if self.subs.insert(conn, info).is_some() {
            return false;
        }
        self.idle_since = None;
        match self.groups.iter_mut().find(|g| g.core == conn.core && g.encoding == encoding) {
            Some(g) => Arc::make_mut(&mut g.conns).push(conn),
            None => self.groups.push(Group { core: conn.core, encoding, conns: Arc::new(vec![conn]) }),
        }
        let n = self.clients.entry(client).or_insert(0);
        *n += 1;
        *n == 1
    }

    /// Unsubscribes a connection; returns its session and whether its client left.
    pub(crate) fn unsubscribe(&mut self, conn: ConnId) -> Option<(Arc<SessionInfo>, bool)> {
        let info = self.subs.remove(&conn)?;
        if let Some(i) = self.groups.iter().position(|g| g.core == conn.core && g.encoding == info.encoding) {
            let g = &mut self.groups[i];
            Arc::make_mut(&mut g.conns).retain(|c| *c != conn);
            if g.conns.is_empty() {
                self.groups.swap_remove(i);
            }
        }
        let left = match self.clients.get_mut(&info.client) {
            Some(n) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                self.clients.remove(&info.client);
                true
            }
        };
        if left {
            self.state.remove_selection(info.client);
            self.dirty.retain(|c| *c != info.client);
        }
        Some((info, left))
    }

    /// Everyone here but `except`, one entry per client.
    pub(crate) fn online(&self, except: ClientId) -> Vec<Peer> {
        let mut seen: HashMap<ClientId, Peer> = HashMap::new();
        for info in self.subs.values().filter(|i| i.client != except) {
            seen.entry(info.client).or_insert_with(|| info.peer.clone());
        }
        let mut peers: Vec<Peer> = seen.into_values().collect();
        peers.sort_by_key(|p| p.client);
        peers
    }

    /// Marks a client's selection as changed.
    pub(crate) fn touch(&mut self, client: ClientId) {
        if !self.dirty.contains(&client) {
            self.dirty.push(client);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::Limits;

    fn info(core: u16, seq: u64, client: u64, encoding: Encoding) -> Arc<SessionInfo> {
        Arc::new(SessionInfo {
            conn: ConnId { core, seq },
            session: seq,
            client: ClientId(client),
            encoding,
            peer: Peer { client: ClientId(client), user: "u".into(), name: "n".into(), color: String::new() },
            connected_at: Instant::now(),
        })
    }

    #[test]
    fn groups_follow_subscriptions() {
        let mut room = Room::new(DocState::new(Limits::default()), None);
        assert!(room.subscribe(info(0, 1, 10, Encoding::Binary)));
        assert!(room.subscribe(info(0, 2, 11, Encoding::Json)));
        assert!(room.subscribe(info(1, 3, 12, Encoding::Binary)));
        // The same client on a second connection does not join twice.
        assert!(!room.subscribe(info(1, 4, 12, Encoding::Binary)));
        assert_eq!(room.groups.len(), 3);
        let shared = Arc::clone(&room.groups.iter().find(|g| g.core == 1).unwrap().conns);
        assert_eq!(shared.len(), 2);
        assert_eq!(room.unsubscribe(ConnId { core: 1, seq: 3 }).map(|(_, left)| left), Some(false));
        // In-flight lists keep their copy.
        assert_eq!(shared.len(), 2);
        assert_eq!(room.groups.iter().find(|g| g.core == 1).unwrap().conns.len(), 1);
        assert_eq!(room.unsubscribe(ConnId { core: 1, seq: 4 }).map(|(_, left)| left), Some(true));
        assert_eq!(room.groups.len(), 2);
        assert_eq!(room.online(ClientId(0)).len(), 2);
        assert_eq!(room.online(ClientId(10)).len(), 1);
        assert!(room.unsubscribe(ConnId { core: 9, seq: 9 }).is_none());
    }
}
