//! What surrounds a commit of chat messages: what a sender submits ([`Submit`], and whom
//! to answer, [`Reply`]), and [`after_commit`], the one step that follows every commit —
//! broadcast in order, flush, acknowledge, prune. The sequencer (one instance,
//! `sequencer.rs`, which also holds the queue senders submit to) and the backplane reader
//! (a cluster) both end each batch with it.

use std::sync::Arc;

use bytes::Bytes;
use crossbeam_channel::{Sender, TrySendError};

use crate::chat::hub::Hub;
use crate::chat::protocol::ServerMsg;
use crate::conn::fanout::Fanout;
use crate::conn::{Conn, Kind};
use crate::store::StoredMessage;

/// Who to tell when a message is stored (or could not be).
pub enum Reply {
    /// A WebSocket client: `ack` (if it gave a `ref`) or an `error`.
    Ws { conn: Arc<Conn>, r#ref: Option<u64> },
    /// An HTTP request waiting for the result.
    Http(Sender<Result<StoredMessage, String>>),
}

pub struct Submit {
    pub room: String,
    /// The sending connection's id.
    pub id: u64,
    /// The sender's user id: who it is.
    pub user: Arc<str>,
    /// The sender's display name now: what others see.
    pub name: Arc<str>,
    pub text: String,
    pub reply: Reply,
}

/// After a commit: queue `broadcast` (in `seq` order) for every member of its rooms, flush
/// them on the fan-out pool, acknowledge each sender, and tell the pruner which rooms grew.
/// Stored before broadcast, broadcast before acknowledged: an `ack` means durable and sent.
pub fn after_commit<'m>(
    hub: &Hub,
    fanout: &Fanout,
    broadcast: &[StoredMessage],
    replies: impl IntoIterator<Item = (Reply, &'m StoredMessage)>,
    prune: &Sender<(String, u64)>,
) {
    for members in hub.broadcast_batch(broadcast) {
        fanout.flush(members);
    }
    for (reply, m) in replies {
        reply_ok(hub, reply, m);
    }
    for m in broadcast.iter().rev() {
        // Latest seq per room; a full channel only delays pruning.
        if let Err(TrySendError::Disconnected(_)) = prune.try_send((m.room.clone(), m.seq)) {
            break;
        }
    }
}

/// Tells the sender its message is stored: an `ack` to a WebSocket client that gave a
/// `ref`, the stored message to a waiting HTTP request.
pub fn reply_ok(hub: &Hub, reply: Reply, m: &StoredMessage) {
    match reply {
        Reply::Ws { conn, r#ref: Some(r#ref) } => {
            hub.send_or_close(&conn, ServerMsg::Ack { room: &m.room, r#ref, seq: m.seq }.to_frame());
        }
        Reply::Ws { .. } => {}
        Reply::Http(tx) => {
            let _ = tx.send(Ok(m.clone()));
        }
    }
}

/// An error as the client reads them: `{"type":"error",…}` for a JSON client, the line
/// `error: …` for a plain-text one.
pub fn error_frame_for(conn: &Conn, error: &str, r#ref: Option<u64>) -> Bytes {
    if conn.kind() == Kind::Plain {
        crate::conn::frames::text_frame(format!("error: {error}").as_bytes())
    } else {
        ServerMsg::Error { error, r#ref }.to_frame()
    }
}

/// Tells the sender its message was not stored.
pub fn reply_err(hub: &Hub, reply: Reply, error: &str) {
    match reply {
        Reply::Ws { conn, r#ref } => hub.send_or_close(&conn, error_frame_for(&conn, error, r#ref)),
        Reply::Http(tx) => {
            let _ = tx.send(Err(error.to_string()));
        }
    }
}
