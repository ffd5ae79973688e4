//! A room's messages over HTTP (part of the API; the routes and their access rules are in
//! `api.rs`): history pages within a size and the address's read budget, and posts stored
//! and broadcast like a WebSocket client's, under the poster's user id.

use std::sync::Arc;
use std::time::Duration;

use tiny_http::Request;

use crate::net::access::auth::Identity;
use crate::net::access::history_rate::HistoryBudget;
use crate::net::http::respond::{HttpResponse, header, json, request_header};
use crate::net::shared::Shared;
use crate::store::StoredMessage;

/// Longest history page `GET /api/rooms/{room}/messages` returns, in messages…
const MAX_HISTORY_PAGE: usize = 1000;
/// …and in bytes of message text (roughly the JSON's size): a page stays small enough to
/// hold whole while a slow client reads it. Page on with `after=`.
const MAX_HISTORY_PAGE_BYTES: usize = 1024 * 1024;
/// How long a `POST` waits for its message to be stored.
pub const POST_TIMEOUT: Duration = Duration::from_secs(10);
// The connection thread must wait for tiny_http longer than any route takes.
const _: () = assert!(POST_TIMEOUT.as_secs() < crate::net::http::tiny::UPSTREAM_TIMEOUT.as_secs());

/// `GET /api/rooms/{room}/messages?after=SEQ&limit=N`: stored messages, oldest first; at
/// most `limit` (1–1000, default 100) and about 1 MiB. `before=SEQ` instead: the latest
/// `limit` messages before that one (a page of a room's past, for scrolling up; without
/// `after` or `before`, the first messages kept).
pub(super) fn room_history(room: &str, query: &str, shared: &Shared, budget: &HistoryBudget) -> HttpResponse {
    let mut after = 0u64;
    let mut before: Option<u64> = None;
    let mut limit = 100usize;
    for (key, value) in crate::net::query::pairs(query) {
        let parsed = match key {
            // Sequence numbers are stored as SQL BIGINT: past i64::MAX is not a position.
            "after" => value.parse::<u64>().ok().filter(|&v| v <= i64::MAX as u64).map(|v| after = v).is_some(),
            "before" => value.parse::<u64>().ok().filter(|&v| v <= i64::MAX as u64).map(|v| before = Some(v)).is_some(),
            "limit" => value.parse().map(|v: usize| limit = v.clamp(1, MAX_HISTORY_PAGE)).is_ok(),
            _ => true,
        };
        if !parsed {
            return json(400, &serde_json::json!({ "error": format!("{key} must be an integer from 0 to 2^63-1") }));
        }
    }
    if before.is_some() && after > 0 {
        return json(400, &serde_json::json!({ "error": "give after or before, not both" }));
    }
    // The address's history budget (see history_budget.rs): refused, not waited for, so no
    // tiny_http worker waits on one client.
    let wait = budget.wait();
    if !wait.is_zero() {
        shared.chat.metrics.rejected(crate::metrics::Refusal::Rate);
        let mib = shared.chat.config.history_read_rate_per_ip;
        let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
        return json(429, &serde_json::json!({ "error": format!("this address reads over {mib} MiB of history per second; retry in {secs} s") }))
            .with_header(header("Retry-After", &secs.to_string()));
    }
    let page = match before {
        Some(before) => shared.chat.store.before(room, before, limit),
        None => shared.chat.store.range(room, after, limit),
    };
    match page {
        Ok(mut messages) => {
            // About 1 MiB: a page going back keeps its newest messages (the ones next to
            // what the reader has), a page going forward its oldest.
            let mut bytes = 0;
            let mut fits = |m: &StoredMessage| {
                bytes += m.wire_bytes();
                bytes > MAX_HISTORY_PAGE_BYTES
            };
            if before.is_some() {
                let over = messages.iter().rev().position(&mut fits).unwrap_or(messages.len());
                let keep = over.max(1).min(messages.len());
                messages.drain(..messages.len() - keep);
            } else {
                let over = messages.iter().position(&mut fits).unwrap_or(messages.len());
                messages.truncate(over.max(1));
            }
            budget.charge(&messages);
            json(200, &serde_json::json!({ "room": room, "messages": messages }))
        }
        Err(e) => {
            log::error!("history read failed: {e}");
            json(503, &serde_json::json!({ "error": "history store unavailable" }))
        }
    }
}

/// `POST /api/rooms/{room}/messages` with `{"text":…, "name":…}`: stores and broadcasts a
/// message as a WebSocket client's would be; answers `201 {"room","seq",…}` once stored.
pub(super) fn post_message(room: &str, request: &mut Request, shared: &Shared, identity: Identity) -> HttpResponse {
    let value = match crate::net::http::respond::json_body(request) {
        Ok(map) => serde_json::Value::Object(map),
        Err(refusal) => return refusal,
    };
    let msg = serde_json::json!({ "type": "message", "room": room, "text": value.get("text") });
    let text = match crate::chat::protocol::parse_client(&msg.to_string()) {
        Ok(crate::chat::protocol::ClientMsg::Message { text, .. }) => text,
        Ok(_) => return json(400, &serde_json::json!({ "error": "not a message" })),
        Err(e) => return json(400, &serde_json::json!({ "error": e })),
    };
    let asked = match value.get("name") {
        None => None,
        Some(serde_json::Value::String(n)) => match crate::chat::protocol::normalize_name(n) {
            Ok(n) => Some(n),
            Err(e) => return json(400, &serde_json::json!({ "error": e })),
        },
        Some(_) => return json(400, &serde_json::json!({ "error": "\"name\" must be a string" })),
    };
    let (user, name) = match poster(request, shared, identity, asked) {
        Ok(who) => who,
        Err(response) => return response,
    };
    let moderation = &shared.chat.moderation;
    if let Some(why) = moderation.ban_of(Some(&user), None, moderation.is_admin(&user)) {
        return json(403, &serde_json::json!({ "error": why }));
    }
    if let Some(why) = moderation.mute_of(&user, room) {
        return json(403, &serde_json::json!({ "error": why }));
    }
    if let Err(e) = shared.chat.hub.may_post_to(room) {
        shared.chat.metrics.rejected(crate::metrics::Refusal::Capacity);
        return json(503, &serde_json::json!({ "error": e }));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let submit = crate::chat::commit::Submit {
        room: room.to_string(),
        id: shared.chat.hub.next_id(),
        user,
        name,
        text,
        reply: crate::chat::commit::Reply::Http(tx),
    };
    if let Err(e) = shared.chat.sequencer.submit(submit) {
        return json(503, &serde_json::json!({ "error": e }));
    }
    match rx.recv_timeout(POST_TIMEOUT) {
        Ok(Ok(m)) => json(201, &serde_json::to_value(&m).unwrap_or_default()),
        Ok(Err(e)) => json(503, &serde_json::json!({ "error": e })),
        Err(_) => json(503, &serde_json::json!({ "error": "timed out waiting for the history store" })),
    }
}

/// Who a post is from, and the name it shows: a JWT's user under its own (reserved) name; a
/// guest (its credential in `?identity=` or the cookie) or, without one, the pseudo-user
/// `http` (every anonymous post), under the name asked for (or `http`) if no other user
/// holds or owns it. `Err`: the `403` (or `503`) to answer.
fn poster(
    request: &Request,
    shared: &Shared,
    identity: Identity,
    asked: Option<String>,
) -> Result<(Arc<str>, Arc<str>), HttpResponse> {
    let (names, store) = (&shared.chat.hub.names, &*shared.chat.store);
    let refuse = |error: &str| json(403, &serde_json::json!({ "error": error }));
    match identity {
        Identity::Named { name: claim, user, .. } => {
            let user: Arc<str> = Arc::from(user);
            let (own, _) =
                names.reserve(&user, &claim, store).map_err(|e| json(503, &serde_json::json!({ "error": e })))?;
            match asked {
                Some(other) if *other != *own => Err(refuse("your name comes from your login and cannot be changed")),
                _ => Ok((user, own)),
            }
        }
        Identity::Anonymous => {
            let query = request.url().split_once('?').map_or("", |(_, q)| q);
            let user: Arc<str> = match crate::net::access::identity::offered(query, request_header(request, "Cookie")) {
                Some(credential) => match shared.guest_keys.verify(&credential) {
                    Some(user) => Arc::from(user),
                    None => {
                        return Err(json(
                            401,
                            &serde_json::json!({ "error": crate::net::access::identity::BAD_IDENTITY }),
                        ));
                    }
                },
                None => Arc::from(ANONYMOUS_POSTER),
            };
            let name: Arc<str> = match asked {
                Some(asked) => Arc::from(asked),
                None => shared.chat.hub.name_of(&user).unwrap_or_else(|| Arc::from(ANONYMOUS_POSTER)),
            };
            match names.user_of(&name, store) {
                Some(holder) if holder != user => Err(refuse(crate::chat::names::NAME_TAKEN)),
                _ => Ok((user, name)),
            }
        }
    }
}

/// The user id (and default name) of posts that carry no identity.
pub const ANONYMOUS_POSTER: &str = "http";
