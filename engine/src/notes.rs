//! Notes on a document: comment threads anchored to its text, and names given to revisions
//! (sans I/O).
//!
//! A note change (a comment, a reply, an edit, a resolve, a version named, ...) is sequenced
//! like an op: [`crate::DocState::submit_note`] gives it the next revision, as a commit with
//! an empty delta and the change ([`Note`]). So the op log keeps it in order with the text
//! ops, catch-up and history replay it, and a snapshot carries the notes as of its revision.
//!
//! A thread's anchor is a range of the text, `start..end` in chars. Every op applied moves
//! it, the way presence moves a selection: text inserted exactly at either end falls outside
//! the range, text inserted inside it falls inside. The rule is a pure function of the anchor
//! and the op, so every client that applies the same ops in the server's order gets the same
//! anchors. When everything a thread was anchored to is deleted, the thread is *orphaned*: it
//! keeps its last position (an empty range) and stays orphaned.
//!
//! Ids are revisions: a thread's id is the revision that created it, a message's the revision
//! that added it. They are unique in the document and every replica computes the same ones.
//!
//! Bounded: [`MAX_MESSAGE_CHARS`] per message, [`MAX_MESSAGES`] per thread, [`MAX_THREADS`]
//! threads and [`MAX_VERSIONS`] named versions per document, and [`MAX_NOTES_BYTES`] of text
//! in all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::delta::Delta;
use crate::undo::Keystroke;

/// Most chars in one message.
pub const MAX_MESSAGE_CHARS: usize = 4_000;
/// Most chars in a version's name.
pub const MAX_VERSION_NAME_CHARS: usize = 200;
/// Most messages in one thread (the comment and its replies).
pub const MAX_MESSAGES: usize = 500;
/// Most threads (resolved ones included) per document.
pub const MAX_THREADS: usize = 5_000;
/// Most named versions per document.
pub const MAX_VERSIONS: usize = 1_000;
/// Most users mentioned in one message.
pub const MAX_MENTIONS: usize = 20;
/// Most bytes of a mentioned user's id.
pub const MAX_MENTION_BYTES: usize = 128;
/// Most bytes of text (messages, names, user ids) a document's notes hold in all.
pub const MAX_NOTES_BYTES: usize = 4 << 20;

/// A change to a document's notes, as a client asks for it. A comment's range is in the
/// document as of the revision the client names; the server moves it to now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum NoteChange {
    /// Start a thread on the text `start..end` (not empty) with its first message.
    Comment {
        /// First char of the range.
        start: usize,
        /// One past its last char.
        end: usize,
        /// The message.
        text: String,
        /// User ids mentioned in it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<String>,
    },
    /// Add a reply to a thread.
    Reply {
        /// The thread.
        thread: u64,
        /// The message.
        text: String,
        /// User ids mentioned in it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<String>,
    },
    /// Change one's own message.
    Edit {
        /// The thread.
        thread: u64,
        /// The message.
        message: u64,
        /// Its new text.
        text: String,
        /// User ids mentioned in it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        mentions: Vec<String>,
    },
    /// Delete a message (one's own; a document's owner may delete any). Deleting a thread's
    /// first message deletes the thread.
    Delete {
        /// The thread.
        thread: u64,
        /// The message.
        message: u64,
    },
    /// Mark a thread resolved.
    Resolve {
        /// The thread.
        thread: u64,
    },
    /// Open a resolved thread again.
    Reopen {
        /// The thread.
        thread: u64,
    },
    /// Name a revision (or rename it).
    NameVersion {
        /// The revision.
        rev: u64,
        /// Its name.
        name: String,
    },
    /// Take a revision's name away.
    UnnameVersion {
        /// The revision.
        rev: u64,
    },
}

impl NoteChange {
    /// What the change is, for exactly-once fingerprints: all of it but a comment's range
    /// (a request sent again after a reconnect has been moved to a newer revision).
    pub(crate) fn fingerprint(&self) -> u64 {
        use std::hash::BuildHasher;
        let unanchored = match self {
            Self::Comment { text, mentions, .. } => {
                Self::Comment { start: 0, end: 0, text: text.clone(), mentions: mentions.clone() }
            }
            other => other.clone(),
        };
        foldhash::fast::FixedState::with_seed(0x6e6f_7465)
            .hash_one(serde_json::to_string(&unanchored).unwrap_or_default())
    }

    /// Whether the change is to a comment thread (commenters may make it), not to the
    /// document's versions (editors only).
    pub fn is_comment(&self) -> bool {
        !matches!(self, Self::NameVersion { .. } | Self::UnnameVersion { .. })
    }

    /// The users the change mentions.
    pub fn mentions(&self) -> &[String] {
        match self {
            Self::Comment { mentions, .. } | Self::Reply { mentions, .. } | Self::Edit { mentions, .. } => mentions,
            _ => &[],
        }
    }
}

/// A note change as sequenced: who made it, when, and the change (a comment's range as of the
/// revision before the commit).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Note {
    /// The author's user id.
    pub user: String,
    /// The author's display name then.
    pub name: String,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
    /// The change.
    pub change: NoteChange,
}

impl Note {
    /// Bytes of text it holds.
    pub fn bytes(&self) -> usize {
        let text = match &self.change {
            NoteChange::Comment { text, .. } | NoteChange::Reply { text, .. } | NoteChange::Edit { text, .. } => {
                text.len()
            }
            NoteChange::NameVersion { name, .. } => name.len(),
            _ => 0,
        };
        text + self.user.len() + self.name.len() + self.change.mentions().iter().map(String::len).sum::<usize>() + 48
    }
}

/// Why a note change was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The thread or message does not exist (any more).
    #[error("{0}")]
    NotFound(String),
    /// Only a message's author (or the document's owner, to delete) may do that.
    #[error("{0}")]
    Forbidden(String),
    /// The change is malformed or over a limit.
    #[error("{0}")]
    Invalid(String),
}

/// One message of a thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Its id: the revision that added it.
    pub id: u64,
    /// The author's user id.
    pub user: String,
    /// The author's display name.
    pub name: String,
    /// The text.
    pub text: String,
    /// User ids mentioned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions: Vec<String>,
    /// When it was written, ms since the Unix epoch.
    pub created_ms: u64,
    /// When it was last edited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_ms: Option<u64>,
}

/// A comment thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thread {
    /// Its id: the revision that created it.
    pub id: u64,
    /// First char of the text it is anchored to.
    pub start: usize,
    /// One past the last char (equal to `start` once orphaned).
    pub end: usize,
    /// Everything it was anchored to was deleted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub orphaned: bool,
    /// Who resolved it, while it is resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_by: Option<String>,
    /// The comment, then the replies, oldest first.
    pub messages: Vec<Message>,
}

/// A named revision.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedVersion {
    /// The revision.
    pub rev: u64,
    /// Its name.
    pub name: String,
    /// Who named it (user id).
    pub user: String,
    /// Their display name.
    pub user_name: String,
    /// When, ms since the Unix epoch.
    pub time_ms: u64,
}

/// A document's notes at one revision: its threads and named versions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, from = "NotesRead")]
pub struct Notes {
    /// Threads by id (oldest first).
    #[serde(with = "as_list")]
    threads: BTreeMap<u64, Thread>,
    /// Named versions by revision.
    #[serde(with = "versions_list")]
    versions: BTreeMap<u64, NamedVersion>,
    #[serde(skip)]
    bytes: usize,
}

/// [`Notes`] as read, before its byte count is made.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NotesRead {
    #[serde(with = "as_list")]
    threads: BTreeMap<u64, Thread>,
    #[serde(with = "versions_list")]
    versions: BTreeMap<u64, NamedVersion>,
}

impl From<NotesRead> for Notes {
    fn from(r: NotesRead) -> Self {
        let mut notes = Self { threads: r.threads, versions: r.versions, bytes: 0 };
        notes.recount();
        notes
    }
}

fn message_bytes(m: &Message) -> usize {
    m.text.len() + m.user.len() + m.name.len() + m.mentions.iter().map(String::len).sum::<usize>() + 48
}

fn version_bytes(v: &NamedVersion) -> usize {
    v.name.len() + v.user.len() + v.user_name.len() + 32
}

fn check_text(text: &str, what: &str, max: usize) -> Result<(), NoteError> {
    if text.trim().is_empty() {
        return Err(NoteError::Invalid(format!("{what} is empty")));
    }
    let chars = text.chars().count();
    if chars > max {
        return Err(NoteError::Invalid(format!("{what} has {chars} chars; the limit is {max}")));
    }
    Ok(())
}

fn check_mentions(mentions: &[String]) -> Result<(), NoteError> {
    if mentions.len() > MAX_MENTIONS {
        return Err(NoteError::Invalid(format!("{} users mentioned; the limit is {MAX_MENTIONS}", mentions.len())));
    }
    if mentions.iter().any(|m| m.is_empty() || m.len() > MAX_MENTION_BYTES) {
        return Err(NoteError::Invalid(format!("a mentioned user id must be 1 to {MAX_MENTION_BYTES} bytes")));
    }
    Ok(())
}

impl Notes {
    /// No threads, no named versions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether there are neither threads nor named versions.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty() && self.versions.is_empty()
    }

    /// The threads, oldest first.
    pub fn threads(&self) -> impl ExactSizeIterator<Item = &Thread> {
        self.threads.values()
    }

    /// A thread.
    pub fn thread(&self, id: u64) -> Option<&Thread> {
        self.threads.get(&id)
    }

    /// The named versions, by revision.
    pub fn versions(&self) -> impl ExactSizeIterator<Item = &NamedVersion> {
        self.versions.values()
    }

    /// What `change` (committed as `rev`) touched: its thread, or its named version, alone
    /// (empty when it deleted them). For answering the change without copying every thread.
    pub fn touched_by(&self, change: &NoteChange, rev: u64) -> Self {
        let mut out = Self::new();
        let thread = match change {
            NoteChange::Comment { .. } => Some(rev),
            NoteChange::Reply { thread, .. }
            | NoteChange::Edit { thread, .. }
            | NoteChange::Delete { thread, .. }
            | NoteChange::Resolve { thread }
            | NoteChange::Reopen { thread } => Some(*thread),
            NoteChange::NameVersion { .. } | NoteChange::UnnameVersion { .. } => None,
        };
        if let Some(t) = thread.and_then(|id| self.threads.get(&id)) {
            out.threads.insert(t.id, t.clone());
        }
        if let NoteChange::NameVersion { rev: named, .. } | NoteChange::UnnameVersion { rev: named } = change
            && let Some(v) = self.versions.get(named)
        {
            out.versions.insert(v.rev, v.clone());
        }
        out.recount();
        out
    }

    /// Bytes of text held (what [`MAX_NOTES_BYTES`] bounds).
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    fn recount(&mut self) {
        self.bytes = self.threads.values().flat_map(|t| &t.messages).map(message_bytes).sum::<usize>()
            + self.versions.values().map(version_bytes).sum::<usize>();
    }

    /// Checks `change` by `user` against the notes, without applying it; `doc_len` is the
    /// document's length, `rev` the document's current revision, `moderator` whether the user
    /// may delete anyone's message (the document's owner).
    pub fn check(
        &self,
        change: &NoteChange,
        user: &str,
        doc_len: usize,
        rev: u64,
        moderator: bool,
    ) -> Result<(), NoteError> {
        let thread = |id: u64| self.threads.get(&id).ok_or_else(|| NoteError::NotFound(format!("no thread {id}")));
        let grows = |by: usize| {
            if self.bytes + by > MAX_NOTES_BYTES {
                Err(NoteError::Invalid(format!(
                    "the document's comments are at their limit of {MAX_NOTES_BYTES} bytes"
                )))
            } else {
                Ok(())
            }
        };
        match change {
            NoteChange::Comment { start, end, text, mentions } => {
                if start >= end || *end > doc_len {
                    return Err(NoteError::Invalid(format!(
                        "a comment needs a range of text: {start}..{end} in a document of {doc_len} chars"
                    )));
                }
                check_text(text, "the comment", MAX_MESSAGE_CHARS)?;
                check_mentions(mentions)?;
                if self.threads.len() >= MAX_THREADS {
                    return Err(NoteError::Invalid(format!("the document has {MAX_THREADS} threads, the limit")));
                }
                grows(text.len() + user.len() + 64)
            }
            NoteChange::Reply { thread: id, text, mentions } => {
                let t = thread(*id)?;
                check_text(text, "the reply", MAX_MESSAGE_CHARS)?;
                check_mentions(mentions)?;
                if t.messages.len() >= MAX_MESSAGES {
                    return Err(NoteError::Invalid(format!("thread {id} has {MAX_MESSAGES} messages, the limit")));
                }
                grows(text.len() + user.len() + 64)
            }
            NoteChange::Edit { thread: id, message, text, mentions } => {
                let m = thread(*id)?
                    .messages
                    .iter()
                    .find(|m| m.id == *message)
                    .ok_or_else(|| NoteError::NotFound(format!("no message {message} in thread {id}")))?;
                if m.user != user {
                    return Err(NoteError::Forbidden("only its author may edit a message".into()));
                }
                check_text(text, "the message", MAX_MESSAGE_CHARS)?;
                check_mentions(mentions)?;
                grows(text.len().saturating_sub(m.text.len()))
            }
            NoteChange::Delete { thread: id, message } => {
                let m = thread(*id)?
                    .messages
                    .iter()
                    .find(|m| m.id == *message)
                    .ok_or_else(|| NoteError::NotFound(format!("no message {message} in thread {id}")))?;
                if m.user != user && !moderator {
                    return Err(NoteError::Forbidden(
                        "only its author or the document's owner may delete a message".into(),
                    ));
                }
                Ok(())
            }
            NoteChange::Resolve { thread: id } => match thread(*id)?.resolved_by {
                Some(_) => Err(NoteError::Invalid(format!("thread {id} is resolved already"))),
                None => Ok(()),
            },
            NoteChange::Reopen { thread: id } => match thread(*id)?.resolved_by {
                None => Err(NoteError::Invalid(format!("thread {id} is open already"))),
                Some(_) => Ok(()),
            },
            NoteChange::NameVersion { rev: named, name } => {
                if *named == 0 || *named > rev {
                    return Err(NoteError::NotFound(format!("no revision {named} (the latest is {rev})")));
                }
                check_text(name, "the version's name", MAX_VERSION_NAME_CHARS)?;
                if self.versions.len() >= MAX_VERSIONS && !self.versions.contains_key(named) {
                    return Err(NoteError::Invalid(format!(
                        "the document has {MAX_VERSIONS} named versions, the limit"
                    )));
                }
                grows(name.len() + user.len() + 32)
            }
            NoteChange::UnnameVersion { rev: named } => match self.versions.contains_key(named) {
                true => Ok(()),
                false => Err(NoteError::NotFound(format!("revision {named} has no name"))),
            },
        }
    }

    /// Applies a checked note committed as revision `rev` (ids are revisions).
    pub fn apply(&mut self, note: &Note, rev: u64) {
        let Note { user, name, time_ms, change } = note;
        let message = |text: &String, mentions: &Vec<String>| Message {
            id: rev,
            user: user.clone(),
            name: name.clone(),
            text: text.clone(),
            mentions: mentions.clone(),
            created_ms: *time_ms,
            edited_ms: None,
        };
        match change {
            NoteChange::Comment { start, end, text, mentions } => {
                let m = message(text, mentions);
                self.bytes += message_bytes(&m);
                let t =
                    Thread { id: rev, start: *start, end: *end, orphaned: false, resolved_by: None, messages: vec![m] };
                self.threads.insert(rev, t);
            }
            NoteChange::Reply { thread, text, mentions } => {
                if let Some(t) = self.threads.get_mut(thread) {
                    let m = message(text, mentions);
                    self.bytes += message_bytes(&m);
                    t.messages.push(m);
                }
            }
            NoteChange::Edit { thread, message, text, mentions } => {
                if let Some(m) =
                    self.threads.get_mut(thread).and_then(|t| t.messages.iter_mut().find(|m| m.id == *message))
                {
                    self.bytes -= message_bytes(m);
                    m.text.clone_from(text);
                    m.mentions.clone_from(mentions);
                    m.edited_ms = Some(*time_ms);
                    self.bytes += message_bytes(m);
                }
            }
            NoteChange::Delete { thread, message } => {
                let Some(t) = self.threads.get_mut(thread) else { return };
                if t.messages.first().is_some_and(|m| m.id == *message) {
                    let bytes: usize = t.messages.iter().map(message_bytes).sum();
                    self.bytes -= bytes;
                    self.threads.remove(thread);
                } else if let Some(i) = t.messages.iter().position(|m| m.id == *message) {
                    self.bytes -= message_bytes(&t.messages.remove(i));
                }
            }
            NoteChange::Resolve { thread } => {
                if let Some(t) = self.threads.get_mut(thread) {
                    t.resolved_by = Some(user.clone());
                }
            }
            NoteChange::Reopen { thread } => {
                if let Some(t) = self.threads.get_mut(thread) {
                    t.resolved_by = None;
                }
            }
            NoteChange::NameVersion { rev: named, name: title } => {
                let v = NamedVersion {
                    rev: *named,
                    name: title.clone(),
                    user: user.clone(),
                    user_name: name.clone(),
                    time_ms: *time_ms,
                };
                self.bytes += version_bytes(&v);
                if let Some(old) = self.versions.insert(*named, v) {
                    self.bytes -= version_bytes(&old);
                }
            }
            NoteChange::UnnameVersion { rev: named } => {
                if let Some(old) = self.versions.remove(named) {
                    self.bytes -= version_bytes(&old);
                }
            }
        }
    }

    /// Brings the notes past a commit: its note applied, or every anchor moved through its op
    /// (what every replica does with every commit, in order).
    pub fn follow(&mut self, commit: &crate::Commit) {
        match &commit.note {
            Some(note) => self.apply(note, commit.rev),
            None => self.transform(&commit.delta),
        }
    }

    /// Moves every anchor through an op applied to the document.
    pub fn transform(&mut self, delta: &Delta) {
        if self.threads.is_empty() {
            return;
        }
        match Keystroke::of(delta) {
            // Typing and deleting (most ops): arithmetic per anchor.
            Some(k) => {
                for t in self.threads.values_mut() {
                    let (start, end) = transform_keystroke(t.start, t.end, t.orphaned, k);
                    t.orphaned |= start == end;
                    (t.start, t.end) = (start, end);
                }
            }
            None => {
                for t in self.threads.values_mut() {
                    let (start, end) = transform_anchor(t.start, t.end, t.orphaned, delta);
                    t.orphaned |= start == end;
                    (t.start, t.end) = (start, end);
                }
            }
        }
    }
}

/// An anchor `start..end` moved through `delta`: text inserted at `start` goes before it, at
/// `end` after it; an orphaned anchor moves like a caret that text typed at it pushes.
pub fn transform_anchor(start: usize, end: usize, orphaned: bool, delta: &Delta) -> (usize, usize) {
    let start = delta.transform_position(start, false);
    if orphaned {
        return (start, start);
    }
    let end = delta.transform_position(end, true).max(start);
    (start, end)
}

/// [`transform_anchor`] for a keystroke, by arithmetic.
fn transform_keystroke(start: usize, end: usize, orphaned: bool, k: Keystroke) -> (usize, usize) {
    let moved = |x: usize, pushed_at_x: bool| {
        if k.inserted > 0 {
            if k.start < x || (k.start == x && pushed_at_x) { x + k.inserted } else { x }
        } else if x > k.start {
            x - k.deleted.min(x - k.start)
        } else {
            x
        }
    };
    let start = moved(start, true);
    if orphaned {
        return (start, start);
    }
    (start, moved(end, false).max(start))
}

mod as_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::Thread;

    pub(super) fn serialize<S: Serializer>(v: &BTreeMap<u64, Thread>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, Thread>, D::Error> {
        Ok(Vec::<Thread>::deserialize(d)?.into_iter().map(|t| (t.id, t)).collect())
    }
}

mod versions_list {
    use std::collections::BTreeMap;

    use serde::{Deserialize, Deserializer, Serializer};

    use super::NamedVersion;

    pub(super) fn serialize<S: Serializer>(v: &BTreeMap<u64, NamedVersion>, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.values())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<u64, NamedVersion>, D::Error> {
        Ok(Vec::<NamedVersion>::deserialize(d)?.into_iter().map(|v| (v.rev, v)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Attributes;

    fn note(user: &str, change: NoteChange) -> Note {
        Note { user: user.into(), name: user.to_uppercase(), time_ms: 5, change }
    }

    fn comment(start: usize, end: usize) -> NoteChange {
        NoteChange::Comment { start, end, text: "look".into(), mentions: vec![] }
    }

    #[test]
    fn anchors_keep_to_their_text() {
        let mut n = Notes::new();
        n.apply(&note("ada", comment(4, 8)), 1);
        let ins = |at: usize, s: &str| Delta::new().retain(at, Attributes::NONE).insert(s, Attributes::NONE);
        let del = |at: usize, len: usize| Delta::new().retain(at, Attributes::NONE).delete(len);
        let at = |n: &Notes| {
            let t = n.thread(1).unwrap();
            (t.start, t.end, t.orphaned)
        };
        n.transform(&ins(4, "ab")); // at the start: before it
        assert_eq!(at(&n), (6, 10, false));
        n.transform(&ins(10, "x")); // at the end: after it
        assert_eq!(at(&n), (6, 10, false));
        n.transform(&ins(7, "yz")); // inside
        assert_eq!(at(&n), (6, 12, false));
        n.transform(&del(0, 7)); // across the start
        assert_eq!(at(&n), (0, 5, false));
        n.transform(&del(0, 5)); // all of it: orphaned, where it was
        assert_eq!(at(&n), (0, 0, true));
        n.transform(&ins(0, "again")); // stays orphaned, pushed like a caret
        assert_eq!(at(&n), (5, 5, true));
    }

    #[test]
    fn the_keystroke_path_agrees_with_the_general_one() {
        for (start, end, orphaned) in [(3, 7, false), (5, 5, true), (0, 10, false)] {
            for at in 0..12 {
                for (ins, del) in [(2, 0), (0, 1), (0, 4)] {
                    let delta = if ins > 0 {
                        Delta::new().retain(at, Attributes::NONE).insert(&"x".repeat(ins), Attributes::NONE)
                    } else {
                        Delta::new().retain(at, Attributes::NONE).delete(del)
                    };
                    let k = Keystroke::of(&delta).unwrap();
                    assert_eq!(
                        transform_keystroke(start, end, orphaned, k),
                        transform_anchor(start, end, orphaned, &delta),
                        "{start}..{end} {orphaned} through {delta:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn only_authors_edit_and_owners_delete_anything() {
        let mut n = Notes::new();
        n.apply(&note("ada", comment(0, 2)), 1);
        n.apply(&note("bob", NoteChange::Reply { thread: 1, text: "yes".into(), mentions: vec![] }), 2);
        let edit = NoteChange::Edit { thread: 1, message: 2, text: "no".into(), mentions: vec![] };
        assert!(matches!(n.check(&edit, "ada", 5, 2, true), Err(NoteError::Forbidden(_))));
        assert!(n.check(&edit, "bob", 5, 2, false).is_ok());
        let delete = NoteChange::Delete { thread: 1, message: 2 };
        assert!(matches!(n.check(&delete, "ada", 5, 2, false), Err(NoteError::Forbidden(_))));
        assert!(n.check(&delete, "ada", 5, 2, true).is_ok());
        n.apply(&note("bob", delete), 3);
        assert_eq!(n.thread(1).unwrap().messages.len(), 1);
        // The first message takes the thread with it.
        n.apply(&note("ada", NoteChange::Delete { thread: 1, message: 1 }), 4);
        assert!(n.is_empty());
        assert_eq!(n.bytes(), 0);
    }

    #[test]
    fn bad_changes_are_refused_with_reasons() {
        let mut n = Notes::new();
        assert!(matches!(n.check(&comment(2, 2), "a", 5, 1, false), Err(NoteError::Invalid(_))));
        assert!(matches!(n.check(&comment(2, 6), "a", 5, 1, false), Err(NoteError::Invalid(_))));
        let blank = NoteChange::Comment { start: 0, end: 1, text: "  ".into(), mentions: vec![] };
        assert!(matches!(n.check(&blank, "a", 5, 1, false), Err(NoteError::Invalid(_))));
        let long = NoteChange::Comment { start: 0, end: 1, text: "x".repeat(MAX_MESSAGE_CHARS + 1), mentions: vec![] };
        assert!(n.check(&long, "a", 5, 1, false).is_err());
        let reply = NoteChange::Reply { thread: 9, text: "hi".into(), mentions: vec![] };
        assert!(matches!(n.check(&reply, "a", 5, 1, false), Err(NoteError::NotFound(_))));
        let future = NoteChange::NameVersion { rev: 3, name: "v".into() };
        assert!(matches!(n.check(&future, "a", 5, 2, false), Err(NoteError::NotFound(_))));
        n.apply(&note("a", comment(0, 1)), 1);
        n.apply(&note("a", NoteChange::Resolve { thread: 1 }), 2);
        assert!(n.check(&NoteChange::Resolve { thread: 1 }, "a", 5, 2, false).is_err());
        assert!(n.check(&NoteChange::Reopen { thread: 1 }, "a", 5, 2, false).is_ok());
    }

    #[test]
    fn versions_are_named_renamed_and_unnamed() {
        let mut n = Notes::new();
        n.apply(&note("a", NoteChange::NameVersion { rev: 1, name: "Draft".into() }), 3);
        n.apply(&note("a", NoteChange::NameVersion { rev: 1, name: "Sent to legal".into() }), 4);
        assert_eq!(n.versions().map(|v| v.name.as_str()).collect::<Vec<_>>(), ["Sent to legal"]);
        let touched = n.touched_by(&NoteChange::NameVersion { rev: 1, name: "x".into() }, 4);
        assert_eq!((touched.versions().len(), touched.threads().len()), (1, 0));
        let before = n.bytes();
        n.apply(&note("a", NoteChange::UnnameVersion { rev: 1 }), 5);
        assert!(n.is_empty() && before > 0 && n.bytes() == 0);
    }

    #[test]
    fn notes_round_trip_through_json() {
        let mut n = Notes::new();
        n.apply(&note("ada", comment(1, 3)), 1);
        n.apply(&note("bob", NoteChange::NameVersion { rev: 1, name: "v1".into() }), 2);
        let json = serde_json::to_string(&n).unwrap();
        let back: Notes = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
        let change: NoteChange = serde_json::from_str(r#"{"action":"reply","thread":1,"text":"hi"}"#).unwrap();
        assert_eq!(change, NoteChange::Reply { thread: 1, text: "hi".into(), mentions: vec![] });
        assert!(serde_json::from_str::<NoteChange>(r#"{"action":"reply","thread":1,"text":"hi","x":1}"#).is_err());
    }
}
