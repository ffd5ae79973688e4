// The chat page's moderation controls (docs/moderation.md), loaded before app.js and sharing
// its globals (`rooms`, `current`, `myUser`, `sendJson`, `notice`): a delete button on one's
// own messages, and for a moderator on every message of the rooms it moderates; kick, mute
// and (for an admin) ban on the members of those rooms. Each is one WebSocket request; the
// server checks every right again, so these controls only save a moderator typing.
"use strict";

// From the welcome: "admin", "mod" (with the room patterns it moderates), or null.
let myRole = null;
let myModRooms = [];

function setRole(welcome) {
  myRole = welcome.role || null;
  myModRooms = welcome.mod_rooms || [];
}

function moderates(room) {
  if (myRole === "admin") return true;
  if (myRole !== "mod") return false;
  return myModRooms.some((p) => (p.endsWith("*") ? room.startsWith(p.slice(0, -1)) : p === room));
}

// A message line's delete button, if this user may delete it (its own, or a moderator's
// room); rooms only: a conversation's messages are not deleted from the page.
function addDeleteButton(li, m) {
  if (m.deleted || m.room.startsWith("@") || !(m.user === myUser || moderates(m.room))) return;
  const button = document.createElement("button");
  button.className = "delete";
  button.type = "button";
  button.textContent = "×";
  button.title = "Delete this message";
  button.addEventListener("click", () => sendJson({ type: "delete", room: m.room, seq: m.seq }));
  li.appendChild(button);
}

// Shows a message as deleted: its text gone, its place kept.
function markDeleted(li) {
  li.classList.add("deleted");
  const text = li.querySelector(".text");
  if (text) text.textContent = "message deleted";
  li.querySelector("button.delete")?.remove();
}

// `{"type":"deleted"}`: the line of that room and seq, if shown.
function onDeleted(event) {
  const li = document.querySelector(`#messages li[data-room="${CSS.escape(event.room)}"][data-seq="${event.seq}"]`);
  if (li) markDeleted(li);
}

// A member of the current room: kick, mute for ten minutes and (admins) ban, each asking
// for a reason first.
function addMemberControls(li, user, name) {
  if (user === myUser || !moderates(current)) return;
  const act = (type, extra) => {
    const reason = window.prompt(`Reason to ${type} ${name}:`);
    if (reason) sendJson({ type, user, reason, ...extra });
  };
  const controls = [["kick", {}], ["mute", { room: current, seconds: 600 }]];
  if (myRole === "admin") controls.push(["ban", {}]);
  for (const [type, extra] of controls) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "mod " + type;
    button.textContent = type;
    button.title = `${type} ${name}`;
    button.addEventListener("click", (e) => {
      e.stopPropagation();
      act(type, extra);
    });
    li.appendChild(button);
  }
}
