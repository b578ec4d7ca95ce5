// A document's notes (comment threads and named versions) as the server keeps them, sans I/O:
// the same rules as the engine's `notes.rs`. Positions here are Unicode scalar values, as on
// the wire; anchors move through every op in the server's order, so every client has the
// server's anchors.

import type { WireDelta } from "./protocol.js";

/** A change to the notes, as `note` sends it (a comment's range in scalar units). */
export type NoteChange =
  | { action: "comment"; start: number; end: number; text: string; mentions?: string[] }
  | { action: "reply"; thread: number; text: string; mentions?: string[] }
  | { action: "edit"; thread: number; message: number; text: string; mentions?: string[] }
  | { action: "delete"; thread: number; message: number }
  | { action: "resolve" | "reopen"; thread: number }
  | { action: "name_version"; rev: number; name: string }
  | { action: "unname_version"; rev: number };

/** A change as committed (`noted`): who made it and when. */
export interface Note {
  user: string;
  name: string;
  time_ms: number;
  change: NoteChange;
}

export interface Message {
  id: number;
  user: string;
  name: string;
  text: string;
  mentions?: string[];
  created_ms: number;
  edited_ms?: number;
}

export interface Thread {
  id: number;
  start: number;
  end: number;
  orphaned?: boolean;
  resolved_by?: string;
  messages: Message[];
}

export interface NamedVersion {
  rev: number;
  name: string;
  user: string;
  user_name: string;
  time_ms: number;
}

export interface NotesJson {
  threads: Thread[];
  versions: NamedVersion[];
}

function scalarLen(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0xd800 || c > 0xdbff) n++;
  }
  return n;
}

/** `Delta.transformPosition` over a wire delta (scalar units): with `priority`, an insert
 *  exactly at `index` does not push it. */
export function transformScalarPosition(delta: WireDelta, index: number, priority: boolean): number {
  let offset = 0;
  for (const op of delta.ops) {
    if (offset > index) break;
    if (op.delete !== undefined) {
      index -= Math.min(op.delete, index - offset);
      continue;
    }
    const len = op.insert !== undefined ? (typeof op.insert === "string" ? scalarLen(op.insert) : 1) : (op.retain as number);
    if (op.insert !== undefined && (offset < index || !priority)) index += len;
    offset += len;
  }
  return index;
}

/** A thread's anchor moved through an op (the engine's `transform_anchor`). */
export function transformAnchor(start: number, end: number, orphaned: boolean, delta: WireDelta): [number, number] {
  const s = transformScalarPosition(delta, start, false);
  if (orphaned) return [s, s];
  return [s, Math.max(s, transformScalarPosition(delta, end, true))];
}

/** The threads and named versions of a document at one revision. */
export class Notes {
  threads = new Map<number, Thread>();
  versions = new Map<number, NamedVersion>();

  static from(json: NotesJson): Notes {
    const n = new Notes();
    for (const t of json.threads) n.threads.set(t.id, t);
    for (const v of json.versions) n.versions.set(v.rev, v);
    return n;
  }

  /** Moves every anchor through an op (scalar units). */
  transform(delta: WireDelta): void {
    if (delta.ops.length === 0) return;
    for (const t of this.threads.values()) {
      [t.start, t.end] = transformAnchor(t.start, t.end, !!t.orphaned, delta);
      if (t.start === t.end) t.orphaned = true;
    }
  }

  /** Applies a committed note (revision `rev`: ids are revisions). */
  apply(note: Note, rev: number): void {
    const c = note.change;
    const message = (text: string, mentions?: string[]): Message => ({
      id: rev,
      user: note.user,
      name: note.name,
      text,
      ...(mentions?.length ? { mentions } : {}),
      created_ms: note.time_ms,
    });
    switch (c.action) {
      case "comment":
        this.threads.set(rev, { id: rev, start: c.start, end: c.end, messages: [message(c.text, c.mentions)] });
        break;
      case "reply":
        this.threads.get(c.thread)?.messages.push(message(c.text, c.mentions));
        break;
      case "edit": {
        const m = this.threads.get(c.thread)?.messages.find((m) => m.id === c.message);
        if (m) {
          m.text = c.text;
          if (c.mentions?.length) m.mentions = c.mentions;
          else delete m.mentions;
          m.edited_ms = note.time_ms;
        }
        break;
      }
      case "delete": {
        const t = this.threads.get(c.thread);
        if (!t) break;
        if (t.messages[0]?.id === c.message) this.threads.delete(c.thread);
        else t.messages = t.messages.filter((m) => m.id !== c.message);
        break;
      }
      case "resolve": {
        const t = this.threads.get(c.thread);
        if (t) t.resolved_by = note.user;
        break;
      }
      case "reopen": {
        const t = this.threads.get(c.thread);
        if (t) delete t.resolved_by;
        break;
      }
      case "name_version":
        this.versions.set(c.rev, { rev: c.rev, name: c.name, user: note.user, user_name: note.name, time_ms: note.time_ms });
        break;
      case "unname_version":
        this.versions.delete(c.rev);
        break;
    }
  }

  toJSON(): NotesJson {
    return {
      threads: [...this.threads.values()].sort((a, b) => a.id - b.id),
      versions: [...this.versions.values()].sort((a, b) => a.rev - b.rev),
    };
  }
}
