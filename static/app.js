// threadchat's page: one WebSocket to /ws, JSON messages with a "type" field.
// Text from the network is only ever inserted with textContent, never innerHTML.
"use strict";

const els = {
  status: document.getElementById("status"),
  messages: document.getElementById("messages"),
  sendForm: document.getElementById("send-form"),
  text: document.getElementById("text"),
  send: document.getElementById("send"),
  nameForm: document.getElementById("name-form"),
  name: document.getElementById("name"),
};

// Reconnect delays: exponential from 0.5 s up to 30 s, with "full jitter" (a random delay
// between 0 and the cap) so that a restarted server is not hit by every page at once.
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;

let ws = null;
let myId = null;
let attempt = 0;
let wsUrl = null;

function setStatus(state, label) {
  els.status.className = "status " + state;
  els.status.textContent = label;
  els.send.disabled = state !== "connected";
}

function addLine(kind, parts) {
  const li = document.createElement("li");
  li.className = kind;
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    li.appendChild(span);
  }
  const atBottom = els.messages.parentElement.scrollHeight - els.messages.parentElement.scrollTop
    - els.messages.parentElement.clientHeight < 40;
  els.messages.appendChild(li);
  if (atBottom) li.scrollIntoView({ block: "end" });
  return li;
}

function timeOf(ts) {
  const d = typeof ts === "number" ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function notice(text) {
  addLine("notice", [["text", text]]);
}

function handle(event) {
  switch (event.type) {
    case "welcome":
      myId = event.id;
      notice(`Connected as ${event.name}.`);
      if (els.name.value.trim() && els.name.value.trim() !== event.name) {
        sendJson({ type: "name", name: els.name.value.trim() });
      } else {
        els.name.value = event.name;
      }
      break;
    case "message": {
      const li = addLine(event.id === myId ? "message mine" : "message", [
        ["time", timeOf(event.ts)], ["who", event.name + ":"], ["text", event.text],
      ]);
      li.dataset.seq = event.seq;
      break;
    }
    case "join":
      notice(`${event.name} joined.`);
      break;
    case "leave":
      notice(`${event.name} left.`);
      break;
    case "name":
      notice(`${event.old} is now ${event.name}.`);
      if (event.id === myId) els.name.value = event.name;
      break;
    case "error":
      addLine("error", [["text", "Error: " + event.error]]);
      break;
    default:
      break; // newer servers may send more types; ignore them
  }
}

function sendJson(obj) {
  if (ws && ws.readyState === WebSocket.OPEN) {
    ws.send(JSON.stringify(obj));
    return true;
  }
  return false;
}

async function fetchConfig() {
  const resp = await fetch("/api/config", { cache: "no-store" });
  if (!resp.ok) throw new Error("config: HTTP " + resp.status);
  return resp.json();
}

async function connect() {
  setStatus("connecting", "connecting…");
  try {
    if (!wsUrl) wsUrl = (await fetchConfig()).ws_url;
  } catch (e) {
    scheduleReconnect();
    return;
  }
  const sock = new WebSocket(wsUrl);
  ws = sock;
  sock.onopen = () => {
    attempt = 0;
    setStatus("connected", "connected");
  };
  sock.onmessage = (msg) => {
    let event;
    try {
      event = JSON.parse(msg.data);
    } catch {
      return;
    }
    handle(event);
  };
  sock.onclose = (ev) => {
    if (ws !== sock) return;
    ws = null;
    const why = ev.code === 1000 || ev.code === 1005 ? "" : ` (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
    notice("Disconnected" + why + ".");
    scheduleReconnect();
  };
}

function scheduleReconnect() {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  const delay = Math.max(BACKOFF_MIN_MS / 2, Math.random() * cap);
  attempt += 1;
  setStatus("disconnected", `disconnected, retrying in ${Math.ceil(delay / 1000)} s`);
  setTimeout(connect, delay);
}

els.sendForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value;
  if (!text.trim()) return;
  if (sendJson({ type: "message", text })) els.text.value = "";
});

els.nameForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = els.name.value.trim();
  if (name) sendJson({ type: "name", name });
});

connect();
