//! What a chat session does with what its client says: each JSON request on `/ws`, each
//! line of a plain-text client on `/`, and the rooms a session starts in. Called from the
//! session's read loop (`ws_session.rs`), on the connection's own thread.

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::chat::commit::{Reply, Submit, error_frame_for};
use crate::chat::moderation::Actor;
use crate::chat::moderation::actions::perform;
use crate::chat::moderation::request::Request as ModRequest;
use crate::chat::protocol::{self, ClientMsg, Peer, ServerMsg};
use crate::conn::Conn;
use crate::net::access::auth::{ROOM_CLOSED, RoomAccess};
use crate::net::access::frame_rate::FrameBudget;
use crate::net::access::history_rate::{HistoryBudget, Paced};
use crate::net::shared::Shared;

/// A plain-text client: named by `?name=` (or `guest-ID`), in the lobby, nothing else.
pub(crate) fn enter_plain(conn: &Arc<Conn>, shared: &Shared, query: &str, rooms: &RoomAccess) {
    if !conn.name_locked.load(Ordering::Acquire)
        && let Some(wanted) = crate::net::query::get(query, "name")
        && let Err(e) = protocol::normalize_name(&wanted).and_then(|name| rename(conn, shared, &name))
    {
        conn.send(error_frame(shared, conn, &e));
    }
    if !rooms.may_enter(protocol::LOBBY, &shared.chat.config.private_rooms) {
        conn.send(error_frame(shared, conn, ROOM_CLOSED));
    } else if let Err(e) = shared.chat.hub.join_room(conn, protocol::LOBBY) {
        conn.send(error_frame(shared, conn, &e));
    }
}

/// One text frame from a plain-text client: a chat message in the lobby, checked like any
/// other (size, content, the rate limit already spent) and acknowledged by its broadcast.
#[inline(never)]
pub(crate) fn handle_plain(conn: &Arc<Conn>, shared: &Shared, text: &str) -> Option<Bytes> {
    if let Err(e) = protocol::validate_text(text) {
        return Some(error_frame(shared, conn, &e));
    }
    if !shared.chat.hub.is_member(conn, protocol::LOBBY) {
        return Some(error_frame(shared, conn, "not in the lobby (the server refused the join)"));
    }
    if let Some(why) = muted(shared, conn, protocol::LOBBY) {
        return Some(error_frame(shared, conn, &why));
    }
    let reply = Reply::Ws { conn: Arc::clone(conn), r#ref: None };
    let submit = Submit {
        room: protocol::LOBBY.to_string(),
        id: conn.id,
        user: conn.user(),
        name: conn.name(),
        text: text.to_string(),
        reply,
    };
    shared.chat.sequencer.submit(submit).err().map(|e| error_frame(shared, conn, &e))
}

/// Handles one chat request; returns a frame to send back to this client only.
#[inline(never)]
pub(crate) fn handle_chat(
    conn: &Arc<Conn>,
    shared: &Shared,
    text: &str,
    typing: &mut TypingThrottle,
    rooms: &RoomAccess,
    ip: std::net::IpAddr,
) -> Option<Bytes> {
    let private = &shared.chat.config.private_rooms;
    let result = match protocol::parse_client(text) {
        // A room this client may not enter: the same answer whatever the room is, before
        // anything about it (members, seq, existence) could show.
        Ok(ClientMsg::Join { room } | ClientMsg::Resume { room, .. }) if !rooms.may_enter(&room, private) => {
            Err(ROOM_CLOSED.to_string())
        }
        Ok(ClientMsg::Message { room, text, r#ref }) => {
            shared.chat.config.hooks.panic_on_text(&text);
            if !shared.chat.hub.is_member(conn, &room) {
                return Some(error_frame_ref(shared, conn, &format!("not in room {room:?}; join it first"), r#ref));
            }
            if let Some(why) = muted(shared, conn, &room) {
                return Some(error_frame_ref(shared, conn, &why, r#ref));
            }
            let submit = Submit {
                room,
                id: conn.id,
                user: conn.user(),
                name: conn.name(),
                text,
                reply: Reply::Ws { conn: Arc::clone(conn), r#ref },
            };
            shared.chat.sequencer.submit(submit)
        }
        Ok(ClientMsg::Name { .. }) if conn.name_locked.load(Ordering::Acquire) => {
            Err("your name comes from your login and cannot be changed".to_string())
        }
        Ok(ClientMsg::Name { name }) => rename(conn, shared, &name),
        Ok(ClientMsg::Join { room }) => shared.chat.hub.join_room(conn, &room),
        Ok(ClientMsg::Leave { room }) => shared.chat.hub.leave_room(conn, &room),
        Ok(ClientMsg::Resume { room, after }) => shared.chat.hub.resume(conn, &room, after, &paced(shared, ip)),
        Ok(ClientMsg::Dm { r#ref, .. }) if let Some(why) = muted(shared, conn, "") => {
            return Some(error_frame_ref(shared, conn, &why, r#ref));
        }
        Ok(ClientMsg::Dm { to, text, r#ref }) => match recipient(shared, &to).and_then(|to| {
            let room = protocol::dm_key(&conn.user(), &to);
            shared.chat.hub.admit_conversation(&room, ip).map(|()| room)
        }) {
            Ok(room) => {
                let reply = Reply::Ws { conn: Arc::clone(conn), r#ref };
                let (user, name) = (conn.user(), conn.name());
                shared.chat.sequencer.submit(Submit { room, id: conn.id, user, name, text, reply })
            }
            Err(e) => return Some(error_frame_ref(shared, conn, &e, r#ref)),
        },
        // A conversation is its two users': the key is made of this connection's own user
        // id, so nobody can read another pair's, whatever names they take.
        Ok(ClientMsg::ResumeDm { with, after }) => peer(shared, &with).and_then(|with| {
            let key = protocol::dm_key(&conn.user(), &with);
            shared.chat.hub.resume_dm(conn, &key, after, &paced(shared, ip))
        }),
        // Membership first: a refused `typing` must not spend the room's allowance.
        Ok(ClientMsg::Typing { room }) if !shared.chat.hub.is_member(conn, &room) => {
            Err(format!("not in room {room:?}; join it first"))
        }
        Ok(ClientMsg::Typing { room }) if let Some(why) = muted(shared, conn, &room) => Err(why),
        Ok(ClientMsg::Moderate { action, fields, r#ref }) => {
            return Some(moderate(conn, shared, rooms, &action, &fields, r#ref));
        }
        Ok(ClientMsg::Typing { room }) => match typing.allow(&room, Instant::now()) {
            true => {
                let shown = TYPING_SHOWN.as_millis() as u64;
                let relayed = shared.chat.hub.relay_typing(conn, &room, shown);
                if relayed.is_ok()
                    && let Some(bp) = &shared.chat.backplane
                {
                    bp.publish_typing(&room, conn.id, &conn.user(), &conn.name(), shown);
                }
                relayed
            }
            false => Ok(()), // throttled: the last one relayed is still showing
        },
        Err(error) => Err(error),
    };
    result.err().map(|error| error_frame(shared, conn, &error))
}

/// Why this connection's user may not speak in `room` (`""`: a direct message, which only
/// a mute of every room covers), if it is muted.
fn muted(shared: &Shared, conn: &Conn, room: &str) -> Option<String> {
    shared.chat.moderation.mute_of(&conn.user(), room)
}

/// A moderation request over the WebSocket: carried out as the admin API would for this
/// user (its JWT's roles; a member may delete its own messages), answered with `done` or
/// an `error` carrying the request's `ref`. A room the client may not enter is refused as
/// every such room is (`ROOM_CLOSED`), before anything about it shows.
fn moderate(
    conn: &Arc<Conn>,
    shared: &Shared,
    rooms: &RoomAccess,
    action: &str,
    fields: &serde_json::Map<String, serde_json::Value>,
    r#ref: Option<u64>,
) -> Bytes {
    let actor = Actor::User { user: conn.user(), role: rooms.role.clone() };
    let result = crate::net::access::moderation::parse(action, fields).map_err(|e| e.to_string()).and_then(|request| {
        match &request {
            ModRequest::Delete { room, .. } if !rooms.may_enter(room, &shared.chat.config.private_rooms) => {
                Err(ROOM_CLOSED.to_string())
            }
            _ => perform(&shared.chat, &actor, request).map_err(|r| r.error),
        }
    });
    match result {
        Ok(value) => ServerMsg::Done { action, result: &value, r#ref }.to_frame(),
        Err(error) => error_frame_ref(shared, conn, &error, r#ref),
    }
}

/// Takes `name` for this connection, if no other user holds or owns it, and tells its
/// rooms.
fn rename(conn: &Arc<Conn>, shared: &Shared, name: &str) -> Result<(), String> {
    let name: Arc<str> = Arc::from(name);
    shared.chat.hub.names.hold(&conn.user(), &name, &*shared.chat.store)?;
    shared.chat.hub.rename(conn, &name);
    Ok(())
}

/// The user a `dm` or `resume` names: the id as given, or whoever holds (or owns) that
/// display name now.
fn peer(shared: &Shared, peer: &Peer) -> Result<Arc<str>, String> {
    match peer {
        Peer::User(user) => Ok(Arc::from(user.as_str())),
        Peer::Name(name) => {
            shared.chat.hub.names.user_of(name, &*shared.chat.store).ok_or_else(|| format!("nobody is called {name:?}"))
        }
    }
}

/// Who a `dm` goes to: a user connected now, or a signed-in user this server knows (who
/// reads it on return). Anything else is refused, never acknowledged and lost.
fn recipient(shared: &Shared, to: &Peer) -> Result<Arc<str>, String> {
    let user = peer(shared, to)?;
    // Known by a name: connected here or elsewhere, or a signed-in user's reservation.
    if shared.chat.hub.name_of(&user).is_some() {
        Ok(user)
    } else {
        Err(format!("no user {user:?} is connected or known here"))
    }
}

/// Every chat client starts in the lobby. `?resume=ROOM:SEQ[,ROOM:SEQ…]` on the upgrade URL
/// resumes those rooms instead (the lobby too, if listed), exactly like `resume` requests:
/// each one spends the message-rate budget and counts against `--max-rooms-per-client`, so
/// a URL cannot join thousands of rooms at once.
pub(crate) fn enter_initial_rooms(
    conn: &Arc<Conn>,
    shared: &Shared,
    query: &str,
    ip: IpAddr,
    budget: &mut FrameBudget,
    rooms: &RoomAccess,
) {
    let private = &shared.chat.config.private_rooms;
    let mut resumes: Vec<(String, u64)> = vec![];
    for pair in crate::net::query::all(query, "resume") {
        for item in pair.split(',').filter(|s| !s.is_empty()) {
            match item.rsplit_once(':').map(|(r, s)| (r, s.parse::<u64>())) {
                Some((room, Ok(seq))) if protocol::validate_room(room).is_ok() => resumes.push((room.to_string(), seq)),
                _ => {
                    conn.send(error_frame(shared, conn, &format!("bad resume parameter {item:?}; expected ROOM:SEQ")));
                }
            }
        }
    }
    // Not the lobby for a token whose `rooms` claim leaves it out (or with a private
    // lobby): such a client starts in no room, and joins its own.
    if !resumes.iter().any(|(r, _)| r == protocol::LOBBY)
        && rooms.may_enter(protocol::LOBBY, private)
        && let Err(e) = shared.chat.hub.join_room(conn, protocol::LOBBY)
    {
        conn.send(error_frame(shared, conn, &e));
    }
    let mut left = resumes.len();
    for (room, after) in resumes {
        if !budget.take_message() {
            let error = format!("rate limit: {left} resume(s) in the URL not done; send them as resume requests");
            conn.send(error_frame(shared, conn, &error));
            break;
        }
        left -= 1;
        if !rooms.may_enter(&room, private) {
            conn.send(error_frame(shared, conn, ROOM_CLOSED));
            continue;
        }
        if let Err(e) = shared.chat.hub.resume(conn, &room, after, &paced(shared, ip)) {
            conn.send(error_frame(shared, conn, &e));
        }
    }
}

/// The store as `ip`'s resumes read it: paced by that address's history budget.
fn paced(shared: &Shared, ip: IpAddr) -> Paced<'_> {
    Paced { store: &*shared.chat.store, budget: HistoryBudget::new(shared, ip) }
}

/// How long a `typing` event shows; also how often one is relayed per client and room
/// (more often, they are ignored: a client sends one per keystroke pause, and relaying each
/// would cost a delivery per member every time).
const TYPING_EVERY: Duration = Duration::from_secs(2);
const TYPING_SHOWN: Duration = Duration::from_secs(4);

/// When this connection's last `typing` was relayed, per room. Lives on the session's
/// thread (no lock); holds at most the rooms a client may be in.
#[derive(Default)]
pub(crate) struct TypingThrottle {
    last: Vec<(String, Instant)>,
}

impl TypingThrottle {
    pub(crate) fn allow(&mut self, room: &str, now: Instant) -> bool {
        self.last.retain(|(_, at)| now.duration_since(*at) < TYPING_EVERY);
        if self.last.iter().any(|(r, _)| r == room) {
            return false;
        }
        self.last.push((room.to_string(), now));
        true
    }
}

pub(crate) fn error_frame(shared: &Shared, conn: &Conn, error: &str) -> Bytes {
    error_frame_ref(shared, conn, error, None)
}

fn error_frame_ref(shared: &Shared, conn: &Conn, error: &str, r#ref: Option<u64>) -> Bytes {
    shared.chat.metrics.error_replies.fetch_add(1, Ordering::Relaxed);
    error_frame_for(conn, error, r#ref)
}
