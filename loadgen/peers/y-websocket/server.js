// The y-websocket server (the Yjs sync and awareness protocols, one room per URL path:
// ws://HOST:PORT/<document>), in memory (no persistence configured: a conservative comparison
// for Tandem, whose op log fsyncs). GET /healthz answers 200.
//
//   node server.js [--port 19600] [--host 127.0.0.1]
'use strict';
const http = require('http');
const WebSocket = require('ws');
const { setupWSConnection } = require('@y/websocket-server/utils');

function arg(name, dflt) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && process.argv[i + 1] ? process.argv[i + 1] : dflt;
}

const server = http.createServer((req, res) => {
  res.statusCode = req.url === '/healthz' ? 200 : 404;
  res.end(res.statusCode === 200 ? 'ok\n' : 'not found\n');
});
const wss = new WebSocket.Server({ server, maxPayload: 4 << 20 });
wss.on('connection', (ws, req) => {
  ws.on('error', () => {});
  setupWSConnection(ws, req, { gc: true });
});
const port = Number(arg('port', '19600'));
const host = arg('host', '127.0.0.1');
server.listen(port, host, () => console.error(`y-websocket server listening on ws://${host}:${port}/<doc>`));
for (const s of ['SIGINT', 'SIGTERM']) process.on(s, () => process.exit(0));
