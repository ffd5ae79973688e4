//! threadchat: a synchronous, thread-per-connection WebSocket chat server.
//!
//! The architecture (every thread, channel and lock, who owns each socket) is described
//! once, in the README. Modules, one role each:
//!
//! - [`config`]: flags and env vars → one validated [`config::Config`].
//! - [`server`]: binds the listeners, starts the threads, graceful shutdown.
//! - [`accept`]: the accept loop both listeners run; [`admission`]: who gets a thread.
//! - [`threads`]: the recycled connection threads.
//! - [`session`]: a connection thread: reads a request head, then WebSocket or HTTP.
//! - [`http1`]: reading a request head within limits; [`stream`]: a connection's reads.
//! - [`exchange`]: one HTTP request, handed whole to tiny_http and answered.
//! - [`http`]: tiny_http and its workers; [`api`]: their routes; [`files`]: the page.
//! - [`client`]: a WebSocket session (upgrade, read loop, cleanup).
//! - [`conn`]: one connection's outbox, through which every byte to its socket passes.
//! - [`flusher`]: finishes writes to sockets whose kernel buffer was full.
//! - [`fanout`]: flushes members' outboxes after a chat broadcast, one thread per core.
//! - [`hub`]: the shared client list, rooms and fan-out; [`room_index`]: their listing.
//! - [`guard`]: per-address buckets and the IP table; [`auth`]: credentials, logins;
//!   [`tickets`]: one-time upgrade tickets.
//! - [`heartbeat`]: pings, reaps dead clients, enforces close deadlines.
//! - [`metrics`]: counters for `/metrics` and the stats history.
//! - [`protocol`]: message types, validation, framing.
//! - [`store`]: durable history (SQLite, Postgres).
//! - [`tls`]: rustls settings for `--tls-cert` / `--tls-key`.
//! - [`sequencer`]: numbers, stores (group commit), then broadcasts chat messages.
//! - [`backplane`]: `--redis`: one ordered log for several instances, cluster presence.
//! - [`cli`]: the `send` / `tail` client commands.
//! - [`bench`]: the `bench` load generator; [`bench_rooms`]: its `--rooms` mode.

pub mod accept;
pub mod admission;
pub mod api;
pub mod auth;
pub mod backplane;
pub mod bench;
pub mod bench_rooms;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod exchange;
pub mod fanout;
pub mod files;
pub mod flusher;
pub mod guard;
pub mod heartbeat;
pub mod http;
pub mod http1;
pub mod hub;
pub mod metrics;
pub mod protocol;
pub mod room_index;
pub mod sequencer;
pub mod server;
pub mod session;
pub mod store;
pub mod stream;
pub mod threads;
pub mod tickets;
pub mod tls;

pub use config::Config;
pub use server::ServerHandle;
