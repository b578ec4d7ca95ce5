//! Encoding and decoding protocol messages in both subprotocols.
//!
//! Server messages are encoded straight into complete WebSocket frames ([`Frame`]): server
//! frames are unmasked, so the same bytes serve every subscriber, and a broadcast is encoded
//! once per subprotocol. Client messages are decoded from a frame's payload: JSON with serde,
//! binary by validating the rkyv archive in place (in an aligned buffer) and converting what
//! the archive format cannot check itself (deltas, ids, lengths).

use std::cell::RefCell;

use bytes::Bytes;
use rkyv::rancor::BoxedError;
use rkyv::util::AlignedVec;
use tandem_engine::{ClientId, DecodeLimits, Delta};
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Data, OpCode};

use crate::protocol::{
    ArchivedClientMsg, ArchivedOpRecord, ArchivedPeer, ArchivedServerMsg, ClientMsg, Encoding, ErrorCode, Json,
    OpRecord, Peer, PeerSelection, Range, RevisionRecord, Role, ServerMsg, WireLimits,
};

/// A complete WebSocket frame (header and payload), shareable between connections.
pub type Frame = Bytes;

/// Why a message could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// What was wrong.
    pub message: String,
    /// Set when the message was a well-formed `submit` and only its delta was refused (bad,
    /// or over a limit): the error then belongs to that document, and the connection stays.
    pub submit: Option<RefusedSubmit>,
}

/// A `submit` whose delta was refused while decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedSubmit {
    /// The document.
    pub doc: String,
    /// The op's `client_seq`.
    pub client_seq: u64,
    /// `invalid_delta`, or `too_large` when the delta was over a limit.
    pub code: ErrorCode,
}

/// Wraps a payload in an unmasked, final WebSocket frame.
pub fn frame(opcode: Data, payload: &[u8]) -> Frame {
    let header = FrameHeader { opcode: OpCode::Data(opcode), ..FrameHeader::default() };
    let mut out = Vec::with_capacity(header.len(payload.len() as u64) + payload.len());
    header.format(payload.len() as u64, &mut out).expect("writing a frame header to memory cannot fail");
    out.extend_from_slice(payload);
    Bytes::from(out)
}

thread_local! {
    /// Scratch space for encoding and for aligning binary payloads, reused per thread.
    static SCRATCH: RefCell<(rkyv::ser::allocator::Arena, AlignedVec)> =
        RefCell::new((rkyv::ser::allocator::Arena::new(), AlignedVec::new()));
}

/// Encodes a server message as a complete frame in `encoding`.
pub fn encode_server(msg: &ServerMsg, encoding: Encoding) -> Frame {
    match encoding {
        Encoding::Json => frame(Data::Text, &serde_json::to_vec(msg).expect("server messages always encode as JSON")),
        Encoding::Binary => with_archive(msg, |bytes| frame(Data::Binary, bytes)),
    }
}

/// Encodes a server message as a frame payload (for WebSocket libraries that frame
/// themselves).
pub fn encode_server_payload(msg: &ServerMsg, encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => Bytes::from(serde_json::to_vec(msg).expect("server messages always encode as JSON")),
        Encoding::Binary => with_archive(msg, Bytes::copy_from_slice),
    }
}

/// Archives `msg` into the thread's scratch buffer and hands the bytes to `f`.
fn with_archive<T>(msg: &ServerMsg, f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut scratch = s.borrow_mut();
        let (arena, buf) = &mut *scratch;
        let mut taken = std::mem::take(buf);
        taken.clear();
        let bytes = rkyv::api::high::to_bytes_in_with_alloc::<_, _, rkyv::rancor::Error>(msg, taken, arena.acquire())
            .expect("server messages always archive");
        let out = f(&bytes);
        *buf = bytes;
        out
    })
}

/// Encodes a client message as a payload: text for JSON, bytes for binary.
pub fn encode_client(msg: &ClientMsg, encoding: Encoding) -> Vec<u8> {
    match encoding {
        Encoding::Json => serde_json::to_vec(msg).expect("client messages always encode as JSON"),
        Encoding::Binary => {
            rkyv::to_bytes::<rkyv::rancor::Error>(msg).expect("client messages always archive").to_vec()
        }
    }
}

/// Runs `f` on `payload` copied into an aligned buffer (rkyv refuses misaligned archives).
fn aligned<T>(payload: &[u8], f: impl FnOnce(&[u8]) -> T) -> T {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let buf = &mut s.1;
        buf.clear();
        buf.extend_from_slice(payload);
        f(buf)
    })
}

fn bad(what: impl std::fmt::Display) -> DecodeError {
    DecodeError { message: what.to_string(), submit: None }
}

/// Decodes a client message from a frame payload, under the default engine limits.
pub fn decode_client(payload: &[u8], encoding: Encoding) -> Result<ClientMsg, DecodeError> {
    decode_client_within(payload, encoding, DecodeLimits::of(&tandem_engine::Limits::default()))
}

/// Decodes a client message from a frame payload; a delta over `limits` is refused while it
/// is read, before it is built.
pub fn decode_client_within(
    payload: &[u8],
    encoding: Encoding,
    limits: DecodeLimits,
) -> Result<ClientMsg, DecodeError> {
    let (decoded, over_limit) = limits.scope(|| match encoding {
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| {
            let mut err = bad(format_args!("invalid JSON message: {e}"));
            if let Some((doc, client_seq)) = crate::protocol::submit_with_bad_delta(payload) {
                err.message = format!("invalid delta: {e}");
                err.submit = Some(RefusedSubmit { doc, client_seq, code: ErrorCode::InvalidDelta });
            }
            err
        }),
        Encoding::Binary => aligned(payload, |bytes| {
            let archived = rkyv::access::<ArchivedClientMsg, BoxedError>(bytes)
                .map_err(|e| bad(format_args!("invalid binary message: {e}")))?;
            client_from_archived(archived)
        }),
    });
    decoded.map_err(|mut e| {
        if let (Some(refused), Some(over)) = (&mut e.submit, over_limit) {
            refused.code = ErrorCode::TooLarge;
            e.message = over.to_string();
        }
        e
    })
}

fn delta_from(archived: &tandem_engine::ArchivedDelta) -> Result<Delta, DecodeError> {
    Delta::from_archived(archived).map_err(|e| bad(format_args!("invalid delta: {e}")))
}

fn client_from_archived(m: &ArchivedClientMsg) -> Result<ClientMsg, DecodeError> {
    Ok(match m {
        ArchivedClientMsg::Hello { protocol, client, token, name, color } => ClientMsg::Hello {
            protocol: protocol.to_native(),
            client: ClientId::from(client),
            token: token.as_str().to_owned(),
            name: name.as_str().to_owned(),
            color: color.as_str().to_owned(),
        },
        ArchivedClientMsg::Open { doc, from_rev } => {
            ClientMsg::Open { doc: doc.as_str().to_owned(), from_rev: from_rev.as_ref().map(|r| r.to_native()) }
        }
        ArchivedClientMsg::Close { doc } => ClientMsg::Close { doc: doc.as_str().to_owned() },
        ArchivedClientMsg::Submit { doc, base_rev, client_seq, delta } => ClientMsg::Submit {
            doc: doc.as_str().to_owned(),
            base_rev: base_rev.to_native(),
            client_seq: client_seq.to_native(),
            delta: delta_from(delta).map_err(|mut e| {
                let (doc, client_seq) = (doc.as_str().to_owned(), client_seq.to_native());
                e.submit = Some(RefusedSubmit { doc, client_seq, code: ErrorCode::InvalidDelta });
                e
            })?,
        },
        ArchivedClientMsg::Presence { doc, rev, ranges } => ClientMsg::Presence {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            ranges: ranges.iter().map(|r| Range { anchor: r.anchor.to_native(), head: r.head.to_native() }).collect(),
        },
        ArchivedClientMsg::GetRevision { doc, rev } => {
            ClientMsg::GetRevision { doc: doc.as_str().to_owned(), rev: rev.to_native() }
        }
        ArchivedClientMsg::ListRevisions { doc, from_rev, limit } => ClientMsg::ListRevisions {
            doc: doc.as_str().to_owned(),
            from_rev: from_rev.to_native(),
            limit: limit.to_native(),
        },
        ArchivedClientMsg::Refresh { token } => ClientMsg::Refresh { token: token.as_str().to_owned() },
        ArchivedClientMsg::Undo { doc, client_seq } => {
            ClientMsg::Undo { doc: doc.as_str().to_owned(), client_seq: client_seq.to_native() }
        }
        ArchivedClientMsg::Redo { doc, client_seq } => {
            ClientMsg::Redo { doc: doc.as_str().to_owned(), client_seq: client_seq.to_native() }
        }
        ArchivedClientMsg::GetChanges { doc, from_rev, to_rev } => ClientMsg::GetChanges {
            doc: doc.as_str().to_owned(),
            from_rev: from_rev.to_native(),
            to_rev: to_rev.to_native(),
        },
        ArchivedClientMsg::Restore { doc, rev, client_seq } => ClientMsg::Restore {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            client_seq: client_seq.to_native(),
        },
        ArchivedClientMsg::Note { doc, rev, client_seq, change } => ClientMsg::Note {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            client_seq: client_seq.to_native(),
            change: Json::from_archived(change).map_err(|e| bad(format_args!("invalid note: {e}")))?,
        },
    })
}

/// Decodes a server message from a frame payload (the client side).
pub fn decode_server(payload: &[u8], encoding: Encoding) -> Result<ServerMsg, DecodeError> {
    match encoding {
        Encoding::Json => serde_json::from_slice(payload).map_err(|e| bad(format_args!("invalid JSON message: {e}"))),
        Encoding::Binary => aligned(payload, |bytes| {
            let archived = rkyv::access::<ArchivedServerMsg, BoxedError>(bytes)
                .map_err(|e| bad(format_args!("invalid binary message: {e}")))?;
            server_from_archived(archived)
        }),
    }
}

fn peer_from(p: &ArchivedPeer) -> Peer {
    Peer {
        client: ClientId::from(&p.client),
        user: p.user.as_str().to_owned(),
        name: p.name.as_str().to_owned(),
        color: p.color.as_str().to_owned(),
    }
}

fn op_from(o: &ArchivedOpRecord) -> Result<OpRecord, DecodeError> {
    Ok(OpRecord {
        rev: o.rev.to_native(),
        author: ClientId::from(&o.author),
        client_seq: o.client_seq.to_native(),
        delta: delta_from(&o.delta)?,
    })
}

fn server_from_archived(m: &ArchivedServerMsg) -> Result<ServerMsg, DecodeError> {
    Ok(match m {
        ArchivedServerMsg::Welcome { protocol, session, client, limits, user, expires_at } => ServerMsg::Welcome {
            protocol: protocol.to_native(),
            session: session.to_native(),
            client: ClientId::from(client),
            limits: WireLimits {
                max_message_bytes: limits.max_message_bytes.to_native(),
                max_open_docs: limits.max_open_docs.to_native(),
                max_messages_per_s: limits.max_messages_per_s.to_native(),
                presence_interval_ms: limits.presence_interval_ms.to_native(),
                max_insert_chars: limits.max_insert_chars.to_native(),
                max_delta_ops: limits.max_delta_ops.to_native(),
                max_document_chars: limits.max_document_chars.to_native(),
                history_ops: limits.history_ops.to_native(),
            },
            user: user.as_str().to_owned(),
            expires_at: expires_at.as_ref().map(|t| t.to_native()),
        },
        ArchivedServerMsg::Opened { doc, rev, snapshot, ops, online, last_seq, role } => ServerMsg::Opened {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            snapshot: snapshot.as_ref().map(delta_from).transpose()?,
            ops: ops.as_ref().map(|ops| ops.iter().map(op_from).collect::<Result<_, _>>()).transpose()?,
            online: online.iter().map(peer_from).collect(),
            last_seq: last_seq.as_ref().map(|s| s.to_native()),
            role: role.as_ref().map(Role::from),
        },
        ArchivedServerMsg::Ack { doc, client_seq, rev } => {
            ServerMsg::Ack { doc: doc.as_str().to_owned(), client_seq: client_seq.to_native(), rev: rev.to_native() }
        }
        ArchivedServerMsg::Op { doc, rev, author, client_seq, delta } => ServerMsg::Op {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            author: ClientId::from(author),
            client_seq: client_seq.to_native(),
            delta: delta_from(delta)?,
        },
        ArchivedServerMsg::Presence { doc, rev, peers } => ServerMsg::Presence {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            peers: peers
                .iter()
                .map(|p| PeerSelection {
                    client: ClientId::from(&p.client),
                    ranges: p
                        .ranges
                        .iter()
                        .map(|r| Range { anchor: r.anchor.to_native(), head: r.head.to_native() })
                        .collect(),
                })
                .collect(),
        },
        ArchivedServerMsg::Joined { doc, peer } => {
            ServerMsg::Joined { doc: doc.as_str().to_owned(), peer: peer_from(peer) }
        }
        ArchivedServerMsg::Left { doc, client } => {
            ServerMsg::Left { doc: doc.as_str().to_owned(), client: ClientId::from(client) }
        }
        ArchivedServerMsg::Closed { doc } => ServerMsg::Closed { doc: doc.as_str().to_owned() },
        ArchivedServerMsg::Error { code, message, doc, client_seq } => ServerMsg::Error {
            code: error_code_from(code),
            message: message.as_str().to_owned(),
            doc: doc.as_ref().map(|d| d.as_str().to_owned()),
            client_seq: client_seq.as_ref().map(|s| s.to_native()),
        },
        ArchivedServerMsg::Revision { doc, rev, snapshot } => {
            ServerMsg::Revision { doc: doc.as_str().to_owned(), rev: rev.to_native(), snapshot: delta_from(snapshot)? }
        }
        ArchivedServerMsg::Revisions { doc, oldest, latest, revisions } => ServerMsg::Revisions {
            doc: doc.as_str().to_owned(),
            oldest: oldest.to_native(),
            latest: latest.to_native(),
            revisions: revisions
                .iter()
                .map(|r| RevisionRecord {
                    rev: r.rev.to_native(),
                    author: ClientId::from(&r.author),
                    client_seq: r.client_seq.to_native(),
                    time_ms: r.time_ms.to_native(),
                })
                .collect(),
        },
        ArchivedServerMsg::Role { doc, role } => {
            ServerMsg::Role { doc: doc.as_str().to_owned(), role: Role::from(role) }
        }
        ArchivedServerMsg::TokenExpiring { expires_at } => {
            ServerMsg::TokenExpiring { expires_at: expires_at.to_native() }
        }
        ArchivedServerMsg::Refreshed { expires_at } => ServerMsg::Refreshed { expires_at: expires_at.to_native() },
        ArchivedServerMsg::ExportFinished { doc, export, format, status, url, error } => ServerMsg::ExportFinished {
            doc: doc.as_str().to_owned(),
            export: export.as_str().to_owned(),
            format: format.as_str().to_owned(),
            status: status.as_str().to_owned(),
            url: url.as_ref().map(|u| u.as_str().to_owned()),
            error: error.as_ref().map(|e| e.as_str().to_owned()),
        },
        ArchivedServerMsg::Changes { doc, from_rev, to_rev, content } => ServerMsg::Changes {
            doc: doc.as_str().to_owned(),
            from_rev: from_rev.to_native(),
            to_rev: to_rev.to_native(),
            content: delta_from(content)?,
        },
        ArchivedServerMsg::Noted { doc, rev, author, client_seq, note } => ServerMsg::Noted {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            author: ClientId::from(author),
            client_seq: client_seq.to_native(),
            note: Json::from_archived(note).map_err(|e| bad(format_args!("invalid note: {e}")))?,
        },
        ArchivedServerMsg::Notes { doc, rev, notes } => ServerMsg::Notes {
            doc: doc.as_str().to_owned(),
            rev: rev.to_native(),
            notes: Json::from_archived(notes).map_err(|e| bad(format_args!("invalid notes: {e}")))?,
        },
        ArchivedServerMsg::Moved { doc, to } => {
            ServerMsg::Moved { doc: doc.as_str().to_owned(), to: to.as_str().to_owned() }
        }
    })
}

fn error_code_from(c: &crate::protocol::ArchivedErrorCode) -> ErrorCode {
    use crate::protocol::ArchivedErrorCode as A;
    match c {
        A::BadMessage => ErrorCode::BadMessage,
        A::BadHello => ErrorCode::BadHello,
        A::UnsupportedProtocol => ErrorCode::UnsupportedProtocol,
        A::Unauthorized => ErrorCode::Unauthorized,
        A::InvalidDocId => ErrorCode::InvalidDocId,
        A::NotOpen => ErrorCode::NotOpen,
        A::TooManyDocs => ErrorCode::TooManyDocs,
        A::BaseInFuture => ErrorCode::BaseInFuture,
        A::BaseTooOld => ErrorCode::BaseTooOld,
        A::InvalidDelta => ErrorCode::InvalidDelta,
        A::TooLarge => ErrorCode::TooLarge,
        A::SeqReused => ErrorCode::SeqReused,
        A::SeqConflict => ErrorCode::SeqConflict,
        A::BadSelection => ErrorCode::BadSelection,
        A::RateLimited => ErrorCode::RateLimited,
        A::Overloaded => ErrorCode::Overloaded,
        A::Internal => ErrorCode::Internal,
        A::HistoryUnavailable => ErrorCode::HistoryUnavailable,
        A::NoSuchRevision => ErrorCode::NoSuchRevision,
        A::Forbidden => ErrorCode::Forbidden,
        A::ReadOnly => ErrorCode::ReadOnly,
        A::AccessRevoked => ErrorCode::AccessRevoked,
        A::DocumentDeleted => ErrorCode::DocumentDeleted,
        A::NothingToUndo => ErrorCode::NothingToUndo,
        A::NotFound => ErrorCode::NotFound,
        A::InvalidNote => ErrorCode::InvalidNote,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_engine::Attributes;

    fn sample_server() -> Vec<ServerMsg> {
        let delta = Delta::new().retain(2, [("bold", true)].into_iter().collect()).insert("hé😀", Attributes::NONE);
        let peer = Peer { client: ClientId(9), user: "u".into(), name: "Ada".into(), color: "#f00".into() };
        vec![
            ServerMsg::Welcome {
                protocol: 1,
                session: 5,
                client: ClientId(0xa1),
                limits: WireLimits {
                    max_message_bytes: 1,
                    max_open_docs: 2,
                    max_messages_per_s: 3,
                    presence_interval_ms: 4,
                    max_insert_chars: 5,
                    max_delta_ops: 6,
                    max_document_chars: 7,
                    history_ops: 8,
                },
                user: "u1".into(),
                expires_at: Some(1_700_000_000_000),
            },
            ServerMsg::Opened {
                doc: "d".into(),
                rev: 3,
                snapshot: Some(Delta::new().insert("x", Attributes::NONE)),
                ops: Some(vec![OpRecord { rev: 3, author: ClientId(1), client_seq: 2, delta: delta.clone() }]),
                online: vec![peer.clone()],
                last_seq: Some(2),
                role: Some(crate::protocol::Role::Commenter),
            },
            ServerMsg::Role { doc: "d".into(), role: crate::protocol::Role::Viewer },
            ServerMsg::TokenExpiring { expires_at: 7 },
            ServerMsg::Refreshed { expires_at: 8 },
            ServerMsg::ExportFinished {
                doc: "d".into(),
                export: "e".into(),
                format: "pdf".into(),
                status: "done".into(),
                url: Some("http://h/f".into()),
                error: None,
            },
            ServerMsg::Ack { doc: "d".into(), client_seq: 1, rev: 2 },
            ServerMsg::Op { doc: "d".into(), rev: 4, author: ClientId(2), client_seq: 8, delta },
            ServerMsg::Presence {
                doc: "d".into(),
                rev: 4,
                peers: vec![PeerSelection { client: ClientId(2), ranges: vec![Range { anchor: 1, head: 3 }] }],
            },
            ServerMsg::Joined { doc: "d".into(), peer },
            ServerMsg::Left { doc: "d".into(), client: ClientId(9) },
            ServerMsg::Closed { doc: "d".into() },
            ServerMsg::Error { code: ErrorCode::NotOpen, message: "m".into(), doc: None, client_seq: None },
            ServerMsg::Error {
                code: ErrorCode::HistoryUnavailable,
                message: "m".into(),
                doc: Some("d".into()),
                client_seq: Some(4),
            },
            ServerMsg::Revision { doc: "d".into(), rev: 3, snapshot: Delta::new().insert("abc", Attributes::NONE) },
            ServerMsg::Changes {
                doc: "d".into(),
                from_rev: 3,
                to_rev: 5,
                content: Delta::new().insert("abc", [("tandem_inserted", "000000000000000a")].into_iter().collect()),
            },
            ServerMsg::Revisions {
                doc: "d".into(),
                oldest: 0,
                latest: 9,
                revisions: vec![RevisionRecord {
                    rev: 1,
                    author: ClientId(7),
                    client_seq: 1,
                    time_ms: 1_700_000_000_000,
                }],
            },
        ]
    }

    /// Strips the (unmasked, short) frame header the encoder adds.
    fn payload(frame: &[u8]) -> &[u8] {
        let len = frame[1] & 0x7f;
        match len {
            126 => &frame[4..],
            127 => &frame[10..],
            _ => &frame[2..],
        }
    }

    #[test]
    fn server_messages_round_trip_in_both_encodings() {
        for msg in sample_server() {
            for enc in [Encoding::Binary, Encoding::Json] {
                let f = encode_server(&msg, enc);
                assert_eq!(f[0] & 0x0f, if enc == Encoding::Json { 1 } else { 2 });
                assert_eq!(f[0] & 0x80, 0x80, "final frame");
                assert_eq!(f[1] & 0x80, 0, "server frames are unmasked");
                assert_eq!(decode_server(payload(&f), enc).unwrap(), msg, "{enc:?}");
            }
        }
    }

    #[test]
    fn client_messages_round_trip_in_both_encodings() {
        let msgs = vec![
            ClientMsg::Hello {
                protocol: 1,
                client: ClientId(u64::MAX),
                token: "t".into(),
                name: "n".into(),
                color: "c".into(),
            },
            ClientMsg::Open { doc: "d".into(), from_rev: Some(3) },
            ClientMsg::Open { doc: "d".into(), from_rev: None },
            ClientMsg::Close { doc: "d".into() },
            ClientMsg::Submit { doc: "d".into(), base_rev: 1, client_seq: 2, delta: Delta::new().delete(3) },
            ClientMsg::Presence { doc: "d".into(), rev: 1, ranges: vec![Range { anchor: 0, head: 2 }] },
            ClientMsg::GetRevision { doc: "d".into(), rev: 4 },
            ClientMsg::ListRevisions { doc: "d".into(), from_rev: 2, limit: 50 },
            ClientMsg::Refresh { token: "t".into() },
            ClientMsg::Undo { doc: "d".into(), client_seq: 7 },
            ClientMsg::Redo { doc: "d".into(), client_seq: 8 },
            ClientMsg::Restore { doc: "d".into(), rev: 3, client_seq: 9 },
            ClientMsg::GetChanges { doc: "d".into(), from_rev: 2, to_rev: 5 },
        ];
        for msg in msgs {
            for enc in [Encoding::Binary, Encoding::Json] {
                assert_eq!(decode_client(&encode_client(&msg, enc), enc).unwrap(), msg);
            }
        }
    }

    #[test]
    fn garbage_is_a_decode_error() {
        assert!(decode_client(b"\x00\x01\x02", Encoding::Binary).is_err());
        assert!(decode_client(&[0xff; 64], Encoding::Binary).is_err());
        assert!(decode_client(b"{", Encoding::Json).is_err());
        assert!(decode_client(br#"{"type":"nope"}"#, Encoding::Json).unwrap_err().message.contains("unknown variant"));
        // A valid archive of a submit whose delta's attribute bytes are not JSON.
        let mut bytes = encode_client(
            &ClientMsg::Submit {
                doc: "d".into(),
                base_rev: 0,
                client_seq: 1,
                delta: Delta::new().retain(1, [("bold", true)].into_iter().collect()),
            },
            Encoding::Binary,
        );
        let at = bytes.windows(6).position(|w| w == b"{\"bold").unwrap();
        bytes[at] = b'[';
        let e = decode_client(&bytes, Encoding::Binary).unwrap_err();
        assert!(e.message.contains("invalid delta"));
        // A submit whose delta alone is bad is that document's error.
        assert_eq!(e.submit, Some(RefusedSubmit { doc: "d".into(), client_seq: 1, code: ErrorCode::InvalidDelta }));
    }

    #[test]
    fn a_bad_delta_is_the_documents_error() {
        // A lone surrogate: invalid JSON text, inside the delta only.
        let lone =
            br#"{"type":"submit","doc":"d","base_rev":0,"client_seq":3,"delta":{"ops":[{"insert":"a\udf89b"}]}}"#;
        let e = decode_client(lone, Encoding::Json).unwrap_err();
        assert_eq!(e.submit, Some(RefusedSubmit { doc: "d".into(), client_seq: 3, code: ErrorCode::InvalidDelta }));
        assert!(e.message.contains("surrogate"), "{}", e.message);
        let typed = br#"{"type":"submit","doc":"d","base_rev":0,"client_seq":3,"delta":{"ops":[{"retain":-1}]}}"#;
        assert!(decode_client(typed, Encoding::Json).unwrap_err().submit.is_some());
        // The same surrogate in the document id is the connection's error.
        let in_doc = br#"{"type":"submit","doc":"\udf89","base_rev":0,"client_seq":3,"delta":{"ops":[]}}"#;
        assert_eq!(decode_client(in_doc, Encoding::Json).unwrap_err().submit, None);
        // So is an unknown field beside a bad delta.
        let extra = br#"{"type":"submit","doc":"d","base_rev":0,"client_seq":3,"x":1,"delta":{"ops":[{"retain":-1}]}}"#;
        assert_eq!(decode_client(extra, Encoding::Json).unwrap_err().submit, None);
    }

    #[test]
    fn over_limit_deltas_are_refused_while_decoding() {
        let limits = DecodeLimits { max_ops: 100, max_insert_chars: 500, max_format_bytes: 200 };
        let ops: Vec<String> =
            (0..101).map(|i| format!(r#"{{"insert":"a","attributes":{{"i":{}}}}}"#, i % 2)).collect();
        let loose = DecodeLimits { max_format_bytes: 1 << 20, ..limits };
        let many = format!(
            r#"{{"type":"submit","doc":"d","base_rev":0,"client_seq":1,"delta":{{"ops":[{}]}}}}"#,
            ops.join(",")
        );
        let e = decode_client_within(many.as_bytes(), Encoding::Json, loose).unwrap_err();
        assert_eq!(e.submit.as_ref().map(|s| s.code), Some(ErrorCode::TooLarge), "{e:?}");
        assert!(e.message.contains("101 ops"), "{}", e.message);
        // Plain inserts merge into one op, but count as sent.
        let plain = format!(
            r#"{{"type":"submit","doc":"d","base_rev":0,"client_seq":1,"delta":{{"ops":[{}]}}}}"#,
            vec![r#"{"insert":"a"}"#; 101].join(",")
        );
        assert!(
            decode_client_within(plain.as_bytes(), Encoding::Json, limits).unwrap_err().message.contains("101 ops")
        );
        let tight = DecodeLimits { max_insert_chars: 50, ..limits };
        let long = br#"{"type":"submit","doc":"d","base_rev":0,"client_seq":1,"delta":{"ops":[{"insert":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}]}}"#;
        assert!(decode_client_within(long, Encoding::Json, tight).unwrap_err().message.contains("inserted chars"));
        let attrs = format!(
            r#"{{"type":"submit","doc":"d","base_rev":0,"client_seq":1,"delta":{{"ops":[{{"retain":1,"attributes":{{"link":"{}"}}}}]}}}}"#,
            "x".repeat(300)
        );
        assert!(
            decode_client_within(attrs.as_bytes(), Encoding::Json, limits)
                .unwrap_err()
                .message
                .contains("attributes and embeds")
        );
        // The binary form is held to the same bounds.
        let big = ClientMsg::Submit {
            doc: "d".into(),
            base_rev: 0,
            client_seq: 9,
            delta: Delta::new().insert(&"b".repeat(60), tandem_engine::Attributes::NONE),
        };
        let e = decode_client_within(&encode_client(&big, Encoding::Binary), Encoding::Binary, tight).unwrap_err();
        assert_eq!(e.submit, Some(RefusedSubmit { doc: "d".into(), client_seq: 9, code: ErrorCode::TooLarge }));
        // Within the bounds, the same messages decode.
        assert!(decode_client_within(long, Encoding::Json, DecodeLimits::NONE).is_ok());
    }

    #[test]
    fn large_payloads_get_extended_lengths() {
        let big = vec![b'a'; 70_000];
        let f = frame(Data::Binary, &big);
        assert_eq!(f[1], 127);
        assert_eq!(f.len(), 10 + big.len());
        let mid = frame(Data::Text, &big[..300]);
        assert_eq!((mid[1], mid.len()), (126, 4 + 300));
    }
}
