// One document's client-side OT, sans I/O: the same state machine as the Rust `ClientDoc`.
//
// The library keeps the server's copy of the document at `rev` (what every acknowledged op
// made), at most one op or undo request in flight (sent, not yet answered) and what waits
// behind it in order: edits (composed while consecutive) and undo or redo requests (edited
// since, composed into one op). Everything here counts UTF-16 code units, as Quill does;
// `submit` messages and incoming ops are converted against the server's copy at the edge.
// The transform rule is the server's: at equal positions the op committed first goes first.

import Delta from "quill-delta";

import type { OpRecord, WireDelta } from "./protocol.js";
import { codePointDiff, deltaToScalar, deltaToUtf16, positionToScalar, positionToUtf16 } from "./utf16.js";

export interface Submit {
  type: "submit";
  doc: string;
  base_rev: number;
  client_seq: number;
  delta: WireDelta;
}

/** A change the server computes: an undo, a redo, or a restore of revision `rev`. */
export type Request = { type: "undo" | "redo" } | { type: "restore"; rev: number };

/** A request as sent: the server answers with an `op` (or an `ack` when nothing changes). */
export type RequestMsg = Request & { doc: string; client_seq: number };

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
    if (inflight.delta === undefined) return { ...inflight.request, doc: this.doc, client_seq: inflight.seq };
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
  remote(op: OpRecord): { view: Delta | null; next: Outgoing | null } {
    if (op.rev <= this.rev) return { view: null, next: null }; // already have it
    const ours = this.inflight && op.author === this.client && op.client_seq === this.inflight.seq;
    if (ours && this.inflight!.delta) {
      return { view: null, next: this.ack(op.client_seq, op.rev) };
    }
    let remote = deltaToUtf16(new Delta(op.delta.ops), this.server);
    this.server = this.server.compose(remote);
    this.rev = op.rev;
    if (this.inflight?.delta) {
      const theirs = remote;
      remote = this.inflight.delta.transform(theirs, false);
      this.inflight.delta = theirs.transform(this.inflight.delta, true);
    }
    for (const q of this.queue) {
      if (!q.delta) continue;
      const theirs = remote;
      remote = q.delta.transform(theirs, false);
      q.delta = theirs.transform(q.delta, true);
    }
    if (ours) {
      // The answer to our request: an op like anyone's, which frees the slot.
      this.inflight = null;
      return { view: remote, next: this.flush() };
    }
    return { view: remote, next: null };
  }

  /**
   * The document as a snapshot (`opened` without catch-up ops): `lastSeq` says whether our op
   * in flight is in it. Unacknowledged edits are rebased onto it; a request in flight is
   * forgotten (the snapshot has it, or it was never made). Returns the change for the view
   * and what to send.
   */
  snapshot(rev: number, content: WireDelta, lastSeq: number | undefined): { view: Delta; next: Outgoing | null } {
    const snapshot = new Delta(content.ops); // inserts only: the same in both units
    const oldView = this.view();
    const inflight = this.inflight;
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
    for (const q of this.queue) {
      if (!q.delta) continue;
      const rebased = missed.transform(q.delta, true);
      missed = q.delta.transform(missed, false);
      q.delta = rebased;
    }
    this.queue = this.queue.filter((q) => !q.delta || q.delta.ops.length > 0);
    this.server = snapshot;
    this.rev = rev;
    if (lastSeq !== undefined) this.nextSeq = Math.max(this.nextSeq, lastSeq + 1);
    const view = codePointDiff(oldView, this.view());
    return { view, next: this.flush() };
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

function serverScalarLength(doc: Delta): number {
  let n = 0;
  for (const op of doc.ops) n += typeof op.insert === "string" ? [...op.insert].length : 1;
  return n;
}
