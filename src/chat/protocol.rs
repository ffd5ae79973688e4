//! The chat protocol spoken on `/ws`: what clients may send, what the server sends back,
//! and the WebSocket framing of server frames (done once per broadcast, not once per receiver).
//!
//! Every message is a JSON object with a `type` field; `docs/protocol.md` is the reference.

use bytes::Bytes;
use serde::Serialize;
use serde_json::Value;

/// Longest chat text accepted, in characters. The frame cap (`--max-message-bytes`) bounds
/// memory; this bounds what a reader has to scroll past.
pub const MAX_TEXT_CHARS: usize = 4000;
/// Longest display name, in characters.
pub const MAX_NAME_CHARS: usize = 32;

/// The room every chat client starts in, and the default `room` of a `message`.
pub const LOBBY: &str = "lobby";

/// A request from a chat client, after validation.
#[derive(Debug, PartialEq, Eq)]
pub enum ClientMsg {
    /// Store, then broadcast `text` to the members of `room`; acknowledge with `ref`.
    Message { room: String, text: String, r#ref: Option<u64> },
    /// Change the sender's display name.
    Name { name: String },
    /// Become a member of a room.
    Join { room: String },
    /// Stop being a member of a room.
    Leave { room: String },
    /// Replay `room` from `seq > after`, then continue live.
    Resume { room: String, after: u64 },
    /// The sender is typing in `room`: relayed to the others there, never stored.
    Typing { room: String },
    /// A direct message to every connection of user `to` (and the sender's own), stored
    /// in their conversation.
    Dm { to: Peer, text: String, r#ref: Option<u64> },
    /// Replay the conversation with `with` from `seq > after`.
    ResumeDm { with: Peer, after: u64 },
    /// A moderation request (`kick`, `ban`, `unban`, `mute`, `unmute`, `delete`,
    /// `announce`): read by `chat/moderation/request.rs`, as the admin API's bodies are.
    Moderate { action: String, fields: serde_json::Map<String, Value>, r#ref: Option<u64> },
}

/// The other party of a direct message, as the client named it: by display name (`to`,
/// `with`: whoever holds that name now) or by user id (`to_user`, `with_user`).
#[derive(Debug, PartialEq, Eq, Clone)]
pub enum Peer {
    Name(String),
    User(String),
}

/// Longest user id, in bytes (a JWT `sub` longer than this is refused).
pub const MAX_USER_BYTES: usize = 128;

/// User ids: 1–128 bytes, no control characters (they appear in logs and conversation keys).
pub fn validate_user(user: &str) -> Result<(), String> {
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(format!("a user id must be 1-{MAX_USER_BYTES} bytes"));
    }
    if user.chars().any(char::is_control) {
        return Err("a user id must not contain control characters".into());
    }
    Ok(())
}

/// The history key of the conversation between two users: `dm:u:` and both ids, sorted,
/// the first length-prefixed (ids may contain `:`). Never a valid room name, so never
/// joinable. (Conversations stored before user ids, `dm:LEN:NAME:NAME`, keyed by display
/// names, stay in the store but are never delivered or replayed: who held a name then is
/// not who holds it now. See docs/protocol.md.)
pub fn dm_key(a: &str, b: &str) -> String {
    let (x, y) = if a <= b { (a, b) } else { (b, a) };
    format!("dm:u:{}:{x}:{y}", x.len())
}

/// The two user ids of a conversation key (see [`dm_key`]); `None` for a room, and for a
/// conversation keyed by names before user ids existed.
pub fn dm_parties(key: &str) -> Option<(&str, &str)> {
    let rest = key.strip_prefix("dm:u:")?;
    let (len, rest) = rest.split_once(':')?;
    let x = rest.get(..len.parse().ok()?)?;
    let y = rest.get(x.len()..)?.strip_prefix(':')?;
    Some((x, y))
}

/// Whether a history key is a conversation (of either form), not a room.
pub fn is_conversation(key: &str) -> bool {
    key.starts_with("dm:")
}

/// A `dm` or `resume` field naming the peer: `NAME_FIELD` (a display name) or `USER_FIELD`
/// (a user id), exactly one of them.
fn take_peer(obj: &mut serde_json::Map<String, Value>, name_field: &str, user_field: &str) -> Result<Peer, String> {
    match (obj.contains_key(name_field), obj.contains_key(user_field)) {
        (true, true) => Err(format!("give \"{name_field}\" or \"{user_field}\", not both")),
        (false, true) => {
            let user = take_string(obj, user_field)?;
            validate_user(&user)?;
            Ok(Peer::User(user))
        }
        _ => Ok(Peer::Name(normalize_name(&take_string(obj, name_field)?)?)),
    }
}

/// An optional `ref`: a non-negative integer the server echoes in the `ack` or `error`.
fn take_ref(obj: &mut serde_json::Map<String, Value>) -> Result<Option<u64>, String> {
    match obj.remove("ref") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(_) => Err("\"ref\" must be a non-negative integer".into()),
    }
}

/// Parses and validates one text frame from a chat client. The error string is sent back to
/// the client verbatim in `{"type":"error","error":...}`, so it says what was wrong.
pub fn parse_client(frame: &str) -> Result<ClientMsg, String> {
    let value: Value = serde_json::from_str(frame).map_err(|_| "invalid JSON".to_string())?;
    let Value::Object(mut obj) = value else {
        return Err("message must be a JSON object".into());
    };
    let kind = match obj.get("type") {
        Some(Value::String(kind)) => kind.clone(),
        Some(_) => return Err("\"type\" must be a string".into()),
        None => return Err("missing \"type\"".into()),
    };
    match kind.as_str() {
        "message" => {
            let text = take_string(&mut obj, "text")?;
            validate_text(&text)?;
            let room = optional_room(&mut obj)?;
            Ok(ClientMsg::Message { room, text, r#ref: take_ref(&mut obj)? })
        }
        "join" | "leave" => {
            let room = take_string(&mut obj, "room")?;
            validate_room(&room)?;
            Ok(if kind == "join" { ClientMsg::Join { room } } else { ClientMsg::Leave { room } })
        }
        "resume" => {
            let after = match obj.remove("after") {
                Some(Value::Number(n)) if n.as_u64().is_some() => n.as_u64().unwrap_or(0),
                Some(_) => return Err("\"after\" must be a non-negative integer".into()),
                None => return Err("missing \"after\"".into()),
            };
            if obj.contains_key("with") || obj.contains_key("with_user") {
                let with = take_peer(&mut obj, "with", "with_user")?;
                return Ok(ClientMsg::ResumeDm { with, after });
            }
            let room = optional_room(&mut obj)?;
            Ok(ClientMsg::Resume { room, after })
        }
        "dm" => {
            let to = take_peer(&mut obj, "to", "to_user")?;
            let text = take_string(&mut obj, "text")?;
            validate_text(&text)?;
            Ok(ClientMsg::Dm { to, text, r#ref: take_ref(&mut obj)? })
        }
        "name" => {
            let name = normalize_name(&take_string(&mut obj, "name")?)?;
            Ok(ClientMsg::Name { name })
        }
        "typing" => Ok(ClientMsg::Typing { room: optional_room(&mut obj)? }),
        "kick" | "ban" | "unban" | "mute" | "unmute" | "delete" | "announce" => {
            Ok(ClientMsg::Moderate { action: kind, r#ref: take_ref(&mut obj)?, fields: obj })
        }
        other => Err(format!("unknown type {:?}", truncate(other, 40))),
    }
}

fn take_string(obj: &mut serde_json::Map<String, Value>, field: &str) -> Result<String, String> {
    match obj.remove(field) {
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(format!("\"{field}\" must be a string")),
        None => Err(format!("missing \"{field}\"")),
    }
}

fn optional_room(obj: &mut serde_json::Map<String, Value>) -> Result<String, String> {
    match obj.remove("room") {
        None | Some(Value::Null) => Ok(LOBBY.to_string()),
        Some(Value::String(room)) => {
            validate_room(&room)?;
            Ok(room)
        }
        Some(_) => Err("\"room\" must be a string".into()),
    }
}

/// Room names: 1–64 characters of `a-z`, `0-9`, `_`, `-` (safe in URLs and logs as they are).
pub fn validate_room(room: &str) -> Result<(), String> {
    if room.is_empty() || room.len() > 64 {
        return Err("\"room\" must be 1-64 characters".into());
    }
    if !room.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-') {
        return Err("\"room\" may contain only a-z, 0-9, _ and -".into());
    }
    Ok(())
}

/// A room name, or a prefix of one followed by `*` (`team-*`; `*` alone is every room).
pub fn validate_room_pattern(pattern: &str) -> Result<(), String> {
    match pattern.strip_suffix('*') {
        Some("") => Ok(()),
        Some(prefix) => validate_room(prefix),
        None => validate_room(pattern),
    }
    .map_err(|e| format!("room pattern {pattern:?}: {e}"))
}

/// Whether `room` is one a pattern (see [`validate_room_pattern`]) covers.
pub fn pattern_matches(pattern: &str, room: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => room.starts_with(prefix),
        None => pattern == room,
    }
}

pub fn validate_text(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("\"text\" must not be empty".into());
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(format!("\"text\" is longer than {MAX_TEXT_CHARS} characters"));
    }
    // Tabs and line breaks are text; other control characters (NUL, escape sequences, C1)
    // are not, and some stores (Postgres) cannot even hold NUL.
    if text.chars().any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t')) {
        return Err("\"text\" must not contain control characters other than tab and newline".into());
    }
    Ok(())
}

/// Names are shown on every screen, so they are short, and may not carry anything that
/// changes how other text looks or hides what the name is: control characters (newlines,
/// escape sequences), format characters (bidi overrides, zero-width spaces and joiners, the
/// BOM), invisible fillers, or spaces other than the plain one. Returns the name in Unicode
/// NFC, the form names are compared in: `é` typed as one code point or as `e` + accent is
/// the same name.
pub fn normalize_name(name: &str) -> Result<String, String> {
    use unicode_normalization::UnicodeNormalization;
    let name: String = name.nfc().collect();
    let chars = name.chars().count();
    if chars == 0 || name.trim().is_empty() {
        return Err("\"name\" must not be empty".into());
    }
    if chars > MAX_NAME_CHARS {
        return Err(format!("\"name\" is longer than {MAX_NAME_CHARS} characters"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err("\"name\" must not contain control characters".into());
    }
    if let Some(c) = name.chars().find(|&c| is_invisible(c)) {
        return Err(format!("\"name\" must not contain invisible or format characters (U+{:04X})", c as u32));
    }
    if name.starts_with(' ') || name.ends_with(' ') {
        return Err("\"name\" must not start or end with a space".into());
    }
    Ok(name)
}

/// The form two display names are compared in: NFKC (so `ｂｏｂ` in fullwidth letters,
/// or `ﬁ` as a ligature, is the name it looks like) and lower case (`Bob` is `bob`). Two
/// users never hold names with the same key at once (see `chat/names.rs`).
pub fn name_key(name: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    name.nfkc().flat_map(char::to_lowercase).collect()
}

/// Characters that render as nothing, or change how the text around them renders: Unicode's
/// format characters (general category Cf, which includes every bidi control, zero-width
/// space/joiners and the BOM), the combining grapheme joiner, variation selectors, Hangul
/// fillers, the blank Braille pattern, and every space but U+0020.
fn is_invisible(c: char) -> bool {
    matches!(c,
        // Cf, Unicode 15.1, in full.
        '\u{00AD}' | '\u{0600}'..='\u{0605}' | '\u{061C}' | '\u{06DD}' | '\u{070F}' | '\u{0890}'..='\u{0891}'
        | '\u{08E2}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}' | '\u{FEFF}' | '\u{FFF9}'..='\u{FFFB}' | '\u{110BD}' | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}' | '\u{1BCA0}'..='\u{1BCA3}' | '\u{1D173}'..='\u{1D17A}' | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}'
        // Invisible, though not Cf.
        | '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180D}' | '\u{180F}'
        | '\u{2800}' | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}' | '\u{E0100}'..='\u{E01EF}')
        || (c.is_whitespace() && c != ' ')
}

fn truncate(s: &str, max_chars: usize) -> &str {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Everything the server sends on `/ws`. Serialized with `type` as the tag.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ServerMsg<'a> {
    /// `id`: this connection; `user`: who it is (stable); `identity`: for a guest, the
    /// credential that brings it back as the same user (`?identity=` or the cookie).
    Welcome {
        id: u64,
        user: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        identity: Option<&'a str>,
        /// `"admin"` or `"mod"` (with `mod_rooms`), for a moderator: the page shows its controls.
        #[serde(skip_serializing_if = "Option::is_none")]
        role: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        mod_rooms: Option<&'a [String]>,
    },
    Message {
        room: &'a str,
        seq: u64,
        id: u64,
        user: &'a str,
        name: &'a str,
        text: &'a str,
        ts: u64,
        /// A deleted message (its text is empty): shown as such, in its place.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    Join {
        room: &'a str,
        id: u64,
        user: &'a str,
        name: &'a str,
    },
    Leave {
        room: &'a str,
        id: u64,
        user: &'a str,
        name: &'a str,
    },
    /// `seq`: the room's last message so far; later messages have higher numbers.
    /// `count`: distinct users in the room; `members` lists at most 100 of them (the
    /// newcomer first), so entering a crowd costs a bounded frame.
    Presence {
        room: &'a str,
        seq: u64,
        count: usize,
        members: &'a [Member<'a>],
    },
    Name {
        id: u64,
        user: &'a str,
        name: &'a str,
        old: &'a str,
    },
    Ack {
        room: &'a str,
        r#ref: u64,
        seq: u64,
    },
    Gap {
        room: &'a str,
        from: u64,
        to: u64,
    },
    /// A direct message from `user` (shown as `name`) to `to_user` (shown as `to`, when
    /// the server knows that user's name), `seq` numbering their conversation `room` (its
    /// key, see [`dm_key`]).
    Dm {
        room: &'a str,
        seq: u64,
        id: u64,
        user: &'a str,
        name: &'a str,
        to_user: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        to: Option<&'a str>,
        text: &'a str,
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        deleted: bool,
    },
    /// Message `seq` of `room` was deleted: show it as deleted.
    Deleted {
        room: &'a str,
        seq: u64,
    },
    /// A moderation request was carried out (`result`: what the admin API answers).
    Done {
        action: &'a str,
        result: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<u64>,
    },
    /// `name` is typing in `room`; show it for `expires_ms` unless another comes.
    Typing {
        room: &'a str,
        id: u64,
        user: &'a str,
        name: &'a str,
        expires_ms: u64,
    },
    Error {
        error: &'a str,
        /// The `ref` of the message this error is about, if it had one.
        #[serde(skip_serializing_if = "Option::is_none")]
        r#ref: Option<u64>,
    },
}

/// One entry of a `presence` list.
#[derive(Debug, Serialize)]
pub struct Member<'a> {
    pub id: u64,
    pub user: &'a str,
    pub name: &'a str,
}

impl ServerMsg<'_> {
    /// Serializes to JSON and frames it as one unmasked, final text frame.
    pub fn to_frame(&self) -> Bytes {
        // Serializing these plain structs cannot fail: no maps with non-string keys, no
        // user types with fallible Serialize impls.
        let json = serde_json::to_vec(self).expect("ServerMsg serializes");
        crate::conn::frames::text_frame(&json)
    }
}

#[cfg(test)]
mod tests;
