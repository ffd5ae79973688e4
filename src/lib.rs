//! threadchat: a synchronous, thread-per-connection WebSocket chat server.
//!
//! The architecture — every thread, channel and lock, who owns each socket — is told once,
//! in the README; `docs/tour.md` follows one message through the code.
//!
//! **Layers, and the one rule about them.** Folders are layers, and imports point down only:
//!
//! | layer | what | may use |
//! |---|---|---|
//! | `main.rs`, [`server`] | wiring: start every thread, stop them | everything |
//! | [`net`] | the way in: accept, admit, a thread per connection, HTTP and WebSocket sessions, access checks | `chat`, `conn`, `store`, base |
//! | [`chat`] | the hub and rooms, the sequencer, the heartbeat, the Redis backplane, the protocol | `conn`, `store`, base |
//! | [`conn`], [`store`] | plumbing: outboxes and their writers; durable history | base |
//! | base: [`args`], [`config`], [`metrics`], [`clock`], `random` | flags, settings, counters, time, randomness | nothing above |
//! | [`tools`] | `send`/`tail`, `bench`: clients, not the server | `chat::protocol`, base |
//!
//! No module reaches up a layer, and no two modules import each other, directly or
//! through others. `scripts/layers.py` checks both on every test run.

// What the binary, the tests and the tools use is public; the layers are the crate's own.
pub mod args;
pub mod clock;
pub mod config;
pub mod server;
pub mod tools;

mod chat;
mod conn;
mod metrics;
mod net;
mod random;
mod store;

pub use chat::protocol::MAX_TEXT_CHARS;
pub use config::Config;
pub use server::ServerHandle;
/// `threadchat backup` and `verify`: the operator's copies of the SQLite history.
pub use store::backup;
/// `threadchat export` and `import`: a history as JSON lines.
pub use store::transfer;
