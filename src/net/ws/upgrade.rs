//! The upgrade: what a request head asking for a WebSocket becomes — the endpoint, the
//! access checks (origin, attempt rate, credentials, capacity), the user it is (a JWT's
//! `sub`, or a guest identity), bans — and the `101` queued in the connection's outbox.
//! `session.rs` calls it first, on the connection's own thread.

use std::sync::Arc;

use bytes::Bytes;

use crate::conn::{Conn, Kind};
use crate::net::access::auth::{self, Identity, UserSlot};
use crate::net::access::per_ip;
use crate::net::entry::head::Head;
use crate::net::shared::Shared;

/// What the upgrade decided.
pub(super) struct Admitted<'a> {
    pub(super) kind: Kind,
    pub(super) identity: Identity,
    /// Who this is: the JWT's `sub`, or a guest's id ("" on `/echo`, which has no users).
    pub(super) user_id: Arc<str>,
    /// A guest's credential, for its welcome (so it can come back as the same user).
    pub(super) credential: Option<String>,
    /// The session counted against its user, until the session ends.
    pub(super) user: Option<UserSlot<'a>>,
    /// The upgrade URL's query (`?resume=`).
    pub(super) query: String,
}

/// The upgrade: the endpoint (404), a valid WebSocket request (400), then the access checks
/// (see [`admit`]). On success the `101` is queued; on refusal, the status and text to send.
// Not inlined (nor are `close_gently` and `handle_chat`): their big frames must not become
// part of the frames a connection idles in for hours; see `threads::release_unused_stack`.
#[inline(never)]
pub(super) fn upgrade<'a>(
    conn: &Arc<Conn>,
    head: &Head,
    ip: std::net::IpAddr,
    ip_connections: usize,
    sessions: usize,
    shared: &'a Shared,
) -> Result<Admitted<'a>, (u16, String)> {
    let kind = match head.path() {
        "/ws" => Kind::Chat,
        "/echo" => Kind::Echo,
        // The tutorials' clients connect to the bare address and speak plain text.
        "/" => Kind::Plain,
        _ => return Err((404, "no WebSocket endpoint here; use /ws (JSON chat), / (plain-text chat) or /echo".into())),
    };
    let request = head.to_ws_request().map_err(|e| (400, format!("bad request: {e}")))?;
    let response = tungstenite::handshake::server::create_response(&request)
        .map_err(|e| (400, format!("not a valid WebSocket upgrade: {e}")))?;
    let identity = admit(head, conn, shared, ip_connections, sessions).map_err(|(s, t)| (s, t.to_string()))?;
    let (user_id, credential) = match &identity {
        Identity::Named { user, .. } => (user.clone(), None),
        Identity::Anonymous if kind == Kind::Echo => (String::new(), None),
        Identity::Anonymous => guest(head, shared)?,
    };
    // A ban (of the user, or of the address) refuses the upgrade with its reason and end.
    let moderation = &shared.chat.moderation;
    let admin = matches!(&identity, Identity::Named { role: crate::chat::moderation::Role::Admin, .. });
    if admin {
        moderation.saw_admin(&user_id);
    }
    let user = (!user_id.is_empty()).then_some(user_id.as_str());
    if let Some(why) = moderation.ban_of(user, Some(ip), admin) {
        return Err((403, why));
    }
    // One account may not take the server's connections from many addresses.
    // One allocation for the id, shared by the connection, its session count and the hub.
    let user_id: Arc<str> = Arc::from(user_id);
    let user = match &*user_id {
        "" => None,
        _ => {
            let max = shared.chat.config.max_connections_per_user;
            Some(shared.user_sessions.enter(&user_id, max).ok_or_else(|| {
                (429, format!("too many connections for this user (at most {max}; see --max-connections-per-user)"))
            })?)
        }
    };
    let mut bytes = Vec::with_capacity(160);
    tungstenite::handshake::server::write_response(&mut bytes, &response)
        .map_err(|e| (500, format!("cannot write the upgrade response: {e}")))?;
    conn.push_control(Bytes::from(bytes), false);
    conn.flush();
    Ok(Admitted { kind, identity, user_id, credential, user, query: head.query().to_string() })
}

/// A guest's user id and credential: the one it presents (`?identity=`, or the cookie), if
/// this server issued it (else 401), or a new one.
fn guest(head: &Head, shared: &Shared) -> Result<(String, Option<String>), (u16, String)> {
    let keys = &shared.guest_keys;
    match crate::net::access::identity::offered(head.query(), head.header("Cookie")) {
        Some(credential) => match keys.verify(&credential) {
            Some(user) => Ok((user, Some(credential))),
            None => Err((401, crate::net::access::identity::BAD_IDENTITY.into())),
        },
        None => keys.issue().map(|(user, c)| (user, Some(c))).ok_or((503, "no random numbers for a guest id".into())),
    }
}

/// The access checks every upgrade passes before the `101`, cheapest first; see `access.rs` and `auth.rs`.
/// The address's attempt budget is spent before the credentials are checked, so wrong
/// guesses are throttled like any other attempt.
fn admit(
    head: &Head,
    conn: &Conn,
    shared: &Shared,
    ip_connections: usize,
    sessions: usize,
) -> Result<Identity, (u16, &'static str)> {
    let cfg = &shared.chat.config;
    let ip = per_ip::client_ip(conn.peer.ip(), head.header("X-Forwarded-For"), &cfg.trusted_proxies);
    if shared.is_shutting_down() {
        return Err((503, "server is shutting down"));
    }
    // Browsers always send Origin; tools usually do not. A page from another site must not
    // be able to open a socket with this user's credentials (cross-site WebSocket hijacking).
    if let Some(origin) = head.header("Origin")
        && !shared.allowed_origins.iter().any(|o| o == origin)
    {
        return Err((403, "origin not allowed (see --allow-origin)"));
    }
    if !shared.ips.allow_upgrade(ip, cfg.upgrade_rate, cfg.upgrade_rate * 2.0) {
        return Err((429, "too many connection attempts; slow down"));
    }
    let mut identity = Identity::Anonymous;
    if cfg.auth_required() {
        let query = head.query();
        let ticket = crate::net::query::get(query, "ticket");
        let accepted = match ticket {
            Some(ticket) => shared.tickets.redeem(&ticket, ip),
            None => auth::token_from(query, head.header("Authorization"), head.header("Cookie"))
                .and_then(|c| auth::authenticate(&c, cfg.token.as_deref(), cfg.jwt_secret.as_deref())),
        };
        match accepted {
            Some(who) => identity = who,
            None => return Err((401, "missing, wrong, expired or used credentials")),
        }
    }
    if sessions > cfg.max_clients {
        return Err((503, "server is full (--max-clients)"));
    }
    if ip_connections > cfg.max_clients_per_ip {
        return Err((503, "too many connections from your address"));
    }
    Ok(identity)
}
