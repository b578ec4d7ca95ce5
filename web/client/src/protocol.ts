// The messages of `tandem.v1.json`, as docs/protocol.md states them. Positions and lengths
// in these are Unicode scalar values; the library converts them at the edge.

import type { Op } from "quill-delta";

import type { Note, NoteChange, NotesJson } from "./notes.js";

export const PROTOCOL_VERSION = 1;
export const SUBPROTOCOL = "tandem.v1.json";

export type Role = "viewer" | "commenter" | "editor" | "owner";

export interface WireDelta {
  ops: Op[];
}

export interface Range {
  anchor: number;
  head: number;
}

export interface Peer {
  client: string;
  user: string;
  name: string;
  color?: string;
}

export interface OpRecord {
  rev: number;
  author: string;
  client_seq: number;
  delta: WireDelta;
}

export interface RevisionRecord {
  rev: number;
  author: string;
  client_seq: number;
  time_ms: number;
}

export interface WireLimits {
  max_message_bytes: number;
  max_open_docs: number;
  max_messages_per_s: number;
  presence_interval_ms: number;
  max_insert_chars: number;
  max_delta_ops: number;
  max_document_chars: number;
  history_ops: number;
}

export type ClientMsg =
  | { type: "hello"; protocol: number; client: string; token: string; name: string; color?: string }
  | { type: "open"; doc: string; from_rev?: number }
  | { type: "close"; doc: string }
  | { type: "submit"; doc: string; base_rev: number; client_seq: number; delta: WireDelta }
  | { type: "presence"; doc: string; rev: number; ranges: Range[] }
  | { type: "get_revision"; doc: string; rev: number }
  | { type: "list_revisions"; doc: string; from_rev: number; limit: number }
  | { type: "refresh"; token: string }
  | { type: "undo" | "redo"; doc: string; client_seq: number }
  | { type: "restore"; doc: string; rev: number; client_seq: number }
  | { type: "get_changes"; doc: string; from_rev: number; to_rev: number }
  | { type: "note"; doc: string; rev: number; client_seq: number; change: NoteChange };

export type ServerMsg =
  | {
      type: "welcome";
      protocol: number;
      session: string;
      client: string;
      limits: WireLimits;
      user?: string;
      expires_at?: number;
    }
  | {
      type: "opened";
      doc: string;
      rev: number;
      snapshot?: WireDelta;
      ops?: OpRecord[];
      online: Peer[];
      last_seq?: number;
      role?: Role;
    }
  | { type: "ack"; doc: string; client_seq: number; rev: number }
  | { type: "op"; doc: string; rev: number; author: string; client_seq: number; delta: WireDelta }
  | { type: "presence"; doc: string; rev: number; peers: { client: string; ranges: Range[] }[] }
  | { type: "joined"; doc: string; peer: Peer }
  | { type: "left"; doc: string; client: string }
  | { type: "closed"; doc: string }
  | { type: "moved"; doc: string; to: string }
  | { type: "error"; code: string; message: string; doc?: string; client_seq?: number }
  | { type: "revision"; doc: string; rev: number; snapshot: WireDelta }
  | { type: "revisions"; doc: string; oldest: number; latest: number; revisions: RevisionRecord[] }
  | { type: "changes"; doc: string; from_rev: number; to_rev: number; content: WireDelta }
  | { type: "noted"; doc: string; rev: number; author: string; client_seq: number; note: Note }
  | { type: "notes"; doc: string; rev: number; notes: NotesJson }
  | { type: "role"; doc: string; role: Role }
  | { type: "token_expiring"; expires_at: number }
  | { type: "refreshed"; expires_at: number }
  | {
      type: "export_finished";
      doc: string;
      export: string;
      format: string;
      status: string;
      url?: string;
      error?: string;
    };

/** WebSocket close codes the server uses (docs/protocol.md, "Close codes"). */
export const Close = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  TRY_AGAIN_LATER: 1013,
  BAD_MESSAGE: 4000,
  BAD_HELLO: 4001,
  UNAUTHORIZED: 4003,
  IDLE: 4008,
  SUPERSEDED: 4009,
  TOKEN_EXPIRED: 4010,
  RATE_LIMITED: 4029,
  SLOW_READER: 4030,
} as const;

/** Errors that refuse an op for good: it is gone, and the edits built on it with it.
 *  (`base_too_old` keeps the op: re-open and resubmit; `seq_conflict` re-opens from a
 *  snapshot, whose `last_seq` says whether the op is in.) */
export const OP_REFUSALS = new Set(["invalid_delta", "too_large", "seq_reused", "base_in_future"]);

/** Errors that answer a request and leave the document open. */
export const NON_CLOSING = new Set([
  "history_unavailable",
  "no_such_revision",
  "read_only",
  "nothing_to_undo",
  "not_found",
  "invalid_note",
]);
