//! The way in: accepting connections, admitting them, and serving each on its own thread —
//! as a WebSocket session or as HTTP requests answered through tiny_http — with the access
//! rules every entrance shares. May use `chat`, `conn` and `store`; nothing uses it but
//! the wiring in `server.rs`.
//!
//! - `entry/`: a connection's way to a thread: the accept loop, admission (who gets a
//!   thread), the connection thread itself, its request head, its stream (and TLS);
//! - `http/`: a request handed whole to tiny_http, its workers, the routes and the page;
//! - `ws/`: a WebSocket session: the upgrade and read loop, and what it does with each
//!   chat request;
//! - `access/`: who may come in and how much they may take: credentials, guest identities,
//!   tickets, and the per-address, per-client and history budgets;
//! - `shared.rs`: the state every connection thread shares; `query.rs`: query strings.

pub mod access;
pub mod entry;
pub mod http;
pub mod query;
pub mod shared;
pub mod ws;
