//! `threadchat admin URL ACTION …`: one request to the moderation API (docs/moderation.md),
//! its JSON answer printed. HTTP/1.1 by hand over the same plain-or-TLS stream `send` and
//! `tail` use: one request, `Connection: close`, every read under the deadline.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::args::{AdminAction, AdminArgs, Whom};
use crate::tools::cli::{CliError, open_stream};

/// Sends the action, prints the answer; `Err` for a refusal (its status and error).
pub fn admin(args: &AdminArgs) -> Result<(), CliError> {
    let timeout = Duration::from_secs(args.timeout_secs.max(1));
    let deadline = Instant::now() + timeout;
    let (method, path, body) = request(&args.action);
    let (tls, rest) = match (args.url.strip_prefix("http://"), args.url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(CliError::Connect(format!("{}: the URL must start with http:// or https://", args.url))),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => match p.parse::<u16>() {
            Ok(p) => (h, p),
            Err(_) => (authority, if tls { 443 } else { 80 }),
        },
        _ => (authority, if tls { 443 } else { 80 }),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut stream = open_stream(host, port, tls.then_some(args.ca_file.as_deref()), deadline, timeout)?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    if let Some(token) = &args.admin_token {
        if token.contains(['\r', '\n']) {
            return Err(CliError::Connect("--admin-token contains a line break".into()));
        }
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if !body.is_empty() {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let io = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => CliError::Timeout(timeout),
        _ => CliError::Connect(e.to_string()),
    };
    stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(body.as_bytes())).map_err(io)?;
    stream.flush().map_err(io)?;
    let mut raw = Vec::new();
    // Answers are small; 16 MiB bounds a hostile server.
    let read = (&mut stream).take(16 << 20).read_to_end(&mut raw);
    if let Err(e) = read
        && raw.is_empty()
    {
        return Err(io(e));
    }
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status: u16 = head.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    if !(200..300).contains(&status) {
        let error = serde_json::from_str::<Value>(body)
            .ok()
            .and_then(|v| v.get("error").and_then(Value::as_str).map(str::to_string))
            .unwrap_or_else(|| body.trim().to_string());
        return Err(CliError::Refused(status, error));
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", body.trim()).map_err(CliError::Output)
}

/// The method, path and JSON body of an action.
fn request(action: &AdminAction) -> (&'static str, String, Option<Value>) {
    let whom = |w: &Whom| match (&w.user, &w.name) {
        (Some(user), _) => json!({ "user": user }),
        (_, name) => json!({ "name": name }),
    };
    let with = |mut v: Value, extra: Value| {
        if let (Some(map), Value::Object(more)) = (v.as_object_mut(), extra) {
            map.extend(more);
        }
        v
    };
    match action {
        AdminAction::Kick { whom: w, reason } => {
            ("POST", "/api/admin/kick".into(), Some(with(whom(w), json!({ "reason": reason }))))
        }
        AdminAction::Ban { user, name, address, seconds, reason } => {
            let target = match (user, name, address) {
                (Some(u), _, _) => json!({ "user": u }),
                (_, Some(n), _) => json!({ "name": n }),
                (_, _, a) => json!({ "address": a }),
            };
            ("POST", "/api/admin/ban".into(), Some(with(target, json!({ "seconds": seconds, "reason": reason }))))
        }
        AdminAction::Unban { id } => ("DELETE", format!("/api/admin/bans/{}", encode(id)), None),
        AdminAction::Mute { whom: w, room, seconds, reason } => (
            "POST",
            "/api/admin/mute".into(),
            Some(with(whom(w), json!({ "room": room, "seconds": seconds, "reason": reason }))),
        ),
        AdminAction::Unmute { id } => ("DELETE", format!("/api/admin/mutes/{}", encode(id)), None),
        AdminAction::Delete { room, seq } => ("DELETE", format!("/api/rooms/{}/messages/{seq}", encode(room)), None),
        AdminAction::Announce { room, text } => {
            ("POST", "/api/admin/announce".into(), Some(json!({ "room": room, "text": text })))
        }
        AdminAction::PurgeUser { user } => ("POST", "/api/admin/purge-user".into(), Some(json!({ "user": user }))),
        AdminAction::Bans => ("GET", "/api/admin/bans".into(), None),
        AdminAction::Mutes => ("GET", "/api/admin/mutes".into(), None),
        AdminAction::Audit { before, limit } => {
            let mut query = vec![];
            if let Some(b) = before {
                query.push(format!("before={}", encode(b)));
            }
            if let Some(l) = limit {
                query.push(format!("limit={l}"));
            }
            ("GET", format!("/api/admin/audit?{}", query.join("&")), None)
        }
    }
}

/// Percent-encodes what is not safe in a path segment.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
