//! Snapshots: a document's content at a revision, with the exactly-once records of its
//! clients, as stored in the blob store.
//!
//! ```text
//!   0  8  magic "TNDMSNAP"
//!   8  1  format version (1)
//!   9  3  zero
//!  12  4  crc32c of everything after byte 16
//!  16  8  revision
//!  24  8  time (ms since the Unix epoch)
//!  32  4  client records C
//!  36  2  doc id length D
//!  38  2  zero
//!  40  D  doc id, zero-padded to a multiple of 8
//!  ..  C x 24  client records: client u64, last client_seq u64, its revision u64
//!  ..  the content's rkyv archive (a document delta: inserts only)
//! ```

use tandem_engine::{ClientId, Delta, DocState, Document, Limits};

use crate::error::StorageError;
use crate::format::align8;

const MAGIC: [u8; 8] = *b"TNDMSNAP";
const VERSION: u8 = 1;
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
}

impl Snapshot {
    /// The snapshot of a sequencer's state.
    pub fn of(state: &DocState, time_ms: u64) -> Self {
        Self {
            rev: state.rev(),
            time_ms,
            content: state.document().to_delta(),
            clients: state.client_records().map(|(client, seq, rev)| ClientMark { client, seq, rev }).collect(),
        }
    }

    /// A sequencer restored from this snapshot (no history in memory).
    pub fn restore(&self, limits: Limits) -> Result<DocState, StorageError> {
        let doc = Document::from_delta(&self.content)
            .map_err(|e| StorageError::Invalid(format!("snapshot at revision {}: {e}", self.rev)))?;
        let clients = self.clients.iter().map(|m| (m.client, m.seq, m.rev));
        Ok(DocState::restore_with_clients(self.rev, doc, clients, limits))
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
        if bytes[8] != VERSION {
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
        let Some(content_at) = content_at else { return Err(bad("truncated".into())) };
        if &bytes[HEADER..HEADER + doc_len] != doc.as_bytes() {
            return Err(bad(format!("snapshot is of another document, not {doc:?}")));
        }
        let clients = (0..n)
            .map(|i| {
                let at = clients_at + 24 * i;
                ClientMark { client: ClientId(u64_at(at)), seq: u64_at(at + 8), rev: u64_at(at + 16) }
            })
            .collect();
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len() - content_at);
        aligned.extend_from_slice(&bytes[content_at..]);
        let content = Delta::from_archive(&aligned).map_err(|e| bad(format!("content: {e}")))?;
        if !content.is_document() {
            return Err(bad("content is not a document delta".into()));
        }
        Ok(Self { rev, time_ms, content, clients })
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
}
