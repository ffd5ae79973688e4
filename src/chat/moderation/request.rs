//! A moderation request, read from a JSON object: the body of `POST /api/admin/ACTION`, or
//! a WebSocket request `{"type":"ACTION",…}`. One parser for both, so both refuse the same
//! input with the same words (docs/moderation.md lists them).

use std::net::IpAddr;

use serde_json::{Map, Value};

use crate::chat::protocol::{normalize_name, validate_room, validate_text, validate_user};

/// Whom an action is about: a user id, or whoever holds a display name now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Who {
    User(String),
    Name(String),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BanTarget {
    Who(Who),
    /// An IPv4 address, or an IPv6 address (its /64 is banned).
    Address(IpAddr),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Kick { who: Who, reason: String },
    Ban { target: BanTarget, seconds: Option<u64>, reason: String },
    Unban { id: u64 },
    Mute { who: Who, room: Option<String>, seconds: u64, reason: String },
    Unmute { id: u64 },
    Delete { room: String, seq: u64 },
    Announce { room: Option<String>, text: String },
    Purge { user: String },
}

/// Longest ban or mute: ten years (longer is a ban without `seconds`).
pub const MAX_SECONDS: u64 = 10 * 365 * 86_400;
/// Longest reason, in characters.
pub const MAX_REASON_CHARS: usize = 200;

/// The request `action` with the fields of `obj` (others, like `type` and `ref`, are
/// ignored). The error is the one the client gets.
pub fn parse(action: &str, obj: &Map<String, Value>) -> Result<Request, String> {
    Ok(match action {
        "kick" => Request::Kick { who: who(obj)?, reason: reason(obj)? },
        "ban" => {
            let target = match obj.get("address") {
                Some(Value::String(a)) if !obj.contains_key("user") && !obj.contains_key("name") => {
                    BanTarget::Address(a.parse().map_err(|_| format!("\"address\" is not an IP address: {a:?}"))?)
                }
                Some(Value::String(_)) => return Err("give one of \"user\", \"name\" or \"address\"".into()),
                Some(_) => return Err("\"address\" must be a string".into()),
                None => BanTarget::Who(who(obj)?),
            };
            let seconds = match obj.get("seconds") {
                None | Some(Value::Null) => None,
                Some(_) => Some(seconds(obj)?),
            };
            Request::Ban { target, seconds, reason: reason(obj)? }
        }
        "unban" | "unmute" => {
            let id = match obj.get("id") {
                Some(Value::String(s)) => s.parse().ok(),
                Some(Value::Number(n)) => n.as_u64(),
                _ => None,
            }
            .ok_or("\"id\" must be a sanction id (as /api/admin/bans lists it)")?;
            if action == "unban" { Request::Unban { id } } else { Request::Unmute { id } }
        }
        "mute" => {
            Request::Mute { who: who(obj)?, room: room(obj, false)?, seconds: seconds(obj)?, reason: reason(obj)? }
        }
        "delete" => {
            let seq = obj.get("seq").and_then(Value::as_u64).filter(|&s| s > 0 && s <= i64::MAX as u64);
            Request::Delete {
                room: room(obj, true)?.unwrap_or_default(),
                seq: seq.ok_or("\"seq\" must be a message's number (a positive integer)")?,
            }
        }
        "announce" => {
            let text = match obj.get("text") {
                Some(Value::String(t)) => t.clone(),
                _ => return Err("\"text\" must be a string".into()),
            };
            validate_text(&text)?;
            Request::Announce { room: room(obj, false)?, text }
        }
        "purge-user" => match obj.get("user") {
            Some(Value::String(u)) => {
                validate_user(u)?;
                Request::Purge { user: u.clone() }
            }
            _ => return Err("\"user\" must be a user id".into()),
        },
        other => return Err(format!("unknown moderation action {other:?}")),
    })
}

/// `user` (an id) or `name` (a display name), exactly one.
fn who(obj: &Map<String, Value>) -> Result<Who, String> {
    match (obj.get("user"), obj.get("name")) {
        (Some(Value::String(u)), None) => {
            validate_user(u)?;
            Ok(Who::User(u.clone()))
        }
        (None, Some(Value::String(n))) => Ok(Who::Name(normalize_name(n)?)),
        (Some(_), Some(_)) => Err("give \"user\" or \"name\", not both".into()),
        _ => Err("give \"user\" (a user id) or \"name\" (a display name), as a string".into()),
    }
}

/// `reason`: required, 1–200 characters of text.
fn reason(obj: &Map<String, Value>) -> Result<String, String> {
    match obj.get("reason") {
        Some(Value::String(r)) if r.chars().count() <= MAX_REASON_CHARS && !r.chars().any(char::is_control) => {
            if r.trim().is_empty() { Err("\"reason\" must not be empty".into()) } else { Ok(r.clone()) }
        }
        Some(Value::String(_)) => {
            Err(format!("\"reason\" must be at most {MAX_REASON_CHARS} characters, without control characters"))
        }
        _ => Err("\"reason\" must be a string (say why: the user and the audit log see it)".into()),
    }
}

/// `seconds`: 1 to ten years.
fn seconds(obj: &Map<String, Value>) -> Result<u64, String> {
    match obj.get("seconds").and_then(Value::as_u64) {
        Some(s) if (1..=MAX_SECONDS).contains(&s) => Ok(s),
        _ => Err(format!("\"seconds\" must be an integer from 1 to {MAX_SECONDS} (ten years)")),
    }
}

/// `room`: optional (absent or null), or required.
fn room(obj: &Map<String, Value>, required: bool) -> Result<Option<String>, String> {
    match obj.get("room") {
        None | Some(Value::Null) if !required => Ok(None),
        Some(Value::String(r)) => {
            validate_room(r)?;
            Ok(Some(r.clone()))
        }
        _ => Err(if required { "missing \"room\"".into() } else { "\"room\" must be a string".into() }),
    }
}
