// The chat page's side panels and history, loaded before app.js and sharing its globals
// (`els`, `rooms`, `roomState`, `current`, `myUser`, `TOKEN_KEY`, `messageLine`): who is
// online in the current room, who is typing, older messages fetched a page at a time, and
// direct-message conversations (tabs named "@peer", keyed by the peer's user id).
"use strict";

// A typing event is sent at most this often per room; the server relays at most as often.
const TYPING_EVERY_MS = 2000;

// Who is online in the current room: names as the server listed them (presence, then each
// join and leave), the count as it said (the list stops at 100 names; the count does not).
function renderMembers() {
  // A conversation has no member list: it is between two names, whoever is online.
  document.getElementById("members").hidden = isDm(current);
  const st = roomState(current);
  els.memberCount.textContent = String(Math.max(st.count, st.members.size));
  const items = [...st.members].map(([user, name]) => {
    const li = document.createElement("li");
    li.textContent = name;
    li.dataset.user = user;
    if (user === myUser) {
      li.className = "me";
    } else {
      // A name in the list opens a conversation with that user (by id, whatever names
      // anyone takes later).
      li.title = `Message ${name} directly`;
      li.addEventListener("click", () => openDm(user, name));
      addMemberControls(li, user, name);
    }
    return li;
  });
  els.memberList.replaceChildren(...items);
}

function renderTyping() {
  const st = roomState(current);
  const now = Date.now();
  for (const [id, t] of st.typing) if (t.until <= now) st.typing.delete(id);
  const names = [...st.typing.values()].map((t) => t.name);
  els.typing.textContent = names.length === 0 ? ""
    : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

// History: entering a room shows its last page (one request); scrolling to the top fetches
// the page before it. Live messages keep arriving below meanwhile.
const PAGE = 50;

async function loadOlder(room) {
  const st = roomState(room);
  if (st.loading || st.complete) return;
  st.loading = true;
  try {
    const before = st.oldest ?? st.lastSeq + 1;
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = "Bearer " + token;
    const resp = await fetch(`/api/rooms/${encodeURIComponent(room)}/messages?before=${before}&limit=${PAGE}`,
      { headers, cache: "no-store" });
    if (!resp.ok) return;
    const page = (await resp.json()).messages;
    if (page.length < PAGE) st.complete = true;
    const older = page.filter((m) => st.oldest === null || m.seq < st.oldest);
    if (older.length === 0) return;
    st.oldest = older[0].seq;
    // Before the room's first message shown (its lines share the list with other rooms').
    const anchor = [...els.messages.children].find((li) => li.dataset.room === room && li.dataset.seq);
    const box = els.messages.parentElement;
    const fromBottom = box.scrollHeight - box.scrollTop;
    const lines = older.map(messageLine);
    if (anchor) anchor.before(...lines); else els.messages.append(...lines);
    // Keep what the reader was looking at in place.
    if (room === current) box.scrollTop = box.scrollHeight - fromBottom;
  } catch {
    // Offline: the next scroll tries again.
  } finally {
    st.loading = false;
  }
}

// Direct messages: a conversation is a tab keyed "@" + the peer's user id, labelled with
// the peer's name; the server has no room for it.
function isDm(key) {
  return key.startsWith("@");
}

// Opens (or shows) the conversation with `user`, shown as `name`.
function openDm(user, name) {
  noteDm(user, name);
  switchTo("@" + user);
}

// A conversation's tab (without showing it), remembered across reloads.
function noteDm(user, name) {
  const st = roomState("@" + user);
  st.entered = true;
  st.complete = true;
  st.label = name || st.label;
  const kept = [...rooms].filter(([k, v]) => isDm(k) && !v.pending).map(([k, v]) => [k.slice(1), v.label]);
  localStorage.setItem(DMS_KEY, JSON.stringify(kept));
}

// After a reload: the tabs of the conversations open before, each replayed from its start
// by the welcome's resume.
function restoreDms() {
  let kept = [];
  try {
    kept = JSON.parse(localStorage.getItem(DMS_KEY) || "[]");
  } catch {
    // Not ours: start afresh.
  }
  for (const [user, label] of Array.isArray(kept) ? kept : []) {
    if (typeof user === "string" && typeof label === "string") noteDm(user, label);
  }
}

// "@name" typed in the join box: the user it names is whoever holds that name now, which
// only the server knows. The tab waits under "@?name" (sending by name) until the first dm
// of the conversation says whose it is; `adoptPending` then moves it to "@" + that id.
function openDmByName(name) {
  for (const st of rooms.values()) {
    for (const [user, n] of st.members) {
      if (n.toLowerCase() === name.toLowerCase() && user !== myUser) return openDm(user, n);
    }
  }
  const key = "@?" + name;
  const st = roomState(key);
  Object.assign(st, { entered: true, complete: true, pending: true, label: name });
  switchTo(key);
}

function adoptPending(name, key) {
  if (!name) return;
  const pendingKey = [...rooms.keys()].find((k) => k.startsWith("@?") && k.slice(2).toLowerCase() === name.toLowerCase());
  if (!pendingKey || rooms.has(key)) return;
  const st = rooms.get(pendingKey);
  st.pending = false;
  // Re-insert under the id, in the same place in the tab order.
  const entries = [...rooms].map(([k, v]) => (k === pendingKey ? [key, v] : [k, v]));
  rooms.clear();
  for (const [k, v] of entries) rooms.set(k, v);
  for (const li of els.messages.children) if (li.dataset.room === pendingKey) li.dataset.room = key;
  if (current === pendingKey) current = key;
}
