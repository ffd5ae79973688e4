//! The chat itself: the hub (client list, rooms, fan-out), the sequencer (numbering, group
//! commit, then broadcast), the heartbeat, the Redis backplane, and the protocol's types.
//! May use `conn` and `store`; never the way in (`net`).

pub mod backplane;
pub mod heartbeat;
pub mod hub;
pub mod protocol;
pub mod room_index;
pub mod sequencer;
