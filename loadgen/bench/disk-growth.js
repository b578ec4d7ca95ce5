// Disk growth per byte of ops written (issue 11, item 8): one client writes OPS large inserts
// (each of CHARS chars, acknowledged one at a time) into one document of a running Tandem,
// then prints the bytes of ops sent. Measure the data directory before and after with du.
//
//   NODE_PATH=~/.cache/tandem/peers/sharedb/node_modules node loadgen/bench/disk-growth.js \
//     ws://127.0.0.1:8080/ws [OPS=28] [CHARS=1000000]
"use strict";
const WebSocket = require("ws");

const [url, opsArg, charsArg] = process.argv.slice(2);
const ops = Number(opsArg || 28);
const chars = Number(charsArg || 1000000);
const ws = new WebSocket(url, "tandem.v1.json");
let rev = 0;
let seq = 0;
let len = 0;
let sent = 0;

function next() {
  if (seq === ops) {
    console.log(JSON.stringify({ ops, chars, bytes_sent: sent, rev }));
    ws.close();
    return;
  }
  seq += 1;
  const text = String.fromCharCode(97 + (seq % 26)).repeat(chars);
  const delta = { ops: len ? [{ retain: len }, { insert: text }] : [{ insert: text }] };
  const msg = JSON.stringify({ type: "submit", doc: "growth", base_rev: rev, client_seq: seq, delta });
  sent += Buffer.byteLength(msg);
  ws.send(msg);
}

ws.on("open", () => {
  ws.send(JSON.stringify({ type: "hello", protocol: 1, client: "d15c", token: "", name: "disk" }));
  ws.send(JSON.stringify({ type: "open", doc: "growth" }));
});
ws.on("message", (data) => {
  const m = JSON.parse(data);
  if (m.type === "opened") {
    rev = m.rev;
    next();
  } else if (m.type === "ack") {
    rev = m.rev;
    len += chars;
    next();
  } else if (m.type === "error") {
    console.error(JSON.stringify(m));
    process.exit(1);
  }
});
ws.on("error", (e) => {
  console.error(String(e));
  process.exit(1);
});
