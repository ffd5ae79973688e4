//! Who may come in, and how much one client or one address may take: credentials and JWTs
//! (`auth.rs`), guest identities (`identity.rs`), one-time tickets (`tickets.rs`), the
//! per-address table and its buckets (`per_ip.rs`), what a client's frames may cost
//! (`frame_rate.rs`), and one address's history reads (`history_rate.rs`), and moderation requests
//! (`moderation.rs`).

pub mod auth;
pub mod frame_rate;
pub mod history_rate;
pub mod identity;
pub mod moderation;
pub mod per_ip;
pub mod tickets;
