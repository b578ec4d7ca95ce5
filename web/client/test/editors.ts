// Clients with a document open, each keeping its view as a delta the way an editor does, for
// the tests against a real server.

import Delta from "quill-delta";

import type { ClientOptions, DocHandle, Selection, TandemClient } from "../src/index.js";
import { client, until, type Server } from "./server.js";

export interface Editor {
  client: TandemClient;
  doc: DocHandle;
  view: Delta;
  presence: Map<string, Selection | null>;
  errors: string[];
  /** `true` for each redo, `false` for each undo, that found nothing to do. */
  nothing: boolean[];
}

/** A client of `server` with `docId` open. */
export function openEditor(server: Server, docId: string, opts: Partial<ClientOptions> = {}): Editor {
  const c = client(server, opts);
  const e: Editor = { client: c, doc: null as unknown as DocHandle, view: new Delta(), presence: new Map(), errors: [], nothing: [] };
  e.doc = c.open(docId, {
    reset: (content) => (e.view = content),
    change: (delta) => (e.view = e.view.compose(delta)),
    presence: (who, sel) => e.presence.set(who, sel),
    error: (code, message) => e.errors.push(`${code}: ${message}`),
    nothingToUndo: (redo) => e.nothing.push(redo),
  });
  return e;
}

/** Edits the view as a user would, and tells the library. */
export function edit(e: Editor, delta: Delta): void {
  e.view = e.view.compose(delta);
  e.doc.edit(delta);
}

export function text(d: Delta): string {
  return d.ops.map((op) => (typeof op.insert === "string" ? op.insert : "\u25a1")).join("");
}

/** Waits until every edit is acknowledged and every editor is at the same revision. */
export async function settled(editors: Editor[]): Promise<void> {
  await until(() => editors.every((e) => e.doc.isOpen && e.doc.sync.saved()), 20_000, "every edit acknowledged");
  await until(() => new Set(editors.map((e) => e.doc.sync.rev)).size === 1, 20_000, "the same revision everywhere");
}

/** The server's document, read by a fresh client. */
export async function serverDocument(server: Server, docId: string): Promise<Delta> {
  const fresh = openEditor(server, docId);
  await until(() => fresh.doc.isOpen, 10_000, "a fresh open");
  const view = fresh.view;
  fresh.client.close();
  return view;
}
