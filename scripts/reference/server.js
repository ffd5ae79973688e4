// The reference: a chat server written the way the Node `ws` + http tutorials write it.
// /ws broadcasts every text message to every open client; a heartbeat pings every 30 s and
// terminates clients that did not answer; maxPayload caps messages at 64 KiB.
//
// Usage: node server.js [PORT]   (0 = any free port). Prints "ws listening on ws://ADDR".
"use strict";
const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.argv[2] || 0);
const server = http.createServer((req, res) => {
  res.writeHead(200, { "Content-Type": "text/plain" });
  res.end("ok\n");
});
const wss = new WebSocketServer({ server, path: "/ws", maxPayload: 64 * 1024 });

wss.on("connection", (ws) => {
  ws.isAlive = true;
  ws.on("pong", () => { ws.isAlive = true; });
  ws.on("error", () => {});
  ws.on("message", (data, isBinary) => {
    wss.clients.forEach((client) => {
      if (client.readyState === WebSocket.OPEN) {
        client.send(data, { binary: isBinary });
      }
    });
  });
});

const interval = setInterval(() => {
  wss.clients.forEach((ws) => {
    if (ws.isAlive === false) return ws.terminate();
    ws.isAlive = false;
    ws.ping();
  });
}, 30000);
wss.on("close", () => clearInterval(interval));

server.listen(port, "127.0.0.1", () => {
  const a = server.address();
  console.log(`ws listening on ws://${a.address}:${a.port}`);
});
process.on("SIGINT", () => process.exit(0));
process.on("SIGTERM", () => process.exit(0));
