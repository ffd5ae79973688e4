//! A WebSocket session: the upgrade (`upgrade.rs`: what a request head becomes, or why it
//! is refused), the blocking read loop (`session.rs`), and what the session does with each
//! chat request, JSON on `/ws` or plain text on `/` (`chat.rs`).

pub mod chat;
pub mod session;
mod upgrade;
