// A client away for longer than the server's history window: its `open` with `from_rev`
// gets a snapshot instead of the ops missed, and its unacknowledged edits (the op in flight
// when the connection dropped, and edits made while away) are rebased onto it, each applied
// exactly once (`last_seq` says whether the op in flight made it).

import Delta from "quill-delta";
import { afterAll, beforeAll, expect, it } from "vitest";

import type { DocHandle, TandemClient } from "../src/index.js";
import { client, configFile, nodeSocket, startServer, until, type Server } from "./server.js";

let server: Server;

beforeAll(async () => {
  // Four ops of history in memory and no op log to read older ones from: a client five ops
  // behind resyncs from a snapshot.
  const cfg = configFile('[server.limits]\nhistory_ops = 4\n\n[server.storage]\noplog = "none"\n');
  server = await startServer(["--auth", "dev", "--config", cfg]);
});

afterAll(async () => {
  await server?.stop();
});

interface Editor {
  client: TandemClient;
  doc: DocHandle;
  view: Delta;
  opened: number;
  /** How each `opened` came: "snapshot" or "ops". */
  openings: string[];
}

function editor(docId: string, blocked?: () => boolean): Editor {
  const openings: string[] = [];
  const c = client(server, {
    socket: (url, p) => {
      if (blocked?.()) throw new Error("offline");
      const ws = nodeSocket(url, p);
      (ws as unknown as { on(ev: string, f: (data: unknown) => void): void }).on("message", (data) => {
        const m = JSON.parse(String(data)) as { type: string; snapshot?: unknown };
        if (m.type === "opened") openings.push(m.snapshot ? "snapshot" : "ops");
      });
      return ws;
    },
  });
  const e: Editor = { client: c, doc: null as unknown as DocHandle, view: new Delta(), opened: 0, openings };
  e.doc = c.open(docId, {
    reset: (d) => (e.view = d),
    change: (d) => (e.view = e.view.compose(d)),
    opened: () => e.opened++,
  });
  return e;
}

function edit(e: Editor, d: Delta): void {
  e.view = e.view.compose(d);
  e.doc.edit(d);
}

const text = (d: Delta) => d.ops.map((o) => (typeof o.insert === "string" ? o.insert : "#")).join("");

for (const inflight of [false, true]) {
  it(`rebases ${inflight ? "the op in flight and " : ""}edits made away onto a snapshot, once each`, async () => {
    const id = `resync-${inflight}`;
    let blocked = false;
    const a = editor(id, () => blocked);
    const b = editor(id);
    await until(() => a.doc.isOpen && b.doc.isOpen);
    edit(a, new Delta().insert("base\n"));
    await until(() => a.doc.sync.saved() && b.doc.sync.rev === a.doc.sync.rev, 5_000, "base everywhere");
    if (inflight) {
      // An edit sent, then the connection gone at once: in or not, the snapshot says.
      edit(a, new Delta().retain(4).insert(" A0"));
    }
    blocked = true;
    a.client.dropConnection();
    edit(a, new Delta().insert("A1 "));
    // Six ops, one at a time (edits made while one is in flight would compose into one).
    for (let k = 0; k < 6; k++) {
      edit(b, new Delta().retain(b.view.length() - 1).insert(` B${k}`));
      await until(() => b.doc.sync.saved(), 5_000, "b saved");
    }
    const opensBefore = a.opened;
    blocked = false;
    await until(() => a.opened > opensBefore && a.doc.sync.saved() && a.doc.sync.rev === b.doc.sync.rev, 10_000, "a back and saved");
    await until(() => b.doc.sync.rev === a.doc.sync.rev && b.doc.sync.saved(), 5_000, "b has a's edits");
    expect(a.view).toEqual(b.view);
    // The reconnect's open came as a snapshot: the history no longer reached a's revision.
    expect(a.openings.at(-1), `${a.openings} rev ${a.doc.sync.rev}`).toBe("snapshot");
    const t = text(a.view);
    expect(t.split("A1 ").length - 1).toBe(1);
    if (inflight) expect(t.split(" A0").length - 1).toBe(1);
    for (let k = 0; k < 6; k++) expect(t).toContain(` B${k}`);
    a.client.close();
    b.client.close();
  });
}
