// The connection: hello, reconnect with resume, and each open document's messages routed to
// its `DocSync`. One WebSocket per client, as docs/protocol.md asks.

import Delta from "quill-delta";

import { DocSync, type Outgoing, type Request, type Selection, type ThreadView } from "./doc.js";
import type { NamedVersion, NoteChange } from "./notes.js";
import {
  Close,
  NON_CLOSING,
  OP_REFUSALS,
  PROTOCOL_VERSION,
  SUBPROTOCOL,
  type ClientMsg,
  type Peer,
  type RevisionRecord,
  type Role,
  type ServerMsg,
  type WireLimits,
} from "./protocol.js";

/** What the connection is doing, for the UI. */
export type ConnectionState = "connecting" | "online" | "offline" | "reconnecting" | "superseded" | "closed";

/** Whether a document's edits are all acknowledged. */
export type SaveState = "saved" | "saving";

interface StorageLike {
  getItem(key: string): string | null;
  setItem(key: string, value: string): void;
}

/** The WebSocket a client needs (the browser's, or `ws` in Node). */
export interface SocketLike {
  readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}

export type SocketFactory = (url: string, protocol: string) => SocketLike;

export interface ClientOptions {
  /** `ws://host:port/ws`; in a browser, defaults to this page's server. */
  url?: string;
  /** The access token for `hello`, asked for at each (re)connect (`connect`), after the
   *  server refused or expired the last one (`expired`), and before it expires (`refresh`,
   *  sent over the open connection). Return `""` to sign in with the page's `tandem_access`
   *  cookie, or `null` when the user is signed out (the client stops: state `closed`). */
  token?: (reason: "connect" | "expired" | "refresh") => string | null | Promise<string | null>;
  /** How others see this user. */
  name: string;
  color?: string;
  /** The client id (1 to 16 hex digits). Default: one kept in `storage` under
   *  `tandem.client`, made on first use. */
  clientId?: string;
  /** Where the client id lives: `sessionStorage` in a browser (one id per tab, kept across
   *  reloads, as the protocol asks), nothing elsewhere. */
  storage?: StorageLike | null;
  /** How sockets are made (default: the global `WebSocket`). */
  socket?: SocketFactory;
  /** Reconnect backoff: the first delay and the longest, ms (jittered: half to all of it). */
  backoffMs?: { initial: number; max: number };
}

/** What a document tells its user interface. */
export interface DocEvents {
  /** The whole content changed (first open, or a resync): show `content` (UTF-16). */
  reset?(content: Delta): void;
  /** A change from the server, to apply to the view (UTF-16). */
  change?(delta: Delta, author: string): void;
  /** The document opened (again): the user's role, who else is there. */
  opened?(info: { rev: number; role: Role | undefined; online: Peer[] }): void;
  /** Someone opened or left it. */
  joined?(peer: Peer): void;
  left?(client: string): void;
  /** A peer's selection moved (UTF-16, in the view), or went (`null`). */
  presence?(client: string, selection: Selection | null): void;
  /** Saving / saved. */
  save?(state: SaveState): void;
  /** The user's role changed. */
  role?(role: Role): void;
  /** The document was closed by the server for good (`access_revoked`, `document_deleted`,
   *  `forbidden`), or an op was refused and rolled back (`rolledBack` true). */
  error?(code: string, message: string, info: { closed: boolean; rolledBack: boolean }): void;
  /** An undo (`redo` false) or redo found nothing to undo (redo). */
  nothingToUndo?(redo: boolean): void;
  /** The comment threads or named versions changed (anyone's note, or the server's list
   *  after an open). Anchors also move with every `change`: read `threads()` again then. */
  notes?(): void;
  /** An export this user asked for finished. */
  exportFinished?(msg: { export: string; format: string; status: string; url?: string; error?: string }): void;
}

/** A refused note: the server's code (`not_found`, `invalid_note`, `forbidden`,
 *  `read_only`) and message. */
export class NoteError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

/** Errors that end a document for this session (no automatic re-open). */
const FINAL = new Set(["access_revoked", "document_deleted", "forbidden"]);

type Pending<T> = { resolve(v: T): void; reject(e: Error): void };

/** An open document. */
export class DocHandle {
  readonly sync: DocSync;
  role: Role | undefined;
  online = new Map<string, Peer>();
  /** Open on the server now. */
  isOpen = false;
  /** Closed for good (revoked, deleted, or closed by the app). */
  ended = false;
  private selection: Selection | null = null;
  private revisionWaiters = new Map<number, Pending<Delta>[]>();
  private listWaiters: Pending<{ oldest: number; latest: number; revisions: RevisionRecord[] }>[] = [];
  private changesWaiters = new Map<string, Pending<Delta>[]>();
  /** Notes asked for, until the server answers: resolved with the revision they took. */
  private noteWaiters = new Map<Request, Pending<number>>();

  constructor(
    private readonly client: TandemClient,
    readonly id: string,
    readonly events: DocEvents,
  ) {
    this.sync = new DocSync(id, client.clientId);
  }

  /** A local edit from the view (UTF-16 units). */
  edit(delta: Delta): void {
    if (this.ended) return;
    const submit = this.sync.edit(delta);
    this.events.save?.("saving");
    if (submit && this.isOpen) this.client.send(submit);
  }

  /** Undoes (redoes) the user's most recent change, as the server keeps it (after the
   *  edits made before this call). The answer arrives as a `change`; with nothing to undo,
   *  the `nothingToUndo` event. */
  undo(redo = false): void {
    this.request({ type: redo ? "redo" : "undo" });
  }

  /** Makes the document what it was at revision `rev`, as a new change by this user (which
   *  everyone sees, and which undo takes back). Only editors may. */
  restore(rev: number): void {
    this.request({ type: "restore", rev });
  }

  private request(request: Request): void {
    if (this.ended) return;
    const next = this.sync.request(request);
    this.events.save?.("saving");
    if (next && this.isOpen) this.client.send(next);
  }

  /** Starts a comment thread on `range` of the view (UTF-16, as Quill's selection) with its
   *  first message. Resolves with the thread's id once the server has it (after the edits
   *  made before this call); rejects with a `NoteError` when refused. Commenters and up. */
  comment(range: { index: number; length: number }, text: string, mentions: string[] = []): Promise<number> {
    const change: NoteChange = { action: "comment", start: 0, end: 0, text, ...(mentions.length ? { mentions } : {}) };
    return this.note(change, { start: range.index, end: range.index + range.length });
  }

  /** Replies to a thread. */
  reply(thread: number, text: string, mentions: string[] = []): Promise<number> {
    return this.note({ action: "reply", thread, text, ...(mentions.length ? { mentions } : {}) });
  }

  /** Changes one's own message. */
  editMessage(thread: number, message: number, text: string, mentions: string[] = []): Promise<number> {
    return this.note({ action: "edit", thread, message, text, ...(mentions.length ? { mentions } : {}) });
  }

  /** Deletes a message (one's own; an owner any); the first one deletes the thread. */
  deleteMessage(thread: number, message: number): Promise<number> {
    return this.note({ action: "delete", thread, message });
  }

  /** Resolves a thread (or, `reopen`, opens it again). */
  resolve(thread: number, reopen = false): Promise<number> {
    return this.note({ action: reopen ? "reopen" : "resolve", thread });
  }

  /** Names revision `rev` (editors and owners), or with `name` null takes its name away. */
  nameVersion(rev: number, name: string | null): Promise<number> {
    return this.note(name === null ? { action: "unname_version", rev } : { action: "name_version", rev, name });
  }

  /** The comment threads, anchored in the view (UTF-16), in document order. */
  threads(): ThreadView[] {
    return this.sync.threadsInView();
  }

  /** The named versions, by revision. */
  versions(): NamedVersion[] {
    return [...this.sync.notes.versions.values()].sort((a, b) => a.rev - b.rev);
  }

  private note(change: NoteChange, range?: { start: number; end: number }): Promise<number> {
    return new Promise((resolve, reject) => {
      if (this.ended) return reject(new NoteError("not_open", "the document is closed"));
      const request: Request = { type: "note", change, ...(range ? { range } : {}) };
      this.noteWaiters.set(request, { resolve, reject });
      this.request(request);
    });
  }

  private answered(request: Request | undefined, rev: number): void {
    if (!request) return;
    this.noteWaiters.get(request)?.resolve(rev);
    this.noteWaiters.delete(request);
  }

  /** The user's selection (UTF-16, in the view), or `null` for none. */
  select(selection: Selection | null): void {
    this.selection = selection;
    this.sendPresence();
  }

  /** Sends the selection again (after a remote op or a reconnect). */
  sendPresence(): void {
    if (!this.isOpen || this.ended) return;
    if (!this.selection) {
      this.client.send({ type: "presence", doc: this.id, rev: this.sync.rev, ranges: [] });
      return;
    }
    const s = this.sync.selectionToServer(this.selection);
    this.client.send({ type: "presence", doc: this.id, rev: s.rev, ranges: [{ anchor: s.anchor, head: s.head }] });
  }

  /** The document at a revision (UTF-16 strings; a delta of inserts). */
  revision(rev: number): Promise<Delta> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) return reject(new Error("the document is not open"));
      const list = this.revisionWaiters.get(rev) ?? [];
      list.push({ resolve, reject });
      this.revisionWaiters.set(rev, list);
      this.client.send({ type: "get_revision", doc: this.id, rev });
    });
  }

  /** Up to `limit` revisions from `fromRev` on. */
  revisions(fromRev: number, limit: number): Promise<{ oldest: number; latest: number; revisions: RevisionRecord[] }> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) return reject(new Error("the document is not open"));
      this.listWaiters.push({ resolve, reject });
      this.client.send({ type: "list_revisions", doc: this.id, from_rev: fromRev, limit });
    });
  }

  /** What changed from revision `fromRev` to `toRev` (at most 10,000 apart): the document
   *  at `fromRev` with inserted text marked `tandem_inserted`, deleted text kept and marked
   *  `tandem_deleted`, reformatted text marked `tandem_formatted`, each with the author's
   *  client id (see docs/protocol.md, `changes`). */
  changes(fromRev: number, toRev: number): Promise<Delta> {
    return new Promise((resolve, reject) => {
      if (!this.isOpen) return reject(new Error("the document is not open"));
      const key = `${fromRev}:${toRev}`;
      const list = this.changesWaiters.get(key) ?? [];
      list.push({ resolve, reject });
      this.changesWaiters.set(key, list);
      this.client.send({ type: "get_changes", doc: this.id, from_rev: fromRev, to_rev: toRev });
    });
  }

  /** Stops following the document. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.isOpen) this.client.send({ type: "close", doc: this.id });
    this.isOpen = false;
    this.client.forget(this.id);
  }

  /** @internal */
  reopen(): void {
    if (this.ended) return;
    this.isOpen = false;
    const from = this.sync.rev > 0 || !this.sync.saved() ? this.sync.rev : undefined;
    this.client.send(from === undefined ? { type: "open", doc: this.id } : { type: "open", doc: this.id, from_rev: from });
  }

  /** @internal */
  reopenFromSnapshot(): void {
    this.isOpen = false;
    this.client.send({ type: "open", doc: this.id });
  }

  private sendNext(next: Outgoing | null): void {
    if (next && this.isOpen) this.client.send(next);
    this.events.save?.(this.sync.saved() ? "saved" : "saving");
  }

  /** @internal A message for this document. */
  handle(msg: ServerMsg): void {
    switch (msg.type) {
      case "opened": {
        this.isOpen = true;
        this.role = msg.role;
        this.online = new Map(msg.online.map((p) => [p.client, p]));
        this.sync.seenLastSeq(msg.last_seq);
        let next: Outgoing | null = null;
        if (msg.snapshot) {
          const first = this.sync.rev === 0 && this.sync.saved() && this.sync.server.ops.length === 0;
          const r = this.sync.snapshot(msg.rev, msg.snapshot, msg.last_seq);
          const forgotten = r.forgotten && this.noteWaiters.get(r.forgotten);
          if (forgotten) {
            forgotten.reject(new NoteError("resync", "the document was reloaded: look whether the note is there, or make it again"));
            this.noteWaiters.delete(r.forgotten!);
          }
          if (first) this.events.reset?.(this.sync.view());
          else if (r.view.ops.length) this.events.change?.(r.view, "");
          next = r.next;
        } else {
          for (const op of msg.ops ?? []) {
            const r = this.sync.remote(op);
            if (r.view && r.view.ops.length) this.events.change?.(r.view, op.author);
            this.answered(r.answered, op.rev);
            if (r.next) next = r.next;
          }
          // Our op still in flight (not among the ops): send it again, same client_seq.
          next = this.sync.resend() ?? next;
        }
        this.events.opened?.({ rev: msg.rev, role: msg.role, online: [...this.online.values()] });
        this.sendNext(next);
        this.sendPresence();
        break;
      }
      case "ack": {
        const request = this.sync.inflightSeq() === msg.client_seq ? this.sync.inflightRequest() : undefined;
        this.sendNext(this.sync.ack(msg.client_seq, msg.rev));
        this.answered(request, msg.rev);
        break;
      }
      case "op": {
        const r = this.sync.remote(msg);
        if (r.view && r.view.ops.length) this.events.change?.(r.view, msg.author);
        this.sendNext(r.next);
        break;
      }
      case "noted": {
        const r = this.sync.noted(msg.rev, msg.author, msg.client_seq, msg.note);
        this.answered(r.answered, msg.rev);
        if (r.applied) this.events.notes?.();
        this.sendNext(r.next);
        break;
      }
      case "notes":
        this.sync.setNotes(msg.rev, msg.notes);
        this.events.notes?.();
        break;
      case "presence":
        for (const p of msg.peers) {
          const range = p.ranges[0];
          this.events.presence?.(p.client, range ? this.sync.selectionFromServer(range.anchor, range.head) : null);
        }
        break;
      case "joined":
        this.online.set(msg.peer.client, msg.peer);
        this.events.joined?.(msg.peer);
        break;
      case "left":
        this.online.delete(msg.client);
        this.events.left?.(msg.client);
        this.events.presence?.(msg.client, null);
        break;
      case "role":
        this.role = msg.role;
        this.events.role?.(msg.role);
        break;
      case "revision":
        for (const w of this.revisionWaiters.get(msg.rev) ?? []) w.resolve(new Delta(msg.snapshot.ops));
        this.revisionWaiters.delete(msg.rev);
        break;
      case "revisions":
        this.listWaiters.shift()?.resolve({ oldest: msg.oldest, latest: msg.latest, revisions: msg.revisions });
        break;
      case "changes": {
        const key = `${msg.from_rev}:${msg.to_rev}`;
        this.changesWaiters.get(key)?.shift()?.resolve(new Delta(msg.content.ops));
        if (!this.changesWaiters.get(key)?.length) this.changesWaiters.delete(key);
        break;
      }
      case "export_finished":
        this.events.exportFinished?.(msg);
        break;
      case "closed":
        this.isOpen = false;
        break;
      case "error":
        this.error(msg.code, msg.message, msg.client_seq);
        break;
      default:
        break;
    }
  }

  private error(code: string, message: string, clientSeq: number | undefined): void {
    // A refused request (undo, redo, restore): nothing changed.
    const refused = clientSeq === undefined ? null : this.sync.refused(clientSeq);
    if (refused?.request.type === "note") {
      // A refused note changes nothing, and the document stays open.
      this.noteWaiters.get(refused.request)?.reject(new NoteError(code, message));
      this.noteWaiters.delete(refused.request);
      if (NON_CLOSING.has(code) || code === "forbidden") {
        this.sendNext(refused.next);
        return;
      }
    }
    if (refused) {
      if (!NON_CLOSING.has(code)) {
        // The server closed the document for this session: what waits goes after the re-open.
        this.isOpen = false;
        this.events.error?.(code, message, { closed: false, rolledBack: false });
        this.reopen();
        return;
      }
      this.sendNext(refused.next);
      if (code === "nothing_to_undo") this.events.nothingToUndo?.(refused.request.type === "redo");
      else this.events.error?.(code, message, { closed: false, rolledBack: false });
      return;
    }
    if (code === "history_unavailable" || code === "no_such_revision") {
      const e = new Error(message);
      // Answer the oldest waiter of either kind: history replies come in order.
      // (Errors name no request: with several history requests of different kinds waiting,
      // the one refused is told apart by kind only.)
      const rev = [...this.revisionWaiters.entries()][0];
      const changes = [...this.changesWaiters.entries()][0];
      if (rev) {
        rev[1].shift()?.reject(e);
        if (rev[1].length === 0) this.revisionWaiters.delete(rev[0]);
      } else if (changes) {
        changes[1].shift()?.reject(e);
        if (changes[1].length === 0) this.changesWaiters.delete(changes[0]);
      } else {
        this.listWaiters.shift()?.reject(e);
      }
      return;
    }
    if (code === "read_only") {
      const undo = this.sync.rollback();
      if (undo.ops.length) this.events.change?.(undo, "");
      this.events.error?.(code, message, { closed: false, rolledBack: true });
      this.events.save?.("saved");
      return;
    }
    if (NON_CLOSING.has(code)) return;
    this.isOpen = false;
    if (FINAL.has(code)) {
      this.ended = true;
      this.rejectWaiters(new Error(message));
      for (const w of this.noteWaiters.values()) w.reject(new NoteError(code, message));
      this.noteWaiters.clear();
      this.client.forget(this.id);
      this.events.error?.(code, message, { closed: true, rolledBack: false });
      return;
    }
    if (clientSeq !== undefined && OP_REFUSALS.has(code)) {
      const undo = this.sync.rollback();
      if (undo.ops.length) this.events.change?.(undo, "");
      this.events.error?.(code, message, { closed: false, rolledBack: true });
      this.reopen();
      return;
    }
    this.events.error?.(code, message, { closed: false, rolledBack: false });
    if (code === "seq_conflict") this.reopenFromSnapshot();
    else this.reopen();
  }

  /** @internal The connection went: history requests fail, the rest waits for resume. */
  disconnected(): void {
    this.isOpen = false;
    this.rejectWaiters(new Error("disconnected"));
  }

  private rejectWaiters(e: Error): void {
    for (const list of this.revisionWaiters.values()) for (const w of list) w.reject(e);
    this.revisionWaiters.clear();
    for (const w of this.listWaiters) w.reject(e);
    this.listWaiters = [];
    for (const list of this.changesWaiters.values()) for (const w of list) w.reject(e);
    this.changesWaiters.clear();
  }
}

/** A connection to a Tandem server that resumes by itself. */
export class TandemClient {
  /** The client id (canonical, 16 hex digits, once welcomed). */
  clientId: string;
  state: ConnectionState = "connecting";
  /** The signed-in user's id, once welcomed. */
  user = "";
  limits: WireLimits | null = null;
  private ws: SocketLike | null = null;
  private docs = new Map<string, DocHandle>();
  private attempt = 0;
  private timer: ReturnType<typeof setTimeout> | null = null;
  /** Where a cluster node sent us (`moved`), until that connection ends. */
  private redirect: string | null = null;
  /** The server connected to last, and the one before (a `moved` back there waits a bit). */
  private currentUrl: string | null = null;
  private previousUrl: string | null = null;
  private listeners = new Set<(s: ConnectionState) => void>();
  private stopped = false;
  /** The server refused or expired the last token: ask for a fresh one. */
  private tokenRefused = false;
  private readonly opts: ClientOptions;
  private readonly onOnline = () => this.wake();
  private readonly onOffline = () => this.goOffline();

  constructor(opts: ClientOptions) {
    this.opts = opts;
    this.clientId = canonical(opts.clientId ?? storedClientId(opts.storage));
    const w = globalThis as unknown as { addEventListener?: (t: string, f: () => void) => void };
    w.addEventListener?.("online", this.onOnline);
    w.addEventListener?.("offline", this.onOffline);
    this.connect();
  }

  /** Called whenever the connection state changes. */
  onState(f: (s: ConnectionState) => void): () => void {
    this.listeners.add(f);
    return () => this.listeners.delete(f);
  }

  /** Opens (follows) a document. */
  open(id: string, events: DocEvents): DocHandle {
    const existing = this.docs.get(id);
    if (existing) return existing;
    const handle = new DocHandle(this, id, events);
    this.docs.set(id, handle);
    if (this.state === "online") handle.reopen();
    return handle;
  }

  /** Closes the connection for good. */
  close(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    const w = globalThis as unknown as { removeEventListener?: (t: string, f: () => void) => void };
    w.removeEventListener?.("online", this.onOnline);
    w.removeEventListener?.("offline", this.onOffline);
    this.ws?.close(Close.NORMAL);
    this.ws = null;
    this.setState("closed");
  }

  /** Drops the connection now and reconnects (as after a network failure); for tests. */
  dropConnection(): void {
    this.ws?.close(Close.NORMAL, "dropped");
  }

  /** @internal */
  send(msg: ClientMsg): void {
    if (this.ws && this.ws.readyState === 1 && this.state === "online") this.ws.send(JSON.stringify(msg));
  }

  /** @internal */
  forget(id: string): void {
    this.docs.delete(id);
  }

  private setState(s: ConnectionState): void {
    if (this.state === s) return;
    this.state = s;
    for (const f of this.listeners) f(s);
  }

  private url(): string {
    if (this.redirect) return this.redirect;
    if (this.opts.url) return this.opts.url;
    const loc = (globalThis as unknown as { location?: { protocol: string; host: string } }).location;
    if (!loc) throw new Error("no url given and no page to take it from");
    return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
  }

  private async connect(): Promise<void> {
    if (this.stopped) return;
    this.timer = null;
    const online = (globalThis as unknown as { navigator?: { onLine?: boolean } }).navigator?.onLine;
    if (online === false) {
      this.setState("offline");
      return;
    }
    let token: string | null = "";
    try {
      token = this.opts.token ? await this.opts.token(this.tokenRefused ? "expired" : "connect") : "";
    } catch {
      this.retry();
      return;
    }
    if (this.stopped) return;
    if (token === null) {
      this.close();
      return;
    }
    const factory: SocketFactory =
      this.opts.socket ??
      ((url, protocol) => new (globalThis as unknown as { WebSocket: new (u: string, p: string) => SocketLike }).WebSocket(url, protocol));
    let ws: SocketLike;
    try {
      const url = this.url();
      if (url !== this.currentUrl) {
        this.previousUrl = this.currentUrl;
        this.currentUrl = url;
      }
      ws = factory(url, SUBPROTOCOL);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      ws.send(
        JSON.stringify({
          type: "hello",
          protocol: PROTOCOL_VERSION,
          client: this.clientId,
          token,
          name: this.opts.name,
          ...(this.opts.color ? { color: this.opts.color } : {}),
        }),
      );
    };
    ws.onmessage = (ev) => {
      if (this.ws !== ws) return;
      let msg: ServerMsg;
      try {
        msg = JSON.parse(String(ev.data)) as ServerMsg;
      } catch {
        return;
      }
      this.dispatch(msg);
    };
    ws.onerror = () => {};
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      // The node we were sent to is gone: start again from the configured address.
      this.redirect = null;
      for (const d of this.docs.values()) d.disconnected();
      if (this.stopped) return;
      this.tokenRefused = ev.code === Close.UNAUTHORIZED || ev.code === Close.TOKEN_EXPIRED;
      if (ev.code === Close.SUPERSEDED) {
        // Another tab took this client id: never fight it for the document.
        this.setState("superseded");
        return;
      }
      this.retry();
    };
  }

  private dispatch(msg: ServerMsg): void {
    switch (msg.type) {
      case "welcome":
        this.clientId = msg.client;
        this.user = msg.user ?? "";
        this.limits = msg.limits;
        this.attempt = 0;
        this.setState("online");
        for (const d of this.docs.values()) d.reopen();
        return;
      case "token_expiring":
        void this.refreshToken();
        return;
      case "refreshed":
        return;
      case "error":
        if (!msg.doc) return; // connection-level: the close that follows says what to do
        break;
      case "moved":
        this.follow(msg.to);
        return;
      default:
        break;
    }
    const doc = "doc" in msg ? msg.doc : undefined;
    if (doc !== undefined) this.docs.get(doc)?.handle(msg);
  }

  /** A cluster node does not serve a document open here: reconnect to the node that does
   *  (`to`), or, while none does (a failover), shortly through the configured address. Every
   *  open document resumes there as after any reconnect. (One connection serves every
   *  document of the client: documents on different nodes would take turns.) */
  private follow(to: string): void {
    if (this.stopped) return;
    // Sent back where we just came from: the next node has not taken the document yet.
    const back = to !== "" && to === this.previousUrl;
    this.redirect = to || null;
    const ws = this.ws;
    this.ws = null;
    for (const d of this.docs.values()) d.disconnected();
    ws?.close(Close.NORMAL, "moved");
    if (this.timer) clearTimeout(this.timer);
    this.setState("reconnecting");
    const delay = to === "" ? 50 + Math.random() * 150 : back ? 5 + Math.random() * 15 : 0;
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private async refreshToken(): Promise<void> {
    if (!this.opts.token) return;
    try {
      const token = await this.opts.token("refresh");
      if (token) this.send({ type: "refresh", token });
    } catch {
      // The server closes at expiry (4010); the reconnect asks for a token again.
    }
  }

  private retry(): void {
    if (this.stopped || this.timer) return;
    this.setState("reconnecting");
    const { initial, max } = this.opts.backoffMs ?? { initial: 250, max: 10_000 };
    const base = Math.min(max, initial * 2 ** Math.min(this.attempt, 16));
    this.attempt++;
    const delay = base / 2 + Math.random() * (base / 2);
    this.timer = setTimeout(() => void this.connect(), delay);
  }

  private goOffline(): void {
    if (this.stopped) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const ws = this.ws;
    this.ws = null;
    for (const d of this.docs.values()) d.disconnected();
    ws?.close(Close.NORMAL, "offline");
    this.setState("offline");
  }

  private wake(): void {
    if (this.stopped || this.state === "online" || this.state === "superseded") return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.attempt = 0;
    this.setState("connecting");
    void this.connect();
  }
}

function canonical(id: string): string {
  if (!/^[0-9a-fA-F]{1,16}$/.test(id)) throw new Error(`client id ${JSON.stringify(id)} must be 1 to 16 hex digits`);
  return id.toLowerCase().padStart(16, "0");
}

function randomClientId(): string {
  const b = new Uint8Array(8);
  globalThis.crypto.getRandomValues(b);
  return [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
}

function storedClientId(storage: StorageLike | null | undefined): string {
  const s =
    storage === undefined
      ? ((globalThis as unknown as { sessionStorage?: StorageLike }).sessionStorage ?? null)
      : storage;
  const key = "tandem.client";
  const have = s?.getItem(key);
  if (have && /^[0-9a-f]{16}$/.test(have)) return have;
  const id = randomClientId();
  s?.setItem(key, id);
  return id;
}
