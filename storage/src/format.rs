//! The embedded op log's on-disk format, sans I/O: segment headers and records.
//!
//! `docs/oplog-format.md` is the specification; this module is its implementation. All
//! integers are little-endian. A segment is a fixed-size, pre-zeroed file: a 32-byte header,
//! then records, each starting at a multiple of 8, then zeros.
//!
//! ```text
//! segment header (32 bytes)
//!   0  8  magic "TNDMLOG\0"
//!   8  1  format version (1)
//!   9  3  zero
//!  12  4  crc32c of bytes 0..12 and 16..32
//!  16  8  segment number
//!  24  4  segment size in bytes
//!  28  4  zero
//!
//! record (8-byte aligned; padded with zeros to the next multiple of 8)
//!   0  4  body length L (> 0; a zero here is the end of the segment's records)
//!   4  4  crc32c of the body
//!   8  L  body:
//!          0  1  kind (1 op, 2 snapshot, 3 history floor, 4 snapshot dropped, 5 note)
//!          1  1  zero
//!          2  2  doc id length D (1..=256)
//!          4  4  zero
//!          8  8  batch start: the segment offset of the first record of this record's write
//!  16  8  revision
//!         24  D  doc id (UTF-8)
//!             .. zero padding to a multiple of 8
//!             ..  payload (kind-specific, below)
//! ```
//!
//! Payloads: an op is `author u64, client_seq u64, time_ms u64` then the delta's rkyv archive;
//! a note (a change to the document's comments or named versions, sequenced like an op) is
//! the same three fields then the note's JSON;
//! a snapshot is `time_ms u64, key length u32, zero u32` then the blob key (UTF-8); a history
//! floor is `time_ms u64`.

use std::sync::Arc;

use tandem_engine::{ClientId, Commit, Delta, Note};

use crate::error::StorageError;

/// The segment header's magic bytes.
pub const SEGMENT_MAGIC: [u8; 8] = *b"TNDMLOG\0";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u8 = 1;
/// Bytes in a segment header.
pub const SEGMENT_HEADER_BYTES: usize = 32;
/// Bytes before a record's body (length and checksum).
pub const RECORD_PREFIX_BYTES: usize = 8;
/// Bytes of a body before the doc id.
const BODY_FIXED_BYTES: usize = 24;
/// Most bytes in a document id.
pub const MAX_DOC_ID_BYTES: usize = 256;

/// Rounds `n` up to a multiple of 8.
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// A committed op.
    Op = 1,
    /// A pointer to a snapshot in the blob store.
    Snapshot = 2,
    /// History before this revision was dropped.
    Floor = 3,
    /// An earlier snapshot was superseded and its blob deleted.
    SnapshotDropped = 4,
    /// A committed note (a revision with no text change).
    Note = 5,
}

impl Kind {
    /// Whether the record is a revision (an op or a note).
    pub fn is_revision(self) -> bool {
        matches!(self, Self::Op | Self::Note)
    }
}

/// A decoding failure, with what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// Too few bytes for what the header says.
    #[error("truncated: need {need} bytes, have {have}")]
    Truncated {
        /// Bytes needed.
        need: usize,
        /// Bytes there.
        have: usize,
    },
    /// The checksum does not match.
    #[error("checksum mismatch: stored {stored:08x}, computed {computed:08x}")]
    Checksum {
        /// The checksum stored.
        stored: u32,
        /// The checksum of the bytes.
        computed: u32,
    },
    /// A field has a value the format does not allow.
    #[error("{0}")]
    Invalid(String),
}

/// A segment header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentHeader {
    /// The segment's number (its file name).
    pub number: u64,
    /// The segment's size in bytes.
    pub size: u32,
}

impl SegmentHeader {
    /// The header's bytes.
    pub fn encode(&self) -> [u8; SEGMENT_HEADER_BYTES] {
        let mut b = [0u8; SEGMENT_HEADER_BYTES];
        b[0..8].copy_from_slice(&SEGMENT_MAGIC);
        b[8] = FORMAT_VERSION;
        b[16..24].copy_from_slice(&self.number.to_le_bytes());
        b[24..28].copy_from_slice(&self.size.to_le_bytes());
        let crc = header_crc(&b);
        b[12..16].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Reads and checks a header.
    pub fn decode(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < SEGMENT_HEADER_BYTES {
            return Err(FormatError::Truncated { need: SEGMENT_HEADER_BYTES, have: b.len() });
        }
        if b[0..8] != SEGMENT_MAGIC {
            return Err(FormatError::Invalid("not a Tandem log segment (bad magic)".into()));
        }
        let stored = u32_at(b, 12);
        let computed = header_crc(b);
        if stored != computed {
            return Err(FormatError::Checksum { stored, computed });
        }
        if b[8] != FORMAT_VERSION {
            return Err(FormatError::Invalid(format!(
                "segment format version {} (this build reads version {FORMAT_VERSION})",
                b[8]
            )));
        }
        let size = u32_at(b, 24);
        if (size as usize) < SEGMENT_HEADER_BYTES + 64 || !size.is_multiple_of(8) {
            return Err(FormatError::Invalid(format!("segment size {size} is not valid")));
        }
        Ok(Self { number: u64_at(b, 16), size })
    }
}

fn header_crc(b: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&b[0..12]), &b[16..32])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// An op as the log holds it: the document, when, and the commit.
#[derive(Clone, Debug, PartialEq)]
pub struct LogOp {
    /// The document.
    pub doc: Arc<str>,
    /// Wall-clock time of the commit, milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// The commit (revision, author, client sequence number, delta).
    pub commit: Arc<Commit>,
}

impl LogOp {
    /// An op of `doc`.
    pub fn new(doc: impl Into<Arc<str>>, time_ms: u64, commit: Commit) -> Self {
        Self { doc: doc.into(), time_ms, commit: Arc::new(commit) }
    }

    /// The revision it made.
    pub fn rev(&self) -> u64 {
        self.commit.rev
    }

    /// An op from a database row's cells (the ScyllaDB and PostgreSQL backends): the delta as
    /// its rkyv archive, the note (if any) as JSON; an empty or missing note is an op.
    pub fn from_row(
        doc: &Arc<str>,
        rev: u64,
        (author, client_seq, time_ms): (ClientId, u64, u64),
        delta: &[u8],
        note: Option<&str>,
    ) -> Result<Self, StorageError> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(delta.len());
        aligned.extend_from_slice(delta);
        let delta = Delta::from_archive(&aligned)
            .map_err(|e| StorageError::Invalid(format!("{doc:?} revision {rev}: op delta: {e}")))?;
        let note = match note {
            None | Some("") => None,
            Some(json) => Some(Arc::new(
                serde_json::from_str(json)
                    .map_err(|e| StorageError::Invalid(format!("{doc:?} revision {rev}: note: {e}")))?,
            )),
        };
        Ok(Self {
            doc: Arc::clone(doc),
            time_ms,
            commit: Arc::new(Commit { note, ..Commit::op(rev, author, client_seq, delta) }),
        })
    }

    /// The note as a database row stores it: JSON, or empty for an op.
    pub fn note_json(&self) -> Result<String, StorageError> {
        match &self.commit.note {
            Some(note) => serde_json::to_string(&**note).map_err(|e| StorageError::Invalid(e.to_string())),
            None => Ok(String::new()),
        }
    }
}

/// A decoded record.
#[derive(Clone, Debug, PartialEq)]
pub enum Record {
    /// A committed op.
    Op(LogOp),
    /// A snapshot of `doc` at `rev` is in the blob store under `key`.
    Snapshot {
        /// The document.
        doc: Arc<str>,
        /// Its revision.
        rev: u64,
        /// When it was taken, ms since the epoch.
        time_ms: u64,
        /// The blob key.
        key: String,
    },
    /// The history of `doc` before `rev` was dropped.
    Floor {
        /// The document.
        doc: Arc<str>,
        /// The first revision kept.
        rev: u64,
        /// When, ms since the epoch.
        time_ms: u64,
    },
    /// The snapshot of `doc` at `rev` is no longer kept (newer ones supersede it); its blob
    /// is deleted once this record is durable.
    SnapshotDropped {
        /// The document.
        doc: Arc<str>,
        /// The snapshot's revision.
        rev: u64,
        /// When, ms since the epoch.
        time_ms: u64,
    },
}

impl Record {
    /// The record's document.
    pub fn doc(&self) -> &Arc<str> {
        match self {
            Self::Op(op) => &op.doc,
            Self::Snapshot { doc, .. } | Self::Floor { doc, .. } | Self::SnapshotDropped { doc, .. } => doc,
        }
    }

    /// The record's revision.
    pub fn rev(&self) -> u64 {
        match self {
            Self::Op(op) => op.rev(),
            Self::Snapshot { rev, .. } | Self::Floor { rev, .. } | Self::SnapshotDropped { rev, .. } => *rev,
        }
    }

    /// The record's time, ms since the epoch.
    pub fn time_ms(&self) -> u64 {
        match self {
            Self::Op(op) => op.time_ms,
            Self::Snapshot { time_ms, .. } | Self::Floor { time_ms, .. } | Self::SnapshotDropped { time_ms, .. } => {
                *time_ms
            }
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Op(op) if op.commit.note.is_some() => Kind::Note,
            Self::Op(_) => Kind::Op,
            Self::Snapshot { .. } => Kind::Snapshot,
            Self::Floor { .. } => Kind::Floor,
            Self::SnapshotDropped { .. } => Kind::SnapshotDropped,
        }
    }

    /// Appends the record, padded to a multiple of 8, to `out`; `batch_start` is the segment
    /// offset where the record's write batch starts. Returns the bytes appended.
    pub fn encode_into(&self, batch_start: u64, out: &mut Vec<u8>) -> Result<usize, FormatError> {
        let doc = self.doc().as_bytes();
        if doc.is_empty() || doc.len() > MAX_DOC_ID_BYTES {
            return Err(FormatError::Invalid(format!("document id of {} bytes", doc.len())));
        }
        let start = out.len();
        out.extend_from_slice(&[0u8; RECORD_PREFIX_BYTES]);
        let body = out.len();
        out.push(self.kind() as u8);
        out.push(0);
        out.extend_from_slice(&(doc.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0u8; 4]);
        out.extend_from_slice(&batch_start.to_le_bytes());
        out.extend_from_slice(&self.rev().to_le_bytes());
        out.extend_from_slice(doc);
        pad8(out, start);
        match self {
            Self::Op(op) => {
                out.extend_from_slice(&op.commit.author.0.to_le_bytes());
                out.extend_from_slice(&op.commit.client_seq.to_le_bytes());
                out.extend_from_slice(&op.time_ms.to_le_bytes());
                match &op.commit.note {
                    Some(note) => {
                        serde_json::to_writer(&mut *out, &**note).map_err(|e| FormatError::Invalid(e.to_string()))?
                    }
                    None => out.extend_from_slice(&op.commit.delta.to_archive()),
                }
            }
            Self::Snapshot { time_ms, key, .. } => {
                out.extend_from_slice(&time_ms.to_le_bytes());
                out.extend_from_slice(&(key.len() as u32).to_le_bytes());
                out.extend_from_slice(&[0u8; 4]);
                out.extend_from_slice(key.as_bytes());
            }
            Self::Floor { time_ms, .. } | Self::SnapshotDropped { time_ms, .. } => {
                out.extend_from_slice(&time_ms.to_le_bytes());
            }
        }
        let len = out.len() - body;
        let len32 = u32::try_from(len).map_err(|_| FormatError::Invalid(format!("record of {len} bytes")))?;
        let crc = crc32c::crc32c(&out[body..]);
        out[start..start + 4].copy_from_slice(&len32.to_le_bytes());
        out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        pad8(out, start);
        Ok(out.len() - start)
    }
}

fn pad8(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    out.resize(start + align8(len), 0);
}

/// The fixed part of a record, read before its body is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordPrefix {
    /// Body length (0: end of records).
    pub len: u32,
    /// The body's stored checksum.
    pub crc: u32,
}

impl RecordPrefix {
    /// Reads the 8-byte prefix at the start of `b`.
    pub fn read(b: &[u8]) -> Result<Self, FormatError> {
        if b.len() < RECORD_PREFIX_BYTES {
            return Err(FormatError::Truncated { need: RECORD_PREFIX_BYTES, have: b.len() });
        }
        Ok(Self { len: u32_at(b, 0), crc: u32_at(b, 4) })
    }

    /// Bytes the whole record takes, padding included.
    pub fn total(&self) -> usize {
        align8(RECORD_PREFIX_BYTES + self.len as usize)
    }
}

/// A record decoded from bytes, with where its write batch began.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// The record.
    pub record: Record,
    /// The segment offset of its batch's first record.
    pub batch_start: u64,
    /// Bytes the record takes, padding included.
    pub total: usize,
}

/// Decodes the record at the start of `b` (which may hold more after it): checks the length,
/// the checksum and every field. Never panics, whatever the bytes.
pub fn decode_record(b: &[u8]) -> Result<Decoded, FormatError> {
    let (h, payload) = parse(b)?;
    let doc: Arc<str> = h.doc.into();
    let (rev, time_ms) = (h.rev, h.time_ms);
    let record = match h.kind {
        Kind::Op => {
            let author = ClientId(u64_at(payload, 0));
            let client_seq = u64_at(payload, 8);
            // The archive must be aligned to be read in place: copy it into an aligned buffer.
            let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(payload.len() - 24);
            aligned.extend_from_slice(&payload[24..]);
            let delta = Delta::from_archive(&aligned).map_err(|e| FormatError::Invalid(format!("op delta: {e}")))?;
            Record::Op(LogOp { doc, time_ms, commit: Arc::new(Commit::op(rev, author, client_seq, delta)) })
        }
        Kind::Note => {
            let author = ClientId(u64_at(payload, 0));
            let client_seq = u64_at(payload, 8);
            let note: Note =
                serde_json::from_slice(&payload[24..]).map_err(|e| FormatError::Invalid(format!("note: {e}")))?;
            let commit = Commit { note: Some(Arc::new(note)), ..Commit::op(rev, author, client_seq, Delta::new()) };
            Record::Op(LogOp { doc, time_ms, commit: Arc::new(commit) })
        }
        Kind::Snapshot => Record::Snapshot { doc, rev, time_ms, key: h.key.to_owned() },
        Kind::Floor => Record::Floor { doc, rev, time_ms },
        Kind::SnapshotDropped => Record::SnapshotDropped { doc, rev, time_ms },
    };
    Ok(Decoded { record, batch_start: h.batch_start, total: h.total })
}

/// What recovery needs of a record, read without decoding the op's delta (the checksum
/// vouches for its bytes; the delta is validated when the op is read).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header<'a> {
    /// The kind.
    pub kind: Kind,
    /// The document.
    pub doc: &'a str,
    /// The revision.
    pub rev: u64,
    /// The time, ms since the epoch.
    pub time_ms: u64,
    /// Where its write batch began.
    pub batch_start: u64,
    /// The snapshot's blob key (snapshot records).
    pub key: &'a str,
    /// Bytes the record takes, padding included.
    pub total: usize,
}

/// Checks the length and checksum of the record at the start of `b` and reads its header
/// fields; the op payload's delta is not decoded.
pub fn decode_header(b: &[u8]) -> Result<Header<'_>, FormatError> {
    parse(b).map(|(h, _)| h)
}

/// Checks the length, the checksum and every field but an op's delta; returns the header and
/// the payload.
fn parse(b: &[u8]) -> Result<(Header<'_>, &[u8]), FormatError> {
    let invalid = |m: String| FormatError::Invalid(m);
    let prefix = RecordPrefix::read(b)?;
    if prefix.len == 0 {
        return Err(invalid("zero length (end of records)".into()));
    }
    let end = RECORD_PREFIX_BYTES + prefix.len as usize;
    if b.len() < end {
        return Err(FormatError::Truncated { need: end, have: b.len() });
    }
    let body = &b[RECORD_PREFIX_BYTES..end];
    let computed = crc32c::crc32c(body);
    if computed != prefix.crc {
        return Err(FormatError::Checksum { stored: prefix.crc, computed });
    }
    if body.len() < BODY_FIXED_BYTES {
        return Err(FormatError::Truncated { need: BODY_FIXED_BYTES, have: body.len() });
    }
    let doc_len = usize::from(u16::from_le_bytes([body[2], body[3]]));
    if body[1] != 0 || body[4..8] != [0; 4] {
        return Err(invalid("reserved bytes are not zero".into()));
    }
    if doc_len == 0 || doc_len > MAX_DOC_ID_BYTES {
        return Err(invalid(format!("document id of {doc_len} bytes")));
    }
    let payload_at = align8(RECORD_PREFIX_BYTES + BODY_FIXED_BYTES + doc_len) - RECORD_PREFIX_BYTES;
    if body.len() < payload_at {
        return Err(FormatError::Truncated { need: payload_at, have: body.len() });
    }
    let doc = std::str::from_utf8(&body[BODY_FIXED_BYTES..BODY_FIXED_BYTES + doc_len])
        .map_err(|_| invalid("document id is not UTF-8".into()))?;
    let rev = u64_at(body, 16);
    let payload = &body[payload_at..];
    let (kind, time_ms, key) = match body[0] {
        1 | 5 if payload.len() < 24 => return Err(FormatError::Truncated { need: payload_at + 24, have: body.len() }),
        1 | 5 if rev == 0 => return Err(invalid("op at revision 0".into())),
        1 => (Kind::Op, u64_at(payload, 16), ""),
        5 => (Kind::Note, u64_at(payload, 16), ""),
        2 if payload.len() < 16 => return Err(FormatError::Truncated { need: payload_at + 16, have: body.len() }),
        2 => {
            let key_len = u32_at(payload, 8) as usize;
            if u32_at(payload, 12) != 0 || payload.len() != 16 + key_len {
                return Err(invalid("snapshot record's key length does not match".into()));
            }
            let key = std::str::from_utf8(&payload[16..]).map_err(|_| invalid("snapshot key is not UTF-8".into()))?;
            (Kind::Snapshot, u64_at(payload, 0), key)
        }
        3 if payload.len() != 8 => return Err(invalid("history floor record of the wrong size".into())),
        3 => (Kind::Floor, u64_at(payload, 0), ""),
        4 if payload.len() != 8 => return Err(invalid("snapshot-dropped record of the wrong size".into())),
        4 => (Kind::SnapshotDropped, u64_at(payload, 0), ""),
        k => return Err(invalid(format!("unknown record kind {k}"))),
    };
    let header = Header { kind, doc, rev, time_ms, batch_start: u64_at(body, 8), key, total: prefix.total() };
    Ok((header, payload))
}

#[cfg(test)]
mod tests {
    use tandem_engine::Attributes;

    use super::*;

    fn op(doc: &str, rev: u64, text: &str) -> Record {
        let delta = Delta::new().retain(1, Attributes::NONE).insert(text, Attributes::NONE);
        Record::Op(LogOp::new(doc, 1_700_000_000_000 + rev, Commit::op(rev, ClientId(7), rev, delta)))
    }

    #[test]
    fn records_round_trip_and_are_aligned() {
        let records = [
            op("d", 1, "a"),
            op("a document with a long id ✓", 99, "𝒳 astral"),
            Record::Snapshot { doc: "d".into(), rev: 5, time_ms: 9, key: "snapshots/64/5.snap".into() },
            Record::Floor { doc: "d".into(), rev: 3, time_ms: 10 },
            Record::SnapshotDropped { doc: "d".into(), rev: 2, time_ms: 11 },
            Record::Op(LogOp::new(
                "d",
                12,
                Commit {
                    note: Some(Arc::new(Note {
                        user: "u1".into(),
                        name: "Ada ✓".into(),
                        time_ms: 12,
                        change: tandem_engine::NoteChange::Comment {
                            start: 0,
                            end: 1,
                            text: "a \"quoted\" note".into(),
                            mentions: vec!["u2".into()],
                        },
                    })),
                    ..Commit::op(2, ClientId(3), 4, Delta::new())
                },
            )),
        ];
        let mut buf = Vec::new();
        for r in &records {
            let n = r.encode_into(32, &mut buf).unwrap();
            assert_eq!(n % 8, 0);
            assert_eq!(buf.len() % 8, 0);
        }
        let mut at = 0;
        for r in &records {
            let d = decode_record(&buf[at..]).unwrap();
            assert_eq!(&d.record, r);
            assert_eq!(d.batch_start, 32);
            at += d.total;
        }
        assert_eq!(at, buf.len());
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let mut buf = Vec::new();
        let n = op("doc", 3, "hello").encode_into(0, &mut buf).unwrap();
        // Bytes past the body are padding, which the checksum does not cover.
        let body_end = RECORD_PREFIX_BYTES + RecordPrefix::read(&buf).unwrap().len as usize;
        for i in 0..body_end {
            let mut bad = buf.clone();
            bad[i] ^= 0x10;
            assert!(decode_record(&bad).is_err(), "flip at byte {i} of {n} was not detected");
        }
    }

    #[test]
    fn truncation_and_zeros_are_errors_not_panics() {
        let mut buf = Vec::new();
        op("doc", 3, "hello").encode_into(0, &mut buf).unwrap();
        for cut in 0..buf.len() - 1 {
            let _ = decode_record(&buf[..cut]);
        }
        assert!(decode_record(&[0u8; 64]).is_err());
        assert!(matches!(decode_record(&buf[..20]), Err(FormatError::Truncated { .. })));
    }

    #[test]
    fn segment_headers_are_checked() {
        let h = SegmentHeader { number: 42, size: 1 << 20 };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b).unwrap(), h);
        assert!(matches!(SegmentHeader::decode(&b[..31]), Err(FormatError::Truncated { .. })));
        let mut bad = b;
        bad[17] ^= 1;
        assert!(matches!(SegmentHeader::decode(&bad), Err(FormatError::Checksum { .. })));
        let mut future = SegmentHeader { number: 1, size: 4096 }.encode();
        future[8] = 2;
        let crc = header_crc(&future);
        future[12..16].copy_from_slice(&crc.to_le_bytes());
        let e = SegmentHeader::decode(&future).unwrap_err().to_string();
        assert!(e.contains("version 2"), "{e}");
    }
}
