// The library against a real `tandem serve`: convergence under random concurrent edits,
// reconnects that resubmit exactly once, UTF-16 conversions the server agrees with, and
// presence on the right characters.

import Delta from "quill-delta";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { edit, openEditor, serverDocument, settled, text, type Editor } from "./editors.js";
import { startServer, until, type Server } from "./server.js";

let server: Server;

beforeAll(async () => {
  server = await startServer();
});

afterAll(async () => {
  await server?.stop();
});

const editor = (docId: string): Editor => openEditor(server, docId);
const serverDoc = (docId: string): Promise<Delta> => serverDocument(server, docId);

const SAMPLES = ["a", "bc", "😀", "👨‍👩‍👧", "🇫🇷", "e\u0301", "𐌰", " ", "\n", "日本"];

function randomEdit(view: Delta, rnd: () => number): Delta {
  const len = view.length();
  const at = Math.floor(rnd() * (len + 1));
  // Never split a surrogate pair: step back to a character boundary.
  const units = text(view);
  const pos = at > 0 && at < units.length && /[\udc00-\udfff]/.test(units[at]!) ? at - 1 : at;
  const r = rnd();
  if (r < 0.6 || len === 0) {
    const s = SAMPLES[Math.floor(rnd() * SAMPLES.length)]!;
    return new Delta().retain(pos).insert(s, rnd() < 0.2 ? { bold: true } : undefined);
  }
  const rest = len - pos;
  if (rest === 0) return new Delta().retain(pos).insert("z");
  let n = Math.min(rest, 1 + Math.floor(rnd() * 3));
  // Keep whole characters.
  const end = pos + n;
  if (end < units.length && /[\udc00-\udfff]/.test(units[end]!)) n += 1;
  if (r < 0.85) return new Delta().retain(pos).delete(n);
  return new Delta().retain(pos).retain(n, { italic: rnd() < 0.5 ? true : null });
}

function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

describe("against a real server", () => {
  it("text with emoji, ZWJ sequences, flags and combining marks arrives exactly", async () => {
    const doc = "js-utf16";
    const a = editor(doc);
    const b = editor(doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("x👨‍👩‍👧y🇫🇷e\u0301𐌰\n"));
    await settled([a, b]);
    // Edits after astral characters: the server must count them as we do.
    edit(b, new Delta().retain(14).insert("!", { bold: true })); // after the flag: 1 + 8 + 1 + 4 units
    edit(a, new Delta().retain(1).delete(8)); // the family, 8 units
    await settled([a, b]);
    expect(a.view).toEqual(b.view);
    expect(text(a.view)).toBe("xy🇫🇷!e\u0301𐌰\n");
    expect(await serverDoc(doc)).toEqual(a.view);
    expect(a.errors.concat(b.errors)).toEqual([]);
    a.client.close();
    b.client.close();
  });

  it("random concurrent edits by many clients converge", async () => {
    const doc = "js-random";
    const editors = Array.from({ length: 5 }, () => editor(doc));
    await until(() => editors.every((e) => e.doc.isOpen));
    const rnd = seeded(42);
    for (let round = 0; round < 60; round++) {
      for (const e of editors) {
        if (rnd() < 0.7) edit(e, randomEdit(e.view, rnd));
      }
      await new Promise((r) => setTimeout(r, rnd() * 8));
    }
    await settled(editors);
    const want = await serverDoc(doc);
    for (const e of editors) expect(e.view).toEqual(want);
    expect(editors.flatMap((e) => e.errors)).toEqual([]);
    for (const e of editors) e.client.close();
  });

  it("a reconnect resubmits the op in flight exactly once", async () => {
    const doc = "js-reconnect";
    const a = editor(doc);
    const b = editor(doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    for (let i = 0; i < 20; i++) {
      edit(a, new Delta().retain(a.view.length()).insert(`<${i}>`));
      // Drop the connection with the op in flight, at varying moments.
      await new Promise((r) => setTimeout(r, i % 4));
      a.client.dropConnection();
      if (i % 3 === 0) edit(a, new Delta().retain(a.view.length()).insert("+"));
      await until(() => a.client.state === "online" && a.doc.isOpen && a.doc.sync.saved(), 10_000, "resumed");
    }
    await settled([a, b]);
    const want = Array.from({ length: 20 }, (_, i) => `<${i}>` + (i % 3 === 0 ? "+" : "")).join("");
    expect(text(a.view)).toBe(want);
    expect(b.view).toEqual(a.view);
    expect(await serverDoc(doc)).toEqual(a.view);
    a.client.close();
    b.client.close();
  });

  it("edits made while disconnected are kept and sent once back", async () => {
    const doc = "js-offline";
    const a = editor(doc);
    const b = editor(doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("start\n"));
    await settled([a, b]);
    // Take a's server away for a while: stop its reconnects by keeping it dropping.
    a.client.dropConnection();
    edit(a, new Delta().retain(5).insert(" A1"));
    edit(b, new Delta().insert("B "));
    edit(a, new Delta().retain(a.view.length() - 1).insert(" A2"));
    await settled([a, b]);
    expect(text(a.view)).toBe("B start A1 A2\n");
    expect(b.view).toEqual(a.view);
    a.client.close();
    b.client.close();
  });

  it("presence lands on the right characters", async () => {
    const doc = "js-presence";
    const a = editor(doc);
    const b = editor(doc);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("😀😀abc👨‍👩‍👧def\n"));
    await settled([a, b]);
    // a's caret after "😀😀ab" (6 units), then a selection over the family (8 units).
    a.doc.select({ anchor: 6, head: 6 });
    await until(() => b.presence.get(a.client.clientId)?.head === 6, 5_000, "b sees a's caret");
    a.doc.select({ anchor: 7, head: 15 });
    await until(() => b.presence.get(a.client.clientId)?.anchor === 7, 5_000, "b sees a's selection");
    expect(b.presence.get(a.client.clientId)).toEqual({ anchor: 7, head: 15 });
    // b types before it; a sees that and selects the family where it now is (4 units on).
    edit(b, new Delta().insert("🇫🇷"));
    await until(() => text(a.view).startsWith("🇫🇷"), 5_000, "a sees b's flag");
    // b types again, and a's selection arrives while that edit may still be in flight: b
    // moves it through its own unacknowledged edit.
    edit(b, new Delta().insert("Z"));
    a.doc.select({ anchor: 11, head: 19 });
    await until(() => b.presence.get(a.client.clientId)?.anchor === 12, 5_000, "b sees the moved selection");
    expect(b.presence.get(a.client.clientId)).toEqual({ anchor: 12, head: 20 });
    expect(text(b.view).slice(12, 20)).toBe("👨‍👩‍👧");
    a.client.close();
    b.client.close();
  });
});
