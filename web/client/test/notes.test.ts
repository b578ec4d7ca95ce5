// Comments and named versions through the library: a comment's range keeps to its text while
// it waits (sans I/O), and against a real server two clients commenting and typing around the
// same anchor see the server's anchors, astral text included; refusals reject with the
// server's code; a reload gets the threads back.

import Delta from "quill-delta";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { DocSync } from "../src/doc.js";
import { NoteError } from "../src/index.js";
import { Notes, transformAnchor } from "../src/notes.js";
import { edit, openEditor, settled, text, type Editor } from "./editors.js";
import { startServer, until, type Server } from "./server.js";

describe("DocSync notes", () => {
  it("moves a waiting comment's range through what comes before it, and sends it in scalar units", () => {
    const s = new DocSync("d", "00000000000000aa");
    expect(s.edit(new Delta().insert("😀 hello world"))).toMatchObject({ type: "submit", client_seq: 1 });
    // "world" in the view (UTF-16: the emoji is 2 units), asked while the edit is in flight.
    expect(s.request({ type: "note", change: { action: "comment", start: 0, end: 0, text: "hm" }, range: { start: 9, end: 14 } })).toBeNull();
    // Someone types at the very start first.
    s.remote({ rev: 1, author: "00000000000000bb", client_seq: 1, delta: { ops: [{ insert: ">" }] } });
    const sent = s.ack(1, 2);
    // Server positions: ">😀 hello world": "world" is scalars 9..14.
    expect(sent).toEqual({
      type: "note",
      doc: "d",
      rev: 2,
      client_seq: 2,
      change: { action: "comment", start: 9, end: 14, text: "hm" },
    });
    const answer = s.noted(3, "00000000000000aa", 2, { user: "ada", name: "Ada", time_ms: 1, change: { action: "comment", start: 9, end: 14, text: "hm" } });
    expect(answer.applied).toBe(true);
    expect(answer.answered).toMatchObject({ type: "note" });
    expect(s.saved()).toBe(true);
    // Typing inside it, in the view: the thread grows in view units while unacknowledged.
    s.edit(new Delta().retain(12).insert("ii"));
    const t = s.threadsInView()[0]!;
    expect([t.index, t.length, text(s.view()).slice(t.index, t.index + t.length)]).toEqual([10, 7, "woiirld"]);
  });

  it("moves anchors like the server: inserts at the ends stay out, a thread whose text goes is orphaned", () => {
    expect(transformAnchor(2, 5, false, { ops: [{ retain: 2 }, { insert: "ab" }] })).toEqual([4, 7]);
    expect(transformAnchor(2, 5, false, { ops: [{ retain: 5 }, { insert: "ab" }] })).toEqual([2, 5]);
    expect(transformAnchor(2, 5, false, { ops: [{ retain: 3 }, { insert: "😀" }] })).toEqual([2, 6]);
    const n = new Notes();
    n.apply({ user: "u", name: "U", time_ms: 1, change: { action: "comment", start: 2, end: 5, text: "x" } }, 4);
    n.transform({ ops: [{ retain: 1 }, { delete: 5 }] });
    expect(n.threads.get(4)).toMatchObject({ start: 1, end: 1, orphaned: true });
  });
});

describe("comments against a real server", () => {
  let server: Server;

  beforeAll(async () => {
    server = await startServer();
  });

  afterAll(async () => {
    await server?.stop();
  });

  const notesOf = (e: Editor) => structuredClone(e.doc.sync.notes.toJSON());

  it("two clients comment and type around the same anchor and agree with the server", async () => {
    const doc = "js-notes";
    const a = openEditor(server, doc, { name: "Ada" });
    const b = openEditor(server, doc, { name: "Bob" });
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("The 🦊 quick brown fox\n"));
    await settled([a, b]);
    // Ada comments on "quick brown" while Bob types before it and inside it.
    const quick = text(a.view).indexOf("quick");
    const thread = a.doc.comment({ index: quick, length: "quick brown".length }, "which fox?");
    edit(b, new Delta().insert("🎉 "));
    edit(b, new Delta().retain(text(b.view).indexOf("brown")).insert("very "));
    const id = await thread;
    await settled([a, b]);
    for (const e of [a, b]) {
      const t = e.doc.threads()[0]!;
      expect(t.id).toBe(id);
      expect(text(e.view).slice(t.index, t.index + t.length)).toBe("quick very brown");
    }
    // Replies and a resolve; then a third client (a reload) gets the same threads.
    await b.doc.reply(id, "the red one 🦊");
    await a.doc.resolve(id);
    await a.doc.nameVersion(1, "First line");
    await settled([a, b]);
    expect(notesOf(b)).toEqual(notesOf(a));
    const c = openEditor(server, doc, { name: "Cy" });
    await until(() => c.doc.isOpen && c.doc.threads().length === 1);
    await settled([a, b, c]);
    expect(notesOf(c)).toEqual(notesOf(a));
    expect(c.doc.threads()[0]!.messages.map((m) => m.text)).toEqual(["which fox?", "the red one 🦊"]);
    expect(c.doc.versions()).toMatchObject([{ rev: 1, name: "First line", user_name: "Ada" }]);
    // Refusals reject with the server's code and leave the document open.
    await expect(a.doc.resolve(id)).rejects.toMatchObject({ code: "invalid_note" });
    await expect(b.doc.editMessage(id, id, "mine now")).rejects.toBeInstanceOf(NoteError);
    await expect(a.doc.reply(12345, "hi")).rejects.toMatchObject({ code: "not_found" });
    edit(a, new Delta().insert("!"));
    await settled([a, b, c]);
    expect(a.errors.concat(b.errors, c.errors)).toEqual([]);
    for (const e of [a, b, c]) e.client.close();
  });

  it("sends a comment again after a dropped connection, once", async () => {
    const doc = "js-notes-drop";
    const a = openEditor(server, doc, { name: "Ada" });
    const b = openEditor(server, doc, { name: "Bob" });
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("abcdef\n"));
    await settled([a, b]);
    for (let i = 0; i < 3; i++) {
      const made = a.doc.comment({ index: 1, length: 2 }, `note ${i}`);
      await new Promise((r) => setTimeout(r, i));
      a.client.dropConnection();
      edit(b, new Delta().insert("x"));
      await made;
      await until(() => a.client.state === "online" && a.doc.isOpen, 10_000, "resumed");
      await settled([a, b]);
    }
    const threads = a.doc.threads().sort((x, y) => x.id - y.id);
    expect(threads.map((t) => t.messages[0]!.text)).toEqual(["note 0", "note 1", "note 2"]);
    expect(notesOf(b)).toEqual(notesOf(a));
    a.client.close();
    b.client.close();
  });
});
