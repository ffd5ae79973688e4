// threadchat's page, its connection: the WebSocket to /ws, opened with a one-time ticket
// when the server wants a token, presenting the guest identity, resuming every room it was
// in, and reconnecting with backoff. Loaded before app.js, whose handle() gets every event.

// When the server requires a token, the page never puts it in a WebSocket URL: it keeps it
// in sessionStorage (gone when the tab closes) and trades it for a one-time ticket (valid
// 30 s, single use, bound to this address) before every connection attempt.
const TOKEN_KEY = "threadchat_token";
let auth = null;

// Who this page is, when the server has no JWT for it: a guest identity the server issued
// (its welcome's `identity`), kept in localStorage and presented again on every connection,
// so a reload or another tab is the same user with the same direct messages. It travels
// as the `threadchat_identity` cookie (SameSite=Strict), never in a URL that logs keep,
// unless the WebSocket is on another host (`--public-ws-url`), which no cookie reaches.
const IDENTITY_KEY = "threadchat_identity";

// Reconnect delays: exponential from 0.5 s up to 30 s, with "full jitter" (a random delay
// between 0 and the cap) so that a restarted server is not hit by every page at once.
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 30000;

let ws = null;
let attempt = 0;
let wsUrl = null;

async function fetchConfig() {
  const resp = await fetch("/api/config", { cache: "no-store" });
  if (!resp.ok) throw new Error("config: HTTP " + resp.status);
  return resp.json();
}

// After the first connection, every (re)connect resumes every room we were in (a room not
// entered yet is not resumed from 0: that would replay its whole history; it gets its last
// page instead).
function connectUrl(ticket) {
  const params = [];
  const entered = [...rooms].filter(([, st]) => st.entered);
  if (entered.length > 0) {
    params.push("resume=" + entered.map(([room, st]) => `${room}:${st.lastSeq}`).join(","));
  }
  if (ticket) params.push("ticket=" + encodeURIComponent(ticket));
  const identity = localStorage.getItem(IDENTITY_KEY);
  if (identity && new URL(wsUrl, location.href).hostname === location.hostname) {
    setIdentityCookie(identity, 365 * 86400);
  } else if (identity) {
    params.push("identity=" + encodeURIComponent(identity));
  }
  if (params.length === 0) return wsUrl;
  return wsUrl + (wsUrl.includes("?") ? "&" : "?") + params.join("&");
}

// A one-time ticket, or null if we have no (valid) token.
async function getTicket() {
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (!token) return null;
  const resp = await fetch("/api/ticket", { method: "POST", headers: { Authorization: "Bearer " + token }, cache: "no-store" });
  if (resp.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    addLine("error", [["text", "Error: the access token was not accepted."]]);
    return null;
  }
  if (!resp.ok) throw new Error("ticket: HTTP " + resp.status);
  return (await resp.json()).ticket;
}

function askForToken() {
  els.authForm.hidden = false;
  setStatus("disconnected", "sign-in needed");
  els.authToken.focus();
}

async function connect() {
  setStatus("connecting", "connecting…");
  let ticket = null;
  try {
    if (!wsUrl) {
      const config = await fetchConfig();
      wsUrl = config.ws_url;
      auth = config.auth;
    }
    if (auth === "token") {
      ticket = await getTicket();
      if (!ticket) {
        askForToken();
        return; // the sign-in form calls connect() again
      }
    }
  } catch (e) {
    scheduleReconnect();
    return;
  }
  const sock = new WebSocket(connectUrl(ticket));
  ws = sock;
  let opened = false;
  sock.onopen = () => {
    opened = true;
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
    if (ev.code === 4001) {
      // The sign-in (JWT) expired: get a fresh ticket now (or the sign-in form, if the
      // token itself is no longer accepted) and resume where we were.
      notice("Your sign-in expired; reconnecting.");
      attempt = 0;
      connect();
      return;
    }
    const why = ev.code === 1000 || ev.code === 1005 ? "" : ` (code ${ev.code}${ev.reason ? ": " + ev.reason : ""})`;
    notice("Disconnected" + why + ".");
    // Refused before it opened, with an identity: if the server no longer knows it (its key
    // changed), forget it and come back as a new guest rather than knock forever.
    if (!opened && localStorage.getItem(IDENTITY_KEY)) checkIdentity().finally(scheduleReconnect);
    else scheduleReconnect();
  };
}

function setIdentityCookie(value, maxAgeSecs) {
  const secure = location.protocol === "https:" ? "; Secure" : "";
  document.cookie = `${IDENTITY_KEY}=${encodeURIComponent(value)}; Path=/; Max-Age=${maxAgeSecs}; SameSite=Strict${secure}`;
}

async function checkIdentity() {
  setIdentityCookie(localStorage.getItem(IDENTITY_KEY), 365 * 86400);
  try {
    // The cookie carries it (the same origin).
    const resp = await fetch("/api/identity", { cache: "no-store" });
    if (resp.status === 401) {
      localStorage.removeItem(IDENTITY_KEY);
      setIdentityCookie("", 0);
      notice("This server no longer knows your guest identity; you will be a new guest.");
    }
  } catch {
    // Offline: keep it.
  }
}

function scheduleReconnect() {
  const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** attempt);
  const delay = Math.max(BACKOFF_MIN_MS / 2, Math.random() * cap);
  attempt += 1;
  setStatus("disconnected", `disconnected, retrying in ${Math.ceil(delay / 1000)} s`);
  setTimeout(connect, delay);
}
