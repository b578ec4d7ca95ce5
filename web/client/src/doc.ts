// One document's client-side OT, sans I/O: the same state machine as the Rust `ClientDoc`.
//
// The library keeps the server's copy of the document at `rev` (what every acknowledged op
// made), at most one op or undo request in flight (sent, not yet answered) and what waits
// behind it in order: edits (composed while consecutive) and undo or redo requests (edited
// since, composed into one op). Everything here counts UTF-16 code units, as Quill does;
// `submit` messages and incoming ops are converted against the server's copy at the edge.
// The transform rule is the server's: at equal positions the op committed first goes first.

import Delta from "quill-delta";

import { Notes, type Note, type NoteChange, type NotesJson, type Thread } from "./notes.js";
import type { OpRecord, WireDelta } from "./protocol.js";
import { codePointDiff, deltaToScalar, deltaToUtf16, positionToScalar, positionToUtf16 } from "./utf16.js";

export interface Submit {
  type: "submit";
  doc: string;
  base_rev: number;
  client_seq: number;
  delta: WireDelta;
}

/** A change the server computes: an undo, a redo, a restore of revision `rev`, or a change to
 *  the notes (a comment's range is `range`, UTF-16 units in the view as it is where the
 *  request waits; `change`'s `start`/`end` are filled in when it is sent). */
export type Request =
  | { type: "undo" | "redo" }
  | { type: "restore"; rev: number }
  | { type: "note"; change: NoteChange; range?: { start: number; end: number } };

/** A request as sent: the server answers with an `op` or a `noted` (or an `ack` when nothing
 *  changes). */
export type RequestMsg =
  | { type: "undo" | "redo"; doc: string; client_seq: number }
  | { type: "restore"; rev: number; doc: string; client_seq: number }
  | { type: "note"; doc: string; rev: number; client_seq: number; change: NoteChange };

/** A thread as the view shows it: its anchor in UTF-16 units of the view. */
export interface ThreadView extends Thread {
  index: number;
  length: number;
}

export type Outgoing = Submit | RequestMsg;

/** What is in flight: an op (with its delta, rebased as ops arrive), or a request. */
type Inflight = { seq: number; delta: Delta; request?: undefined } | { seq: number; delta?: undefined; request: Request };

/** What waits to be sent, in order: edits (composed while consecutive) and requests. */
type Queued = { delta: Delta; request?: undefined } | { delta?: undefined; request: Request };

/** A selection in UTF-16 units (Quill's `{index, length}` is `{anchor: index, head: index + length}`). */
export interface Selection {
  anchor: number;
  head: number;
}

export class DocSync {
  /** The server's revision the copy is at. */
  rev = 0;
  /** The server's document at `rev` (inserts only, UTF-16 strings). */
  server = new Delta();
  /** The server's comment threads and named versions at `rev` (scalar units). */
  notes = new Notes();
  private inflight: Inflight | null = null;
  private queue: Queued[] = [];
  private nextSeq = 1;

  constructor(
    readonly doc: string,
    readonly client: string,
  ) {}

  /** The local view: the server's copy with the op in flight and the pending edits. */
  view(): Delta {
    return this.server.compose(this.local());
  }

  /** The local changes not yet acknowledged, as one delta over the server's copy. */
  local(): Delta {
    let d = this.inflight?.delta ?? new Delta();
    for (const q of this.queue) if (q.delta) d = d.compose(q.delta);
    return d;
  }

  /** Whether every local edit (and undo) is acknowledged. */
  saved(): boolean {
    return this.inflight === null && this.queue.length === 0;
  }

  /** The request in flight, if one is. */
  inflightRequest(): Request | undefined {
    return this.inflight?.request;
  }

  /** The `client_seq` of the op or request in flight, if any. */
  inflightSeq(): number | null {
    return this.inflight?.seq ?? null;
  }

  /** A local edit (UTF-16 units, against the view). Returns the op to send, if one may go now. */
  edit(delta: Delta): Outgoing | null {
    if (delta.ops.length === 0) return null;
    const last = this.queue[this.queue.length - 1];
    if (last?.delta) {
      last.delta = last.delta.compose(delta);
      if (last.delta.ops.length === 0) this.queue.pop();
    } else {
      this.queue.push({ delta });
    }
    return this.flush();
  }

  /** Asks the server for a change (undo, redo, restore), after the edits made before it.
   *  Returns what to send, if it may go now. */
  request(request: Request): Outgoing | null {
    this.queue.push({ request });
    return this.flush();
  }

  /** Puts the next queued edits or request in flight; what to send. */
  flush(): Outgoing | null {
    if (this.inflight) return null;
    const next = this.queue.shift();
    if (!next) return null;
    this.inflight = next.delta ? { seq: this.nextSeq++, delta: next.delta } : { seq: this.nextSeq++, request: next.request };
    return this.inflightMsg();
  }

  /** The op or request in flight, to send again (after a reconnect): the same `client_seq`,
   *  rebased; or the next one. */
  resend(): Outgoing | null {
    return this.inflight ? this.inflightMsg() : this.flush();
  }

  private inflightMsg(): Outgoing {
    const inflight = this.inflight!;
    const request = inflight.request;
    if (request?.type === "note") {
      let change = request.change;
      if (change.action === "comment" && request.range) {
        // Nothing waits before it: the view's positions are the server's.
        const { start, end } = request.range;
        change = { ...change, start: positionToScalar(start, this.server), end: positionToScalar(end, this.server) };
      }
      return { type: "note", doc: this.doc, rev: this.rev, client_seq: inflight.seq, change };
    }
    if (request?.type === "restore") return { type: "restore", rev: request.rev, doc: this.doc, client_seq: inflight.seq };
    if (request) return { type: request.type, doc: this.doc, client_seq: inflight.seq };
    return {
      type: "submit",
      doc: this.doc,
      base_rev: this.rev,
      client_seq: inflight.seq,
      delta: { ops: deltaToScalar(inflight.delta, this.server).ops },
    };
  }

  /** The server applied our op `seq` as `rev`. Returns the next op to send, if any. */
  ack(seq: number, rev: number): Outgoing | null {
    if (!this.inflight || this.inflight.seq !== seq) return null; // an ack again: ignore
    if (this.inflight.delta) {
      this.notes.transform(deltaToScalar(this.inflight.delta, this.server));
      this.server = this.server.compose(this.inflight.delta);
      this.rev = rev;
    }
    // (A request acknowledged, not answered, changed nothing: a restore of the document as
    // it is, or an undo applied before whose op was already received.)
    this.inflight = null;
    return this.flush();
  }

  /** The server refused request `seq` (nothing to undo, no such revision): which request it
   *  was, and what to send next (`null` when `seq` is not the request in flight). */
  refused(seq: number): { request: Request; next: Outgoing | null } | null {
    const inflight = this.inflight;
    if (inflight?.request === undefined || inflight.seq !== seq) return null;
    this.inflight = null;
    return { request: inflight.request, next: this.flush() };
  }

  /**
   * An op from the server (scalar units). Returns the change for the view (UTF-16 units), and
   * what to send next: after our own op in flight (an `opened` catch-up acknowledges it), or
   * the answer to our undo.
   */
  remote(op: OpRecord): { view: Delta | null; next: Outgoing | null; answered?: Request } {
    if (op.rev <= this.rev) return { view: null, next: null }; // already have it
    const ours = this.inflight && op.author === this.client && op.client_seq === this.inflight.seq;
    if (ours && this.inflight!.delta) {
      return { view: null, next: this.ack(op.client_seq, op.rev) };
    }
    let remote = deltaToUtf16(new Delta(op.delta.ops), this.server);
    this.notes.transform(op.delta);
    this.server = this.server.compose(remote);
    this.rev = op.rev;
    if (this.inflight?.delta) {
      const theirs = remote;
      remote = this.inflight.delta.transform(theirs, false);
      this.inflight.delta = theirs.transform(this.inflight.delta, true);
    } else if (this.inflight?.request) {
      moveRange(this.inflight.request, remote);
    }
    for (const q of this.queue) {
      if (!q.delta) {
        moveRange(q.request, remote);
        continue;
      }
      const theirs = remote;
      remote = q.delta.transform(theirs, false);
      q.delta = theirs.transform(q.delta, true);
    }
    if (ours) {
      // The answer to our request: an op like anyone's, which frees the slot.
      const answered = this.inflight!.request;
      this.inflight = null;
      return { view: remote, next: this.flush(), answered };
    }
    return { view: remote, next: null };
  }

  /**
   * The document as a snapshot (`opened` without catch-up ops): `lastSeq` says whether our op
   * in flight is in it. Unacknowledged edits are rebased onto it; a request in flight is
   * forgotten (the snapshot has it, or it was never made). Returns the change for the view
   * and what to send.
   */
  snapshot(
    rev: number,
    content: WireDelta,
    lastSeq: number | undefined,
  ): { view: Delta; next: Outgoing | null; forgotten?: Request } {
    const snapshot = new Delta(content.ops); // inserts only: the same in both units
    const oldView = this.view();
    const inflight = this.inflight;
    const forgotten = inflight?.request;
    this.inflight = null;
    if (inflight?.delta) {
      if (lastSeq !== undefined && lastSeq >= inflight.seq) {
        // Our op is in the snapshot: only the queued edits are still ours to send.
        this.server = this.server.compose(inflight.delta);
      } else {
        this.queue.unshift({ delta: inflight.delta });
      }
    }
    let missed = codePointDiff(this.server, snapshot);
    // The server's notes follow the snapshot (`notes`).
    this.notes = new Notes();
    for (const q of this.queue) {
      if (!q.delta) {
        moveRange(q.request, missed);
        continue;
      }
      const rebased = missed.transform(q.delta, true);
      missed = q.delta.transform(missed, false);
      q.delta = rebased;
    }
    this.queue = this.queue.filter((q) => !q.delta || q.delta.ops.length > 0);
    this.server = snapshot;
    this.rev = rev;
    if (lastSeq !== undefined) this.nextSeq = Math.max(this.nextSeq, lastSeq + 1);
    const view = codePointDiff(oldView, this.view());
    return { view, next: this.flush(), forgotten };
  }

  /** A note committed as `rev` (ours or anyone's): applied to the notes, and a revision like
   *  an op with nothing in it. Returns what to send next (after the answer to our note). */
  noted(
    rev: number,
    author: string,
    clientSeq: number,
    note: Note,
  ): { applied: boolean; next: Outgoing | null; answered?: Request } {
    if (rev <= this.rev) return { applied: false, next: null };
    const r = this.remote({ rev, author, client_seq: clientSeq, delta: { ops: [] } });
    this.notes.apply(note, rev);
    return { applied: true, next: r.next, answered: r.answered };
  }

  /** The server's notes (`notes`, after every `opened`), at `rev`. */
  setNotes(rev: number, notes: NotesJson): void {
    if (rev !== this.rev) return; // not the revision we are at: a newer `notes` follows
    this.notes = Notes.from(structuredClone(notes));
  }

  /** The threads with their anchors in the view (UTF-16 units, through the local edits). */
  threadsInView(): ThreadView[] {
    const local = this.local();
    const toView = (p: number, priority: boolean) => {
      const u = positionToUtf16(Math.min(p, serverScalarLength(this.server)), this.server);
      return local.ops.length ? local.transformPosition(u, priority) : u;
    };
    const out: ThreadView[] = [];
    for (const t of this.notes.threads.values()) {
      const index = toView(t.start, false);
      const end = t.orphaned ? index : Math.max(index, toView(t.end, true));
      out.push({ ...t, index, length: end - index });
    }
    return out.sort((a, b) => a.index - b.index || a.id - b.id);
  }

  /** The server's last applied `client_seq` for us (from `opened`): ours continue after it. */
  seenLastSeq(lastSeq: number | undefined): void {
    if (lastSeq !== undefined) this.nextSeq = Math.max(this.nextSeq, lastSeq + 1);
  }

  /** Drops every unacknowledged edit (the server refused the op). Returns the change that
   *  takes the view back to the server's copy. */
  rollback(): Delta {
    const undo = this.local().invert(this.server);
    this.inflight = null;
    this.queue = [];
    return undo;
  }

  /** A selection in the view (UTF-16) as the server counts it, at `rev`. */
  selectionToServer(sel: Selection): { rev: number; anchor: number; head: number } {
    const local = this.local();
    const back = local.ops.length ? local.invert(this.server) : null;
    const toServer = (p: number) => positionToScalar(back ? back.transformPosition(p, true) : p, this.server);
    return { rev: this.rev, anchor: toServer(sel.anchor), head: toServer(sel.head) };
  }

  /** A peer's selection from the server (scalar, at our `rev`) in the view's UTF-16 units. */
  selectionFromServer(anchor: number, head: number): Selection {
    const local = this.local();
    const toView = (p: number) => {
      const u = positionToUtf16(Math.min(p, serverScalarLength(this.server)), this.server);
      return local.ops.length ? local.transformPosition(u, true) : u;
    };
    return { anchor: toView(anchor), head: toView(head) };
  }
}

/** Moves a waiting comment's range through a change made before it (UTF-16 units). */
function moveRange(request: Request, change: Delta): void {
  if (request.type !== "note" || !request.range) return;
  const start = change.transformPosition(request.range.start, false);
  request.range = { start, end: Math.max(start, change.transformPosition(request.range.end, true)) };
}

function serverScalarLength(doc: Delta): number {
  let n = 0;
  for (const op of doc.ops) n += typeof op.insert === "string" ? [...op.insert].length : 1;
  return n;
}
