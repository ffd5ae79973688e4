//! The chat itself: the hub (client list, rooms, fan-out), the sequencer (numbering, group
//! commit, then broadcast), the heartbeat, the Redis backplane, and the protocol's types.
//! May use `conn` and `store`; never the way in (`net`).

#[cfg(feature = "redis")]
pub mod backplane;
/// Without the `redis` feature: a `Backplane` that cannot exist (`--redis` is refused at
/// start-up), so the code that asks "is there a backplane?" reads the same either way.
#[cfg(not(feature = "redis"))]
#[path = "no_backplane.rs"]
pub mod backplane;
pub mod commit;
pub mod heartbeat;
pub mod hub;
pub mod moderation;
pub mod names;
pub mod protocol;
pub mod room_index;
pub mod sequencer;

use crate::chat::backplane::Backplane;
use crate::chat::hub::Hub;
use crate::chat::sequencer::queue::Sequencer;
use crate::config::Config;
use crate::conn::Outboxes;
use crate::conn::fanout::Fanout;
use crate::metrics::Metrics;
use crate::store::Store;

/// The chat, as the way in (`net`) and the chat's own threads see it: one handle, shared
/// by every thread of a server. Every field is either immutable or synchronised inside.
pub struct Chat {
    pub config: Config,
    /// The client list and the rooms.
    pub hub: Hub,
    pub metrics: std::sync::Arc<Metrics>,
    /// The history; written only by the sequencer thread (or the backplane reader).
    pub store: Box<dyn Store>,
    /// Where chat messages go to be numbered, stored and broadcast.
    pub sequencer: Sequencer,
    /// Threads that flush outboxes after a chat broadcast.
    pub fanout: Fanout,
    /// What every connection's outbox shares: the caps, the server-wide budget of unsent
    /// bytes (`--max-queued-total`), the flusher thread, the counters.
    pub outboxes: Outboxes,
    /// `--redis`: the cluster backplane.
    pub backplane: Option<Box<Backplane>>,
    /// Bans and mutes in force, admins seen, action counts (see `moderation/`).
    pub moderation: crate::chat::moderation::Moderation,
}
