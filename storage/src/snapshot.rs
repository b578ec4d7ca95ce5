//! Snapshots: a document's content at a revision, with the exactly-once records of its
//! clients, as stored in the blob store.
//!
//! ```text
//!   0  8  magic "TNDMSNAP"
//!   8  1  format version (2; version 1, without notes, is still read)
//!   9  3  zero
//!  12  4  crc32c of everything after byte 16
//!  16  8  revision
//!  24  8  time (ms since the Unix epoch)
//!  32  4  client records C
//!  36  2  doc id length D
//!  38  2  zero
//!  40  D  doc id, zero-padded to a multiple of 8
//!  ..  C x 24  client records: client u64, last client_seq u64, its revision u64
//!  ..  4  notes length N (version 2)
//!  ..  4  zero
//!  ..  N  the notes (comment threads, named versions) as JSON, zero-padded to a multiple of 8
//!  ..  the content's rkyv archive (a document delta: inserts only)
//! ```

use tandem_engine::{ClientId, Delta, DocState, Document, Limits, Notes};

use crate::error::StorageError;
use crate::format::align8;

const MAGIC: [u8; 8] = *b"TNDMSNAP";
const VERSION: u8 = 2;
const HEADER: usize = 40;

/// A client's last applied op, kept so a resubmission after a restart is still recognized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClientMark {
    /// The client.
    pub client: ClientId,
    /// Its last applied `client_seq`.
    pub seq: u64,
    /// The revision that op made.
    pub rev: u64,
}

/// A document at a revision.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// The revision.
    pub rev: u64,
    /// When it was taken, ms since the Unix epoch.
    pub time_ms: u64,
    /// The content, as a document delta.
    pub content: Delta,
    /// Exactly-once records, oldest activity first.
    pub clients: Vec<ClientMark>,
    /// The comment threads (anchored at `rev`) and named versions.
    pub notes: Notes,
}

impl Snapshot {
    /// The snapshot of a sequencer's state.
    pub fn of(state: &DocState, time_ms: u64) -> Self {
        Self {
            rev: state.rev(),
            time_ms,
            content: state.document().to_delta(),
            clients: state.client_records().map(|(client, seq, rev)| ClientMark { client, seq, rev }).collect(),
            notes: state.notes().clone(),
        }
    }

    /// A sequencer restored from this snapshot (no history in memory).
    pub fn restore(&self, limits: Limits) -> Result<DocState, StorageError> {
        let doc = Document::from_delta(&self.content)
            .map_err(|e| StorageError::Invalid(format!("snapshot at revision {}: {e}", self.rev)))?;
        let clients = self.clients.iter().map(|m| (m.client, m.seq, m.rev));
        Ok(DocState::restore_with_clients(self.rev, doc, clients, limits).with_notes(self.notes.clone()))
    }

    /// The snapshot's bytes, for `doc`.
    pub fn encode(&self, doc: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER + align8(doc.len()) + 24 * self.clients.len() + 64);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.extend_from_slice(&[0; 7]);
        out.extend_from_slice(&self.rev.to_le_bytes());
        out.extend_from_slice(&self.time_ms.to_le_bytes());
        out.extend_from_slice(&(self.clients.len() as u32).to_le_bytes());
        out.extend_from_slice(&(doc.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0; 2]);
        out.extend_from_slice(doc.as_bytes());
        out.resize(align8(out.len()), 0);
        for m in &self.clients {
            out.extend_from_slice(&m.client.0.to_le_bytes());
            out.extend_from_slice(&m.seq.to_le_bytes());
            out.extend_from_slice(&m.rev.to_le_bytes());
        }
        let notes =
            if self.notes.is_empty() { Vec::new() } else { serde_json::to_vec(&self.notes).expect("notes serialize") };
        out.extend_from_slice(&(notes.len() as u32).to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&notes);
        out.resize(align8(out.len()), 0);
        out.extend_from_slice(&self.content.to_archive());
        let crc = crc32c::crc32c(&out[16..]);
        out[12..16].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Reads a snapshot, checking it belongs to `doc`.
    pub fn decode(bytes: &[u8], doc: &str, key: &str) -> Result<Self, StorageError> {
        let bad = |reason: String| StorageError::BadBlob { key: key.to_owned(), reason };
        if bytes.len() < HEADER || bytes[0..8] != MAGIC {
            return Err(bad("not a Tandem snapshot".into()));
        }
        let version = bytes[8];
        if version != VERSION && version != 1 {
            return Err(bad(format!("snapshot format version {} (this build reads {VERSION})", bytes[8])));
        }
        if bytes[9..12] != [0; 3] {
            return Err(bad("reserved header bytes are not zero".into()));
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
        let stored = u32::from_le_bytes(bytes[12..16].try_into().expect("4 bytes"));
        let computed = crc32c::crc32c(&bytes[16..]);
        if stored != computed {
            return Err(bad(format!("checksum mismatch: stored {stored:08x}, computed {computed:08x}")));
        }
        let rev = u64_at(16);
        let time_ms = u64_at(24);
        let n = u32::from_le_bytes(bytes[32..36].try_into().expect("4 bytes")) as usize;
        let doc_len = usize::from(u16::from_le_bytes([bytes[36], bytes[37]]));
        let clients_at = align8(HEADER + doc_len);
        let content_at = n.checked_mul(24).and_then(|c| c.checked_add(clients_at)).filter(|&e| e <= bytes.len());
        let Some(mut content_at) = content_at else { return Err(bad("truncated".into())) };
        if &bytes[HEADER..HEADER + doc_len] != doc.as_bytes() {
            return Err(bad(format!("snapshot is of another document, not {doc:?}")));
        }
        let clients = (0..n)
            .map(|i| {
                let at = clients_at + 24 * i;
                ClientMark { client: ClientId(u64_at(at)), seq: u64_at(at + 8), rev: u64_at(at + 16) }
            })
            .collect();
        let mut notes = Notes::new();
        if version >= 2 {
            if bytes.len() < content_at + 8 {
                return Err(bad("truncated".into()));
            }
            let len = u32::from_le_bytes(bytes[content_at..content_at + 4].try_into().expect("4 bytes")) as usize;
            let at = content_at + 8;
            if bytes[content_at + 4..at] != [0; 4] || bytes.len() < at + len {
                return Err(bad("bad notes length".into()));
            }
            if len > 0 {
                notes = serde_json::from_slice(&bytes[at..at + len]).map_err(|e| bad(format!("notes: {e}")))?;
            }
            content_at = align8(at + len);
            if bytes.len() < content_at {
                return Err(bad("truncated".into()));
            }
        }
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len() - content_at);
        aligned.extend_from_slice(&bytes[content_at..]);
        let content = Delta::from_archive(&aligned).map_err(|e| bad(format!("content: {e}")))?;
        if !content.is_document() {
            return Err(bad("content is not a document delta".into()));
        }
        Ok(Self { rev, time_ms, content, clients, notes })
    }
}

#[cfg(test)]
mod tests {
    use tandem_engine::Attributes;

    use super::*;

    #[test]
    fn snapshots_round_trip_and_check_their_document() {
        let s = Snapshot {
            rev: 12,
            time_ms: 99,
            content: Delta::new().insert("hi ", Attributes::NONE).insert("𝒳\n", Attributes::NONE),
            clients: vec![ClientMark { client: ClientId(3), seq: 4, rev: 11 }],
            notes: Notes::new(),
        };
        let b = s.encode("doc-1");
        assert_eq!(Snapshot::decode(&b, "doc-1", "k").unwrap(), s);
        assert!(Snapshot::decode(&b, "doc-2", "k").is_err());
        for i in 0..b.len() {
            let mut bad = b.clone();
            bad[i] ^= 4;
            assert!(Snapshot::decode(&bad, "doc-1", "k").is_err(), "flip at {i}");
        }
        assert!(Snapshot::decode(&b[..b.len() / 2], "doc-1", "k").is_err());
    }

    #[test]
    fn snapshots_keep_notes_and_version_1_is_still_read() {
        let mut state = DocState::new(Limits::default());
        state.submit_within(ClientId(1), 0, 1, Delta::new().insert("hello\n", Attributes::NONE), u64::MAX).unwrap();
        let comment = tandem_engine::NoteChange::Comment { start: 0, end: 5, text: "hi".into(), mentions: vec![] };
        state.submit_note(ClientId(1), "u", "U", 1, 2, comment, false, u64::MAX, 9).unwrap();
        let s = Snapshot::of(&state, 99);
        assert_eq!(s.notes.threads().len(), 1);
        let back = Snapshot::decode(&s.encode("d"), "d", "k").unwrap();
        assert_eq!(back, s);
        assert_eq!(back.restore(Limits::default()).unwrap().notes(), state.notes());
        // Version 1: no notes section.
        let mut v1 = Snapshot { notes: Notes::new(), ..s }.encode("d");
        let notes_at = align8(HEADER + 1) + 24 * back.clients.len();
        v1.drain(notes_at..notes_at + 8);
        v1[8] = 1;
        let crc = crc32c::crc32c(&v1[16..]);
        v1[12..16].copy_from_slice(&crc.to_le_bytes());
        let old = Snapshot::decode(&v1, "d", "k").unwrap();
        assert!(old.notes.is_empty());
        assert_eq!(old.content, back.content);
    }
}
