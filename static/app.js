// threadchat's page: one WebSocket to /ws, JSON messages with a "type" field.
// Text from the network is only ever inserted with textContent, never innerHTML.
//
// Rooms: the page remembers the last `seq` it showed per room and, after any reconnect,
// connects with ?resume=room:seq,… so the server replays exactly what was missed (or says
// what is gone with a `gap`) before continuing live.
"use strict";

const els = {
  status: document.getElementById("status"),
  messages: document.getElementById("messages"),
  sendForm: document.getElementById("send-form"),
  text: document.getElementById("text"),
  send: document.getElementById("send"),
  nameForm: document.getElementById("name-form"),
  name: document.getElementById("name"),
  tabs: document.getElementById("room-tabs"),
  joinForm: document.getElementById("join-form"),
  joinRoom: document.getElementById("join-room"),
  authForm: document.getElementById("auth-form"),
  authToken: document.getElementById("auth-token"),
  memberCount: document.getElementById("member-count"),
  memberList: document.getElementById("member-list"),
  typing: document.getElementById("typing"),
};

// The name a guest chose is kept beside its identity (connection.js) and asked for again
// after each welcome.
const NAME_KEY = "threadchat_name";
// The conversations this page has open ([[user, label], …]): after a reload each is
// replayed from the start (the server keeps them; they are this user's).
const DMS_KEY = "threadchat_dms";

let myId = null; // this connection
let myUser = null; // this person (a JWT's sub, or the guest identity's id)
let myName = null;
let nextRef = 1;
// room -> { lastSeq, unread, members: Map(user -> name), count, typing: Map(user -> {name, until}),
// typingSent, entered (had its presence: resumable), oldest (first seq shown), loading,
// complete (nothing older to fetch), label (a conversation's peer, by name) }; insertion
// order is tab order. A conversation's key is "@" + the peer's user id.
const rooms = new Map();
let current = "lobby";

function setStatus(state, label) {
  els.status.className = "status " + state;
  els.status.textContent = label;
  els.send.disabled = state !== "connected";
}

function roomState(room) {
  if (!rooms.has(room)) {
    rooms.set(room, {
      lastSeq: 0, unread: 0, members: new Map(), count: 0, typing: new Map(), typingSent: 0,
      entered: false, oldest: null, loading: false, complete: false,
    });
  }
  return rooms.get(room);
}

function renderTabs() {
  els.tabs.replaceChildren();
  for (const [room, st] of rooms) {
    const b = document.createElement("button");
    b.type = "button";
    b.setAttribute("role", "tab");
    b.dataset.room = room;
    b.setAttribute("aria-selected", String(room === current));
    // Direct-message conversations are tabs too, named "@peer".
    b.textContent = isDm(room) ? "@" + (st.label || room.slice(1)) : "#" + room;
    if (st.unread > 0 && room !== current) {
      const u = document.createElement("span");
      u.className = "unread";
      u.textContent = String(st.unread);
      b.appendChild(u);
    }
    b.addEventListener("click", () => switchTo(room));
    els.tabs.appendChild(b);
  }
}

function switchTo(room) {
  current = room;
  roomState(room).unread = 0;
  for (const li of els.messages.children) li.hidden = li.dataset.room !== undefined && li.dataset.room !== room;
  renderTabs();
  renderMembers();
  renderTyping();
}

// Adds a line; `room` undefined means it shows in every room (connection notices).
function addLine(kind, parts, room) {
  const li = makeLine(kind, parts, room);
  const box = els.messages.parentElement;
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
  els.messages.appendChild(li);
  if (atBottom && !li.hidden) li.scrollIntoView({ block: "end" });
  return li;
}

function makeLine(kind, parts, room) {
  const li = document.createElement("li");
  li.className = kind;
  if (room !== undefined) {
    li.dataset.room = room;
    li.hidden = room !== current;
  }
  for (const [cls, text] of parts) {
    const span = document.createElement("span");
    span.className = cls;
    span.textContent = text;
    li.appendChild(span);
  }
  return li;
}

function messageLine(m) {
  const li = makeLine(m.user === myUser ? "message mine" : "message", [
    ["time", timeOf(m.ts)], ["who", m.name + ":"], ["text", m.text],
  ], m.room);
  li.dataset.seq = m.seq;
  if (m.deleted) markDeleted(li);
  else addDeleteButton(li, m);
  return li;
}

function timeOf(ts) {
  const d = typeof ts === "number" ? new Date(ts) : new Date();
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function notice(text, room) {
  addLine("notice", [["text", text]], room);
}

function handle(event) {
  switch (event.type) {
    case "welcome": {
      myId = event.id;
      myUser = event.user;
      myName = event.name;
      setRole(event);
      if (event.identity) localStorage.setItem(IDENTITY_KEY, event.identity);
      notice(`Connected as ${event.name}.`);
      // Conversations are not rooms (no ?resume=): ask for what each one missed.
      for (const [key, st] of rooms) {
        if (isDm(key) && !st.pending) sendJson({ type: "resume", with_user: key.slice(1), after: st.lastSeq });
      }
      const wanted = els.name.value.trim() || localStorage.getItem(NAME_KEY) || "";
      if (wanted && wanted !== event.name) {
        sendJson({ type: "name", name: wanted });
      } else {
        els.name.value = event.name;
      }
      break;
    }
    case "presence": {
      // Resume point for a room we just entered: its messages so far are history.
      const st = roomState(event.room);
      st.lastSeq = Math.max(st.lastSeq, event.seq);
      if (!st.entered) {
        st.entered = true;
        loadOlder(event.room);
      }
      const names = event.members.map((m) => m.name).join(", ");
      notice(`In #${event.room}: ${names}.`, event.room);
      st.members = new Map(event.members.map((m) => [m.user, m.name]));
      st.count = event.count;
      renderTabs();
      if (event.room === current) renderMembers();
      break;
    }
    case "message": {
      const st = roomState(event.room);
      if (event.seq <= st.lastSeq) break; // already shown (defensive: the server never repeats)
      st.lastSeq = event.seq;
      if (st.oldest === null) st.oldest = event.seq;
      const box = els.messages.parentElement;
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 40;
      const li = messageLine(event);
      els.messages.appendChild(li);
      if (atBottom && !li.hidden) li.scrollIntoView({ block: "end" });
      if (st.typing.delete(event.user) && event.room === current) renderTyping();
      if (event.room !== current) {
        st.unread += 1;
        renderTabs();
      }
      break;
    }
    case "dm": {
      const mine = event.user === myUser;
      const peer = mine ? event.to_user : event.user;
      const key = "@" + peer;
      // A conversation opened by name ("@bob" in the join box) becomes bob's by id.
      adoptPending(mine ? event.to : event.name, key);
      const isNew = !rooms.has(key);
      noteDm(peer, mine ? event.to : event.name); // its tab, kept across reloads
      const st = roomState(key);
      // A replay and a live dm may interleave: keep each seq once.
      st.seen ??= new Set();
      if (st.seen.has(event.seq)) break;
      st.seen.add(event.seq);
      st.lastSeq = Math.max(st.lastSeq, event.seq);
      const li = messageLine({ ...event, room: key });
      els.messages.appendChild(li);
      if (!li.hidden) li.scrollIntoView({ block: "end" });
      if (key !== current) st.unread += 1;
      if (isNew || key !== current) renderTabs();
      break;
    }
    case "gap":
      notice(`Messages ${event.from}–${event.to} are no longer kept.`, event.room);
      break;
    case "join": {
      notice(`${event.name} joined.`, event.room);
      const st = roomState(event.room);
      if (!st.members.has(event.user)) st.count += 1;
      st.members.set(event.user, event.name);
      if (event.room === current) renderMembers();
      break;
    }
    case "typing": {
      const st = roomState(event.room);
      st.typing.set(event.user, { name: event.name, until: Date.now() + event.expires_ms });
      if (event.room === current) renderTyping();
      setTimeout(() => { if (event.room === current) renderTyping(); }, event.expires_ms + 50);
      break;
    }
    case "leave":
      if (event.id === myId) {
        rooms.delete(event.room);
        if (current === event.room) switchTo(rooms.keys().next().value || "lobby");
        renderTabs();
      } else {
        notice(`${event.name} left.`, event.room);
        const st = roomState(event.room);
        if (st.members.delete(event.user) || st.count > st.members.size) st.count = Math.max(0, st.count - 1);
        st.typing.delete(event.user);
        if (event.room === current) { renderMembers(); renderTyping(); }
      }
      break;
    case "name":
      notice(`${event.old} is now ${event.name}.`);
      if (event.id === myId) {
        els.name.value = event.name;
        myName = event.name;
        localStorage.setItem(NAME_KEY, event.name);
      }
      for (const st of rooms.values()) if (st.members.has(event.user)) st.members.set(event.user, event.name);
      if (rooms.has("@" + event.user)) rooms.get("@" + event.user).label = event.name;
      renderTabs();
      renderMembers();
      break;
    case "deleted":
      onDeleted(event);
      break;
    case "done":
      notice(`Done: ${event.action}.`, current);
      break;
    case "ack":
      break; // stored; nothing to show
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

els.sendForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const text = els.text.value;
  if (!text.trim()) return;
  const st = roomState(current);
  const sent = !isDm(current) ? sendJson({ type: "message", room: current, text, ref: nextRef++ })
    : st.pending ? sendJson({ type: "dm", to: st.label, text, ref: nextRef++ })
    : sendJson({ type: "dm", to_user: current.slice(1), text, ref: nextRef++ });
  if (sent) els.text.value = "";
});

// Typing: one event per pause in typing, at most every 2 s per room.
els.text.addEventListener("input", () => {
  const st = roomState(current);
  if (!isDm(current) && els.text.value && Date.now() - st.typingSent >= TYPING_EVERY_MS
    && sendJson({ type: "typing", room: current })) {
    st.typingSent = Date.now();
  }
});

els.nameForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const name = els.name.value.trim();
  if (name) sendJson({ type: "name", name });
});

els.joinForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const room = els.joinRoom.value.trim();
  if (!room) return;
  if (isDm(room) && room.length > 1) {
    openDmByName(room.slice(1));
  } else if (rooms.has(room)) {
    switchTo(room);
  } else if (sendJson({ type: "join", room })) {
    roomState(room);
    switchTo(room);
  }
  els.joinRoom.value = "";
});

els.authForm.addEventListener("submit", (e) => {
  e.preventDefault();
  const token = els.authToken.value.trim();
  if (!token) return;
  sessionStorage.setItem(TOKEN_KEY, token);
  els.authToken.value = "";
  els.authForm.hidden = true;
  connect();
});

els.messages.parentElement.addEventListener("scroll", () => {
  if (els.messages.parentElement.scrollTop < 40) loadOlder(current);
});

switchTo("lobby");
restoreDms();
connect();
