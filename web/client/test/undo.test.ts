// Undo, redo, restore and changes through the library: requests keep their place among the
// edits around them (sans I/O), and against a real server an undo takes back only this user's
// change, typing on while it is answered included, across a dropped connection and a reload;
// a restore is an edit everyone sees, and changes name their authors.

import Delta from "quill-delta";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { DocSync } from "../src/doc.js";
import { edit, openEditor, serverDocument, settled, text } from "./editors.js";
import { startServer, until, type Server } from "./server.js";

describe("DocSync", () => {
  it("sends an undo after the edits before it, and holds the edits after it until the answer", () => {
    const s = new DocSync("d", "00000000000000aa");
    expect(s.edit(new Delta().insert("ab"))).toMatchObject({ type: "submit", client_seq: 1 });
    expect(s.edit(new Delta().retain(2).insert("c"))).toBeNull();
    expect(s.request({ type: "undo" })).toBeNull();
    expect(s.edit(new Delta().insert(">"))).toBeNull();
    expect(text(s.view())).toBe(">abc");
    expect(s.ack(1, 1)).toMatchObject({ type: "submit", client_seq: 2, base_rev: 1, delta: { ops: [{ retain: 2 }, { insert: "c" }] } });
    expect(s.ack(2, 2)).toEqual({ type: "undo", doc: "d", client_seq: 3 });
    expect(s.saved()).toBe(false);
    // Someone else types first; then the server's answer (it took "c" back) arrives.
    expect(s.remote({ rev: 3, author: "00000000000000bb", client_seq: 1, delta: { ops: [{ insert: "X" }] } }).next).toBeNull();
    const answer = s.remote({ rev: 4, author: "00000000000000aa", client_seq: 3, delta: { ops: [{ retain: 3 }, { delete: 1 }] } });
    expect(answer.view).toEqual(new Delta().retain(4).delete(1));
    // The edit made after the undo goes now, rebased (after "X": at equal positions the server's op goes first).
    expect(answer.next).toMatchObject({ type: "submit", client_seq: 4, base_rev: 4, delta: { ops: [{ retain: 1 }, { insert: ">" }] } });
    expect(text(s.view())).toBe("X>ab");
  });

  it("moves on past a refused request and forgets one in flight at a resync", () => {
    const s = new DocSync("d", "00000000000000aa");
    expect(s.request({ type: "redo" })).toEqual({ type: "redo", doc: "d", client_seq: 1 });
    expect(s.edit(new Delta().insert("a"))).toBeNull();
    expect(s.refused(7)).toBeNull();
    expect(s.refused(1)).toEqual({ request: { type: "redo" }, next: expect.objectContaining({ type: "submit", client_seq: 2 }) });
    expect(s.ack(2, 1)).toBeNull();
    expect(s.request({ type: "undo" })).toEqual({ type: "undo", doc: "d", client_seq: 3 });
    s.edit(new Delta().retain(1).insert("b"));
    // The history was too old to catch up: a snapshot (which has the undo, or not).
    const r = s.snapshot(9, { ops: [{ insert: "zz" }] }, 3);
    expect(r.next).toMatchObject({ type: "submit", client_seq: 4, base_rev: 9 });
    expect(text(s.view())).toBe("zzb");
  });
});

describe("undo against a real server", () => {
  let server: Server;

  beforeAll(async () => {
    server = await startServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  it("takes back only this user's change, with typing on while it is answered", async () => {
    const doc = "js-undo";
    const a = openEditor(server, doc);
    const b = openEditor(server, doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("Hello"));
    await settled([a, b]);
    edit(b, new Delta().retain(5).insert(" world"));
    await settled([a, b]);
    edit(a, new Delta().insert("Big "));
    edit(b, new Delta().retain(11).insert("!"));
    // Undo, then type on at once: the undo goes first.
    a.doc.undo();
    edit(a, new Delta().retain(a.view.length()).insert(" (a)"));
    await settled([a, b]);
    expect(text(a.view)).toBe("Hello world! (a)");
    expect(b.view).toEqual(a.view);
    // Both of a's remaining steps, then nothing; redo brings the last one back.
    a.doc.undo();
    a.doc.undo();
    await settled([a, b]);
    expect(text(a.view)).toBe(" world!");
    a.doc.undo();
    await until(() => a.nothing.length === 1, 5_000, "nothing to undo");
    expect(a.nothing).toEqual([false]);
    a.doc.undo(true);
    await settled([a, b]);
    expect(text(a.view)).toBe("Hello world!");
    expect(await serverDocument(server, doc)).toEqual(a.view);
    expect(a.errors.concat(b.errors)).toEqual([]);
    a.client.close();
    b.client.close();
  });

  it("keeps the stack across a dropped connection and a reload", async () => {
    const doc = "js-undo-reload";
    const id = "c0ffee";
    // (With `--auth dev` the user is who the client says it is: its name.)
    let a = openEditor(server, doc, { clientId: id, name: "Ada" });
    const b = openEditor(server, doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    for (const w of ["one ", "two ", "three "]) {
      edit(a, new Delta().insert(w));
      await settled([a, b]);
    }
    for (let i = 0; i < 2; i++) {
      // Drop the connection with the undo in flight, at varying moments.
      a.doc.undo();
      await new Promise((r) => setTimeout(r, i));
      a.client.dropConnection();
      await until(() => a.client.state === "online" && a.doc.isOpen && a.doc.sync.saved(), 10_000, "resumed");
      a.doc.undo(true);
      a.doc.undo();
      await settled([a, b]);
    }
    expect(text(a.view)).toBe("one ");
    // A reload: a new page, the tab's client id; what it undid before is redone.
    a.client.close();
    a = openEditor(server, doc, { clientId: id, name: "Ada" });
    await until(() => a.doc.isOpen);
    a.doc.undo(true);
    a.doc.undo(true);
    await settled([a, b]);
    expect([text(a.view), a.nothing, a.errors]).toEqual(["three two one ", [], []]);
    expect(b.view).toEqual(a.view);
    expect(a.errors.concat(b.errors)).toEqual([]);
    a.client.close();
    b.client.close();
  });

  it("restores a revision for everyone and shows what changed, with authors", async () => {
    const doc = "js-restore";
    const a = openEditor(server, doc);
    const b = openEditor(server, doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("Draft one.\n"));
    await settled([a, b]);
    const draft = a.doc.sync.rev;
    edit(b, new Delta().retain(6).delete(3).insert("two"));
    await settled([a, b]);
    const marked = await a.doc.changes(draft, b.doc.sync.rev);
    expect(marked.ops).toEqual([
      { insert: "Draft " },
      { insert: "two", attributes: { tandem_inserted: b.client.clientId } },
      { insert: "one", attributes: { tandem_deleted: b.client.clientId } },
      { insert: ".\n" },
    ]);
    a.doc.restore(draft);
    await settled([a, b]);
    expect(text(b.view)).toBe("Draft one.\n");
    // A revision from the future: refused, and the next edit goes on.
    a.doc.restore(10_000);
    edit(a, new Delta().insert("> "));
    await settled([a, b]);
    expect(text(b.view)).toBe("> Draft one.\n");
    expect(a.errors).toEqual([expect.stringMatching(/^no_such_revision/)]);
    await expect(a.doc.changes(0, 10_000)).rejects.toThrow(/does not exist/);
    a.client.close();
    b.client.close();
  });
});
