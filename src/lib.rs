//! threadchat: a synchronous, thread-per-connection WebSocket chat server.
//!
//! The architecture (every thread, channel and lock) is described at the top of
//! `src/main.rs` and in the README. Modules, one role each:
//!
//! - [`config`]: flags and env vars → one validated [`config::Config`].
//! - [`server`]: binds the listeners, starts the threads, graceful shutdown.
//! - [`front`]: owns the HTTP port; hands tiny_http only complete, bounded requests.
//! - [`http`]: tiny_http workers for the page and the JSON API.
//! - [`ws_server`]: the WebSocket accept loop.
//! - [`client`]: one connection's thread (upgrade, read loop, cleanup).
//! - [`conn`]: one connection's outbox, through which every byte to its socket passes.
//! - [`flusher`]: finishes writes to sockets whose kernel buffer was full.
//! - [`fanout`]: flushes members' outboxes after a chat broadcast, one thread per core.
//! - [`hub`]: the shared client list and fan-out.
//! - [`guard`]: admission checks at the upgrade (origin, token, per-IP caps), rate limits.
//! - [`heartbeat`]: pings, reaps dead clients, enforces close deadlines.
//! - [`metrics`]: counters for `/metrics` and the stats history.
//! - [`protocol`]: message types, validation, framing.
//! - [`store`]: durable history (SQLite, Postgres).
//! - [`tls`]: rustls settings for `--tls-cert` / `--tls-key`.
//! - [`sequencer`]: numbers, stores (group commit), then broadcasts chat messages.
//! - [`backplane`]: `--redis`: one ordered log for several instances, cluster presence.
//! - [`cli`]: the `send` / `tail` client commands.
//! - [`bench`]: the `bench` load generator.

pub mod backplane;
pub mod bench;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod fanout;
pub mod flusher;
pub mod front;
pub mod guard;
pub mod heartbeat;
pub mod http;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod sequencer;
pub mod server;
pub mod store;
pub mod tls;
pub mod ws_server;

pub use config::Config;
pub use server::ServerHandle;
