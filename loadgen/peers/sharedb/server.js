// ShareDB 7 with the rich-text type (Quill deltas, the same OT semantics as Tandem), serving
// its own JSON wire protocol over WebSocket on ws://HOST:PORT/ (any path), with ShareDB's
// default in-memory database (nothing durable: a conservative comparison for Tandem, whose
// op log fsyncs). GET /healthz answers 200.
//
//   node server.js [--port 19500] [--host 127.0.0.1]
'use strict';
const http = require('http');
const ShareDB = require('sharedb');
const richText = require('rich-text');
const WebSocket = require('ws');
const WebSocketJSONStream = require('@teamwork/websocket-json-stream');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}

ShareDB.types.register(richText.type);
const backend = new ShareDB();
const server = http.createServer((req, res) => {
  res.statusCode = req.url === '/healthz' ? 200 : 404;
  res.end(res.statusCode === 200 ? 'ok\n' : 'not found\n');
});
const wss = new WebSocket.Server({ server, maxPayload: 4 << 20 });
wss.on('connection', (ws) => {
  ws.on('error', () => {});
  backend.listen(new WebSocketJSONStream(ws));
});
const port = Number(arg('port', '19500'));
const host = arg('host', '127.0.0.1');
server.listen(port, host, () => console.error(`sharedb ${require('sharedb/package.json').version} listening on ws://${host}:${port}/`));
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(0));
