//! The way in: accepting connections, admitting them, and serving each on its own thread —
//! as a WebSocket session or as HTTP requests answered through tiny_http — with the access
//! checks every entrance shares. May use `chat`, `conn` and `store`; nothing uses it but
//! the wiring in `server.rs`.

pub mod accept;
pub mod access;
pub mod admission;
pub mod api;
pub mod auth;
pub mod exchange;
pub mod files;
pub mod frame_budget;
pub mod history_budget;
pub mod http;
pub mod http1;
pub mod identity;
pub mod query;
pub mod respond;
pub mod session;
pub mod state;
pub mod stream;
pub mod tickets;
pub mod tiny;
pub mod tls;
pub mod ws_chat;
pub mod ws_session;
