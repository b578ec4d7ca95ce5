// One document's client-side OT, sans I/O: the same state machine as the Rust `ClientDoc`.
//
// The library keeps the server's copy of the document at `rev` (what every acknowledged op
// made), at most one op in flight (sent, not yet acknowledged) and a pending buffer (edited
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

interface Inflight {
  seq: number;
  delta: Delta;
}

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
  private pending: Delta | null = null;
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
    const a = this.inflight?.delta ?? new Delta();
    return this.pending ? a.compose(this.pending) : a;
  }

  /** Whether every local edit is acknowledged. */
  saved(): boolean {
    return this.inflight === null && this.pending === null;
  }

  /** The `client_seq` of the op in flight, if any. */
  inflightSeq(): number | null {
    return this.inflight?.seq ?? null;
  }

  /** A local edit (UTF-16 units, against the view). Returns the op to send, if one may go now. */
  edit(delta: Delta): Submit | null {
    if (delta.ops.length === 0) return null;
    this.pending = this.pending ? this.pending.compose(delta) : delta;
    if (this.pending.ops.length === 0) this.pending = null;
    return this.inflight ? null : this.flush();
  }

  /** Moves the pending edits into flight; the op to send. */
  flush(): Submit | null {
    if (this.inflight || !this.pending) return null;
    this.inflight = { seq: this.nextSeq++, delta: this.pending };
    this.pending = null;
    return this.submitMsg();
  }

  /** The op in flight, to send again (after a reconnect): the same `client_seq`, rebased. */
  resend(): Submit | null {
    return this.inflight ? this.submitMsg() : this.flush();
  }

  private submitMsg(): Submit {
    const inflight = this.inflight!;
    return {
      type: "submit",
      doc: this.doc,
      base_rev: this.rev,
      client_seq: inflight.seq,
      delta: { ops: deltaToScalar(inflight.delta, this.server).ops },
    };
  }

  /** The server applied our op `seq` as `rev`. Returns the next op to send, if any. */
  ack(seq: number, rev: number): Submit | null {
    if (!this.inflight || this.inflight.seq !== seq) return null; // an ack again: ignore
    this.server = this.server.compose(this.inflight.delta);
    this.rev = rev;
    this.inflight = null;
    return this.flush();
  }

  /**
   * An op from the server (scalar units). Returns the change for the view (UTF-16 units), or
   * `ack` when it is our own op in flight (an `opened` catch-up), with what to send next.
   */
  remote(op: OpRecord): { view: Delta | null; next: Submit | null } {
    if (op.rev <= this.rev) return { view: null, next: null }; // already have it
    if (this.inflight && op.author === this.client && op.client_seq === this.inflight.seq) {
      return { view: null, next: this.ack(op.client_seq, op.rev) };
    }
    let remote = deltaToUtf16(new Delta(op.delta.ops), this.server);
    this.server = this.server.compose(remote);
    this.rev = op.rev;
    if (this.inflight) {
      const theirs = remote;
      remote = this.inflight.delta.transform(theirs, false);
      this.inflight.delta = theirs.transform(this.inflight.delta, true);
    }
    if (this.pending) {
      const theirs = remote;
      remote = this.pending.transform(theirs, false);
      this.pending = theirs.transform(this.pending, true);
    }
    return { view: remote, next: null };
  }

  /**
   * The document as a snapshot (`opened` without catch-up ops): `lastSeq` says whether our op
   * in flight is in it. Unacknowledged edits are rebased onto it. Returns the change for the
   * view and the op to send.
   */
  snapshot(rev: number, content: WireDelta, lastSeq: number | undefined): { view: Delta; next: Submit | null } {
    const snapshot = new Delta(content.ops); // inserts only: the same in both units
    const oldView = this.view();
    let local: Delta;
    if (this.inflight && lastSeq !== undefined && lastSeq >= this.inflight.seq) {
      // Our op is in the snapshot: only the pending edits are still ours to send.
      local = this.pending ?? new Delta();
      const applied = this.server.compose(this.inflight.delta);
      this.server = applied;
    } else {
      local = this.local();
    }
    const missed = codePointDiff(this.server, snapshot);
    const rebased = missed.transform(local, true);
    this.server = snapshot;
    this.rev = rev;
    this.inflight = null;
    this.pending = rebased.ops.length > 0 ? rebased : null;
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
    this.pending = null;
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
