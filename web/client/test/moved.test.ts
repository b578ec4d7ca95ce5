// A cluster node that does not serve a document answers `moved` with the node that does:
// the client reconnects there and resumes, its unacknowledged edit resent once with its
// client_seq; an empty `to` (no node serves it yet) retries through the configured address.
// Two scripted nodes stand in for a cluster (the Rust tests run real ones).

import Delta from "quill-delta";
import { expect, it } from "vitest";

import { TandemClient, type SocketLike } from "../src/index.js";
import { until } from "./server.js";

const limits = {
  max_message_bytes: 1 << 20,
  max_open_docs: 64,
  max_messages_per_s: 200,
  presence_interval_ms: 50,
  max_insert_chars: 100_000,
  max_delta_ops: 10_000,
  max_document_chars: 1_000_000,
  history_ops: 10_000,
};

interface Sent {
  url: string;
  msg: { type: string; [k: string]: unknown };
}

/** A scripted node: `answer` decides the reply to each message. */
function fakeSocket(url: string, sent: Sent[], answer: (url: string, msg: Sent["msg"]) => object[]): SocketLike {
  const ws: SocketLike = {
    readyState: 0,
    onopen: null,
    onclose: null,
    onmessage: null,
    onerror: null,
    send(data: string) {
      const msg = JSON.parse(data) as Sent["msg"];
      sent.push({ url, msg });
      for (const reply of answer(url, msg)) {
        setTimeout(() => ws.onmessage?.({ data: JSON.stringify(reply) }), 0);
      }
    },
    close() {
      ws.readyState = 3;
    },
  };
  setTimeout(() => {
    ws.readyState = 1;
    ws.onopen?.({});
  }, 0);
  return ws;
}

it("follows a moved document to its node and resumes there", async () => {
  const sent: Sent[] = [];
  let emptyFirst = true;
  const answer = (url: string, msg: Sent["msg"]): object[] => {
    if (msg.type === "hello") return [{ type: "welcome", protocol: 1, session: "1", client: msg.client, limits }];
    if (msg.type === "open" && url === "ws://lb/ws") {
      // First nobody serves it (a failover), then node b does.
      const to = emptyFirst ? "" : "ws://node-b/ws";
      emptyFirst = false;
      return [{ type: "moved", doc: "d", to }];
    }
    if (msg.type === "open") {
      return [
        { type: "opened", doc: "d", rev: 3, snapshot: [{ insert: "abc\n" }], online: [], role: "editor" },
        { type: "notes", doc: "d", rev: 3, notes: { threads: [], versions: [] } },
      ];
    }
    if (msg.type === "submit" && url === "ws://node-b/ws") {
      return [{ type: "ack", doc: "d", client_seq: msg.client_seq, rev: 4 }];
    }
    return [];
  };
  const client = new TandemClient({
    url: "ws://lb/ws",
    name: "ada",
    clientId: "a1",
    storage: null,
    socket: (url) => fakeSocket(url, sent, answer),
    backoffMs: { initial: 10, max: 50 },
  });
  const doc = client.open("d", {});
  await until(() => doc.isOpen, 5_000, "open on node b");
  const urls = sent.filter((s) => s.msg.type === "open").map((s) => s.url);
  expect(urls).toEqual(["ws://lb/ws", "ws://lb/ws", "ws://node-b/ws"]);
  doc.edit(new Delta().retain(3).insert("!"));
  await until(() => doc.sync.saved(), 5_000, "acked by node b");
  const submits = sent.filter((s) => s.msg.type === "submit");
  expect(submits.map((s) => s.url)).toEqual(["ws://node-b/ws"]);
  client.close();
});
