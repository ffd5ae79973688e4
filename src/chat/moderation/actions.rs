//! The moderation actions (part of moderation; see `mod.rs`): who may do each, what each
//! does here, and the same on the other instances of a cluster (`apply_remote`).
//!
//! Every action runs the same steps: check the request against the actor's rights (a
//! refusal changes nothing), write the audit entry (if the store cannot, nothing is done:
//! an action nobody can account for does not happen), do it here (store, memory,
//! connections), then send it to the cluster.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Actor;
use super::request::{BanTarget, Request, Who};
use crate::chat::Chat;
use crate::chat::commit::{Reply, Submit};
use crate::store::moderation::new_id;
use crate::store::{AuditEntry, Sanction};

/// A refused request: the HTTP status, and the error (WebSocket clients get the error).
#[derive(Debug, PartialEq, Eq)]
pub struct Refused {
    pub status: u16,
    pub error: String,
}

fn refused(status: u16, error: impl Into<String>) -> Refused {
    Refused { status, error: error.into() }
}

/// The user id of announcements, which no JWT `sub` may take (`~` starts no user id a
/// login can bring: see `auth.rs`), shown as [`SYSTEM_NAME`].
pub const SYSTEM_USER: &str = "~system";
pub const SYSTEM_NAME: &str = "system";

/// How long an announcement waits for each room's commit.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the cluster's other instances apply (through the backplane's log).
#[derive(serde::Serialize, serde::Deserialize, Debug)]
#[serde(tag = "e", rename_all = "lowercase")]
pub enum Event {
    Kick {
        user: String,
        reason: String,
        by_admin: bool,
    },
    Sanction {
        sanction: Sanction,
    },
    Lift {
        id: u64,
    },
    Delete {
        room: String,
        seq: u64,
    },
    /// The messages the purge tombstoned (so members everywhere are told, even where a
    /// shared store was purged already).
    Purge {
        user: String,
        messages: Vec<(String, u64)>,
    },
    Audit {
        entry: AuditEntry,
    },
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Batch {
    instance: String,
    events: Vec<Event>,
}

/// Carries out `request` for `actor`; the JSON the admin API answers, or the refusal.
pub fn perform(chat: &Chat, actor: &Actor, request: Request) -> Result<Value, Refused> {
    let action = action_of(&request);
    let result = run(chat, actor, request);
    chat.moderation.count(if result.is_ok() { action } else { "refused" });
    match &result {
        Ok(_) => log::info!("moderation: {} did {action}", actor.label()),
        Err(r) => log::info!("moderation: {}'s {action} refused ({}): {}", actor.label(), r.status, r.error),
    }
    result
}

fn action_of(request: &Request) -> &'static str {
    match request {
        Request::Kick { .. } => "kick",
        Request::Ban { .. } => "ban",
        Request::Unban { .. } => "unban",
        Request::Mute { .. } => "mute",
        Request::Unmute { .. } => "unmute",
        Request::Delete { .. } => "delete",
        Request::Announce { .. } => "announce",
        Request::Purge { .. } => "purge",
    }
}

fn run(chat: &Chat, actor: &Actor, request: Request) -> Result<Value, Refused> {
    let now = crate::clock::now_ms();
    match request {
        Request::Kick { who, reason } => {
            let user = resolve(chat, &who)?;
            may_act_on(chat, actor, &user)?;
            if !chat.hub.is_connected(&user) {
                return Err(refused(404, format!("user {user:?} is not connected")));
            }
            if !actor.is_admin() && !chat.hub.rooms_of_user(&user).iter().any(|r| actor.moderates(r)) {
                return Err(refused(403, "that user is in none of the rooms you moderate"));
            }
            audit(chat, actor, "kick", &user, "", &reason)?;
            let closed = chat.hub.close_user(&user, &format!("kicked: {reason}"));
            publish(chat, vec![Event::Kick { user: user.clone(), reason, by_admin: actor.is_admin() }]);
            Ok(json!({ "user": user, "connections": closed }))
        }
        Request::Ban { target, seconds, reason } => {
            admin_only(actor, "ban")?;
            let (target_kind, target) = match target {
                BanTarget::Who(who) => ("user", resolve(chat, &who)?),
                BanTarget::Address(ip) => ("address", ip.to_string()),
            };
            let until = seconds.map_or(0, |s| now + s * 1000);
            chat.moderation.room_for(&actor.label(), actor.is_admin()).map_err(|e| refused(429, e))?;
            let sanction = sanction(actor, "ban", target_kind, &target, "", &reason, now, until);
            audit(chat, actor, "ban", &target, "", &reason)?;
            impose(chat, &sanction).map_err(unavailable)?;
            publish(chat, vec![Event::Sanction { sanction: sanction.clone() }]);
            Ok(json!({ "id": sanction.id.to_string(), "until": until_json(until) }))
        }
        Request::Mute { who, room, seconds, reason } => {
            let user = resolve(chat, &who)?;
            may_act_on(chat, actor, &user)?;
            match &room {
                Some(r) if !actor.moderates(r) => return Err(refused(403, "you do not moderate that room")),
                None if !actor.is_admin() => {
                    return Err(refused(403, "only an admin may mute everywhere; give a \"room\" you moderate"));
                }
                _ => {}
            }
            let room = room.unwrap_or_default();
            let until = now + seconds * 1000;
            chat.moderation.room_for(&actor.label(), actor.is_admin()).map_err(|e| refused(429, e))?;
            let sanction = sanction(actor, "mute", "user", &user, &room, &reason, now, until);
            audit(chat, actor, "mute", &user, &room, &reason)?;
            impose(chat, &sanction).map_err(unavailable)?;
            publish(chat, vec![Event::Sanction { sanction: sanction.clone() }]);
            Ok(json!({ "id": sanction.id.to_string(), "until": until_json(until) }))
        }
        Request::Unban { id } | Request::Unmute { id } => {
            let kind = if matches!(request, Request::Unban { .. }) { "ban" } else { "mute" };
            let found = chat.moderation.list(kind).into_iter().find(|s| s.id == id);
            let Some(s) = found else {
                return Err(refused(404, format!("no {kind} {id} is in force")));
            };
            if !(actor.is_admin() || (kind == "mute" && !s.room.is_empty() && actor.moderates(&s.room))) {
                return Err(refused(403, format!("you may not lift that {kind}")));
            }
            let action = if kind == "ban" { "unban" } else { "unmute" };
            audit(chat, actor, action, &id.to_string(), &s.room, "")?;
            lift(chat, id, now).map_err(unavailable)?;
            publish(chat, vec![Event::Lift { id }]);
            Ok(json!({ "id": id.to_string(), "lifted": true }))
        }
        Request::Delete { room, seq } => {
            let found = chat.store.range(&room, seq - 1, 1).map_err(unavailable)?.into_iter().find(|m| m.seq == seq);
            // Who does not moderate the room hears the same whether the message is missing
            // or another's: no way to learn what a room holds by trying numbers.
            let own = found.as_ref().is_some_and(|m| actor.user() == Some(m.user.as_str()));
            if !own && !actor.moderates(&room) {
                return Err(refused(
                    403,
                    "you may delete only your own messages (or, as a moderator, those of your rooms)",
                ));
            }
            let Some(m) = found else {
                return Err(refused(404, format!("no message {seq} in room {room:?}")));
            };
            if m.is_deleted() {
                return Ok(json!({ "room": room, "seq": seq, "deleted": true }));
            }
            audit(chat, actor, "delete", &m.user, &room, &format!("message {seq}"))?;
            chat.store.tombstone(&room, seq).map_err(unavailable)?;
            chat.hub.message_deleted(&room, seq);
            publish(chat, vec![Event::Delete { room: room.clone(), seq }]);
            Ok(json!({ "room": room, "seq": seq, "deleted": true }))
        }
        Request::Announce { room, text } => {
            let rooms = match room {
                Some(r) if actor.moderates(&r) => vec![r],
                Some(_) => return Err(refused(403, "you do not moderate that room")),
                None if actor.is_admin() => chat.hub.rooms().into_iter().map(|r| r.room).collect(),
                None => return Err(refused(403, "only an admin may announce to every room; give a \"room\"")),
            };
            audit(chat, actor, "announce", "", &rooms.join(","), &text)?;
            announce(chat, &rooms, &text)
        }
        Request::Purge { user } => {
            admin_only(actor, "purge a user's messages")?;
            audit(chat, actor, "purge", &user, "", "erasure")?;
            let gone = chat.store.tombstone_user(&user).map_err(unavailable)?;
            for (room, seq) in &gone {
                chat.hub.message_deleted(room, *seq);
            }
            publish(chat, vec![Event::Purge { user: user.clone(), messages: gone.clone() }]);
            Ok(json!({ "user": user, "deleted": gone.len() }))
        }
    }
}

/// The user a request names: the id as given, or whoever holds that display name now.
fn resolve(chat: &Chat, who: &Who) -> Result<String, Refused> {
    match who {
        Who::User(user) => Ok(user.clone()),
        Who::Name(name) => chat
            .hub
            .names
            .user_of(name, &*chat.store)
            .map(|u| u.to_string())
            .ok_or_else(|| refused(404, format!("nobody is called {name:?}"))),
    }
}

/// A moderator may not act on an admin (nor on itself, which would only lock it out).
fn may_act_on(chat: &Chat, actor: &Actor, user: &str) -> Result<(), Refused> {
    if actor.user() == Some(user) {
        return Err(refused(400, "you cannot act on yourself"));
    }
    if !actor.is_admin() && (chat.moderation.is_admin(user) || user == SYSTEM_USER) {
        return Err(refused(403, "a moderator cannot act on an admin"));
    }
    if !actor.is_moderator() {
        return Err(refused(403, "you are not a moderator"));
    }
    Ok(())
}

fn admin_only(actor: &Actor, what: &str) -> Result<(), Refused> {
    if actor.is_admin() {
        Ok(())
    } else if actor.is_moderator() {
        Err(refused(403, format!("only an admin may {what} (a moderator may kick, mute and delete)")))
    } else {
        Err(refused(403, "you are not a moderator"))
    }
}

#[allow(clippy::too_many_arguments)]
fn sanction(
    actor: &Actor,
    kind: &str,
    target_kind: &str,
    target: &str,
    room: &str,
    reason: &str,
    now: u64,
    until: u64,
) -> Sanction {
    Sanction {
        id: new_id(),
        kind: kind.into(),
        target_kind: target_kind.into(),
        target: target.into(),
        room: room.into(),
        reason: reason.into(),
        by: actor.label(),
        by_admin: actor.is_admin(),
        created: now,
        until,
    }
}

fn until_json(until: u64) -> Value {
    if until == 0 { Value::Null } else { json!(crate::clock::rfc3339(until)) }
}

fn unavailable(e: impl std::fmt::Display) -> Refused {
    log::error!("moderation: the store failed: {e}");
    refused(503, "history store unavailable; nothing was changed")
}

/// Records an action in the audit log (here; the cluster gets it with the action).
fn audit(chat: &Chat, actor: &Actor, action: &str, target: &str, room: &str, reason: &str) -> Result<(), Refused> {
    let entry = AuditEntry {
        id: new_id(),
        ts: crate::clock::now_ms(),
        actor: actor.label(),
        action: action.into(),
        target: target.into(),
        room: room.into(),
        reason: reason.into(),
    };
    chat.store.put_audit(&entry).map_err(unavailable)?;
    publish(chat, vec![Event::Audit { entry }]);
    Ok(())
}

/// A ban or mute takes effect here: stored, in force, and a ban closes what it covers.
fn impose(chat: &Chat, s: &Sanction) -> Result<(), crate::store::StoreError> {
    chat.store.put_sanction(s)?;
    chat.moderation.add(s.clone());
    if s.kind == "ban" {
        let reason = format!("banned: {}", s.reason);
        match s.target_kind.as_str() {
            "user" if s.by_admin || !chat.moderation.is_admin(&s.target) => chat.hub.close_user(&s.target, &reason),
            "address" => s.target.parse().map_or(0, |ip| chat.hub.close_address(ip, &reason)),
            _ => 0,
        };
    }
    Ok(())
}

fn lift(chat: &Chat, id: u64, now: u64) -> Result<(), crate::store::StoreError> {
    chat.moderation.remove(id);
    chat.store.lift_sanction(id, now)?;
    Ok(())
}

/// An announcement: a message from [`SYSTEM_USER`] to each room, stored and numbered like
/// any other (so history and resumes have it).
fn announce(chat: &Chat, rooms: &[String], text: &str) -> Result<Value, Refused> {
    let mut waiting = Vec::with_capacity(rooms.len());
    for room in rooms {
        let (tx, rx) = crossbeam_channel::bounded(1);
        let submit = Submit {
            room: room.clone(),
            id: chat.hub.next_id(),
            user: Arc::from(SYSTEM_USER),
            name: Arc::from(SYSTEM_NAME),
            text: text.to_string(),
            reply: Reply::Http(tx),
        };
        chat.sequencer.submit(submit).map_err(|e| refused(503, e))?;
        waiting.push(rx);
    }
    let mut sent = vec![];
    for rx in waiting {
        match rx.recv_timeout(ANNOUNCE_TIMEOUT) {
            Ok(Ok(m)) => sent.push(json!({ "room": m.room, "seq": m.seq })),
            Ok(Err(e)) => return Err(refused(503, e)),
            Err(_) => return Err(refused(503, "timed out waiting for the history store")),
        }
    }
    Ok(json!({ "messages": sent }))
}

/// Sends events to the cluster's other instances (nothing without a backplane). Best
/// effort: an instance that misses one still has the store's copy at its next start when
/// the store is shared, and the log keeps entries for a reader that reconnects.
fn publish(chat: &Chat, events: Vec<Event>) {
    let Some(bp) = chat.backplane.as_deref() else { return };
    let batch = Batch { instance: bp.instance_name().to_string(), events };
    bp.publish_moderation(&serde_json::to_string(&batch).unwrap_or_default());
}

/// Another instance's actions, read from the log: applied to this instance's store,
/// memory and connections. Malformed entries and this instance's own are ignored.
#[cfg_attr(not(feature = "redis"), allow(dead_code))] // the backplane's reader calls it
pub fn apply_remote(chat: &Chat, instance: &str, json: &str) {
    let Ok(batch) = serde_json::from_str::<Batch>(json) else {
        log::warn!("moderation: skipping a malformed cluster event");
        return;
    };
    if batch.instance == instance {
        return;
    }
    for event in batch.events {
        let done = match &event {
            Event::Kick { user, reason, by_admin } => {
                if *by_admin || !chat.moderation.is_admin(user) {
                    chat.hub.close_user(user, &format!("kicked: {reason}"));
                }
                Ok(())
            }
            Event::Sanction { sanction } => impose(chat, sanction),
            Event::Lift { id } => lift(chat, *id, crate::clock::now_ms()),
            Event::Delete { room, seq } => {
                chat.store.tombstone(room, *seq).map(|_| chat.hub.message_deleted(room, *seq))
            }
            Event::Purge { user, messages } => chat.store.tombstone_user(user).map(|_| {
                for (room, seq) in messages {
                    chat.hub.message_deleted(room, *seq);
                }
            }),
            Event::Audit { entry } => chat.store.put_audit(entry),
        };
        if let Err(e) = done {
            log::error!("moderation: applying {event:?} from the cluster failed: {e}");
        }
    }
}
