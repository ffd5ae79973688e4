//! threadchat's integration tests: real sockets on 127.0.0.1:0, servers started in-process
//! or as the real binary. Every read has a timeout (`support::WAIT`).

mod support;

// Chat protocol on /ws: welcome, broadcast order, names, join/leave, error replies.
mod chat;
// `/`: the tutorials' plain-text clients, chatting with JSON clients through the lobby.
mod plain;
// /echo: text and binary echoed verbatim.
mod echo;
// HTTP side: static files, traversal, /healthz, /api/config, 426.
mod http;
// Close codes and limits: 1009, 1007, 1002, 404 before 101, 503 over capacity, slow consumers.
mod limits;
// Heartbeat reaping and graceful shutdown (in-process and the binary with SIGTERM).
mod lifecycle;
// Users, not names: guest identities, names one user's at a time, JWT names reserved;
// direct messages to two user ids only, stored, resumable by those two alone.
mod dm;
// Rooms, presence, acks, history API, resume, gaps, restart, kill -9.
mod rooms;
// /metrics, /api/stats, join-notice limit.
mod observability;
// Hostile clients: huge frame headers, ping floods, RSTs, panics, leaks.
mod adversarial;
// The one way in, both ports: head limits, deadlines, admission caps, fd exhaustion, keep-alive.
mod entrance;
// The HTTP side under attack: malformed paths, API access rules, CSRF, non-readers, panics.
mod hostile_http;
// Shared budgets: rooms, listings, tickets, per-user connections, the outgoing budget, names.
mod budgets;
// Moderation: the admin token and JWT roles, kick, ban, mute, delete, announce, audit, the CLI.
mod moderation;
// Origin, token, per-IP caps, upgrade and message rate limits.
mod security;
// TLS on both listeners (rcgen certificate, rustls client).
mod tls;
// Several instances on a Redis backplane: order, presence, resume, Redis failure, users and
// names across instances.
#[cfg(feature = "redis")]
mod cluster;
// The `send` / `tail` client commands and flag validation of the real binary.
mod cli;
// The binary as `cargo run` starts it: every default limit at its documented figure.
mod defaults;
// The operator's data: backup while writing, verify, a newer history refused.
mod backup;
// examples/minimal.rs, the whole idea in one file, at its own defaults against hostile clients.
mod example;
