// The chat page's side panels and history, loaded before app.js and sharing its globals
// (`els`, `rooms`, `roomState`, `current`, `myId`, `TOKEN_KEY`, `messageLine`): who is
// online in the current room, who is typing, older messages fetched a page at a time, and
// direct-message conversations (tabs named "@peer").
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
  const items = [...st.members].map(([id, name]) => {
    const li = document.createElement("li");
    li.textContent = name;
    if (id === myId) {
      li.className = "me";
    } else {
      // A name in the list opens a conversation with it.
      li.title = `Message ${name} directly`;
      li.addEventListener("click", () => openDm(name));
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

// Direct messages: a conversation is a tab keyed "@peer"; the server has no room for it.
function isDm(key) {
  return key.startsWith("@");
}

// Opens (or shows) the conversation with `name`.
function openDm(name) {
  const key = "@" + name;
  const st = roomState(key);
  st.entered = true;
  st.complete = true;
  switchTo(key);
}
