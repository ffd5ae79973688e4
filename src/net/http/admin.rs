//! The moderation API (part of the API; docs/moderation.md is the reference): `/api/admin/…`
//! and `DELETE /api/rooms/{room}/messages/{seq}`. What each action does is the chat's
//! (`chat/moderation/`); this file decides who is asking, and how the answer reads.
//!
//! Access, cheapest check first:
//! - Without `--admin-token` and `--jwt-secret`, none of it exists: `404`.
//! - A browser page from a foreign origin: `403`; a body that is not JSON: `415` (so a
//!   cross-site form can never act).
//! - The credential comes in `Authorization: Bearer` only (never the URL, which logs keep,
//!   nor a cookie, which a browser sends by itself): the admin token, or a JWT whose roles
//!   give the right. Missing or wrong: `401`, and the attempt spends the address's upgrade
//!   budget like any failed credential (`429` when spent).
//! - A banned user or address: `403`. Over the address's request rate: `429`.

use tiny_http::{Method, Request};

use crate::chat::moderation::actions::{Refused, perform};
use crate::chat::moderation::{Actor, Role};
use crate::net::access::auth::{Identity, constant_time_eq};
use crate::net::http::respond::{
    HttpResponse, header, json, json_body, peer_ip, refuse_credential, refuse_cross_site, refuse_over_rate,
    request_header,
};
use crate::net::shared::Shared;

/// Answers a moderation route, or `None` if `path` is not one.
pub fn route(request: &mut Request, shared: &Shared, path: &str, query: &str) -> Option<HttpResponse> {
    let method = request.method().clone();
    let message = path
        .strip_prefix("/api/rooms/")
        .and_then(|rest| rest.split_once("/messages/"))
        .filter(|_| method == Method::Delete)
        .map(|(room, seq)| (room.to_string(), seq.to_string()));
    let admin = path.strip_prefix("/api/admin/").map(str::to_string);
    if message.is_none() && admin.is_none() {
        return None;
    }
    if !shared.chat.config.moderation_enabled() {
        return Some(json(404, &serde_json::json!({ "error": "no such API endpoint" })));
    }
    let actor = match who_asks(request, shared) {
        Ok(actor) => actor,
        Err(refusal) => return Some(refusal),
    };
    let answer = match (message, admin.as_deref(), &method) {
        (Some((room, seq)), _, _) => {
            let fields = serde_json::json!({ "room": room, "seq": seq.parse::<u64>().ok() });
            act(shared, &actor, "delete", fields.as_object().cloned().unwrap_or_default())
        }
        (_, Some(action @ ("kick" | "ban" | "mute" | "announce" | "purge-user")), Method::Post) => {
            match json_body(request) {
                Ok(fields) => act(shared, &actor, action, fields),
                Err(refusal) => refusal,
            }
        }
        (_, Some(rest), Method::Delete) if rest.starts_with("bans/") || rest.starts_with("mutes/") => {
            let (kind, id) = rest.split_once('/').unwrap_or_default();
            let action = if kind == "bans" { "unban" } else { "unmute" };
            act(shared, &actor, action, serde_json::json!({ "id": id }).as_object().cloned().unwrap_or_default())
        }
        (_, Some(kind @ ("bans" | "mutes")), Method::Get | Method::Head) => list(shared, &actor, kind),
        (_, Some("audit"), Method::Get | Method::Head) => audit(shared, &actor, query),
        _ => json(404, &serde_json::json!({ "error": "no such moderation endpoint (see docs/moderation.md)" })),
    };
    Some(answer.with_header(header("Cache-Control", "no-store")))
}

/// Parses and carries out one action; the answer as JSON.
fn act(
    shared: &Shared,
    actor: &Actor,
    action: &str,
    fields: serde_json::Map<String, serde_json::Value>,
) -> HttpResponse {
    match crate::net::access::moderation::parse(action, &fields) {
        Ok(req) => match perform(&shared.chat, actor, req) {
            Ok(result) => json(200, &result),
            Err(Refused { status, error }) => json(status, &serde_json::json!({ "error": error })),
        },
        Err(error) => {
            shared.chat.moderation.count("refused");
            json(400, &serde_json::json!({ "error": error }))
        }
    }
}

/// Who is asking: the admin token, or a JWT (its roles decide what it may do; a member's
/// may delete its own messages). Refusals: see the module's doc.
fn who_asks(request: &Request, shared: &Shared) -> Result<Actor, HttpResponse> {
    let cfg = &shared.chat.config;
    let ip = peer_ip(request).unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    if let Some(refusal) = refuse_cross_site(request, shared) {
        return Err(refusal);
    }
    let bearer = crate::net::access::auth::token_from("", request_header(request, "Authorization"), None);
    let actor = bearer.and_then(|given| {
        if cfg.admin_token.as_deref().is_some_and(|t| constant_time_eq(given.as_bytes(), t.as_bytes())) {
            return Some(Actor::Token);
        }
        match crate::net::access::auth::authenticate(&given, None, cfg.jwt_secret.as_deref())? {
            Identity::Named { user, role, .. } => Some(Actor::User { user: user.into(), role }),
            Identity::Anonymous => None,
        }
    });
    let Some(actor) = actor else {
        return Err(refuse_credential(request, shared, "give the admin token or a JWT as Authorization: Bearer"));
    };
    if let Actor::User { user, role } = &actor {
        let moderation = &shared.chat.moderation;
        if *role == Role::Admin {
            moderation.saw_admin(user);
        }
        if let Some(why) = moderation.ban_of(Some(user), Some(ip), *role == Role::Admin) {
            return Err(json(403, &serde_json::json!({ "error": why })));
        }
    }
    if let Some(refusal) = refuse_over_rate(request, shared) {
        return Err(refusal);
    }
    Ok(actor)
}

/// `GET /api/admin/bans` (admins) and `/mutes` (a moderator sees its rooms' mutes).
fn list(shared: &Shared, actor: &Actor, kind: &str) -> HttpResponse {
    let singular = if kind == "bans" { "ban" } else { "mute" };
    if !actor.is_moderator() || (kind == "bans" && !actor.is_admin()) {
        return json(403, &serde_json::json!({ "error": format!("you may not list {kind}") }));
    }
    let mut list = shared.chat.moderation.list(singular);
    list.retain(|s| actor.is_admin() || (!s.room.is_empty() && actor.moderates(&s.room)));
    let list: Vec<serde_json::Value> = list
        .iter()
        .map(|s| {
            let mut v = serde_json::to_value(s).unwrap_or_default();
            v["until"] = if s.until == 0 { serde_json::Value::Null } else { crate::clock::rfc3339(s.until).into() };
            v["created"] = crate::clock::rfc3339(s.created).into();
            v
        })
        .collect();
    json(200, &serde_json::json!({ kind: list }))
}

/// `GET /api/admin/audit?before=ID&limit=N`: newest first, `limit` 1–500 (default 100);
/// `next` is the `before` of the following page.
fn audit(shared: &Shared, actor: &Actor, query: &str) -> HttpResponse {
    if !actor.is_admin() {
        return json(403, &serde_json::json!({ "error": "only an admin may read the audit log" }));
    }
    let mut before = i64::MAX as u64;
    let mut limit = 100usize;
    for (key, value) in crate::net::query::pairs(query) {
        let ok = match key {
            "before" => value.parse::<u64>().map(|v| before = v).is_ok(),
            "limit" => value.parse::<usize>().map(|v| limit = v.clamp(1, 500)).is_ok(),
            _ => true,
        };
        if !ok {
            return json(400, &serde_json::json!({ "error": format!("{key} must be a non-negative integer") }));
        }
    }
    match shared.chat.store.audit(before, limit) {
        Ok(entries) => {
            let next = (entries.len() == limit).then(|| entries.last().map(|e| e.id.to_string())).flatten();
            let entries: Vec<serde_json::Value> = entries
                .iter()
                .map(|e| {
                    let mut v = serde_json::to_value(e).unwrap_or_default();
                    v["time"] = crate::clock::rfc3339(e.ts).into();
                    v
                })
                .collect();
            json(200, &serde_json::json!({ "entries": entries, "next": next }))
        }
        Err(e) => {
            log::error!("audit read failed: {e}");
            json(503, &serde_json::json!({ "error": "history store unavailable" }))
        }
    }
}
