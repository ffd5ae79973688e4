//! HTTP: a request read whole by its connection thread and handed to tiny_http
//! (`exchange.rs`), tiny_http's lifecycle (`tiny.rs`) and workers (`workers.rs`), the routes
//! and their access rules (`api.rs`), moderation (`admin.rs`), a room's messages (`messages.rs`), the page (`files.rs`), and response helpers.

pub mod admin;
pub mod api;
pub mod exchange;
pub mod files;
pub mod messages;
pub mod respond;
pub mod tiny;
pub mod workers;
