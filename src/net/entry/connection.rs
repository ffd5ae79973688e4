//! One connection's thread, from its first byte: read a request head under a deadline, then
//! become a WebSocket session (`ws_session.rs`) or answer HTTP requests (`exchange.rs`), one at
//! a time, until the connection closes. Both ports, every connection, this one path.
//!
//! Why read the head ourselves rather than let tiny_http or tungstenite do it: the head is
//! where a hostile client does its work (slowloris, header floods), and where the two
//! protocols part ways. Reading it here, with one set of limits, means both listeners and
//! both protocols get the same defence, and tiny_http only ever sees complete requests.

use std::sync::Arc;
use std::time::Instant;

use crate::conn::Conn;
use crate::metrics::Refusal;
use crate::net::entry::admission::Slot;
use crate::net::entry::head::{self, HeadError};
use crate::net::entry::stream::ConnStream;
use crate::net::http::exchange::After;
use crate::net::shared::{LiveGuard, Shared};

/// Entry point of a connection thread (see `accept.rs`).
pub fn serve(conn: Arc<Conn>, mut slot: Slot, shared: &Arc<Shared>, _live: LiveGuard) {
    // TCP_NODELAY and the send buffer came with the socket (`accept::tune_listener`).
    let timeout = shared.chat.config.handshake_timeout;
    let mut stream = ConnStream::new(Arc::clone(&conn), Instant::now() + timeout);
    // Bytes read but not yet used: the rest of a head, a body, a pipelined request.
    let mut buf = Vec::new();
    let mut first = true;
    loop {
        let head = match head::read_head(&mut stream, &mut buf) {
            Ok(head) => head,
            Err(e) => return refuse_head(&conn, shared, &e, first),
        };
        first = false;
        if head.wants_websocket() {
            // The hub counts it from here on (or it is refused and closes).
            slot.leave();
            // Only the bytes, not `buf`'s 2 KiB of capacity: tungstenite would keep that
            // buffer as its read buffer for the whole session (1 KiB more per idle client).
            let tail = buf.as_slice().to_vec();
            drop(buf);
            return crate::net::ws::session::run(stream, head, tail, shared);
        }
        match crate::net::http::exchange::answer(&mut stream, &mut buf, &head, &mut slot, shared) {
            After::KeepAlive if slot.wait_for_next() => {
                // A fresh deadline for the whole next request: trickling bytes never
                // extend it, and an idle keep-alive connection ends with it.
                stream.deadline = Some(Instant::now() + timeout);
            }
            After::KeepAlive | After::Close => {
                conn.close_gently(true);
                return;
            }
        }
    }
}

/// Answers a request head that could not be read (if anyone is there to read the answer).
/// `first`: no request was answered on this connection yet (a keep-alive connection that
/// goes quiet after its requests is not a refusal).
#[inline(never)]
fn refuse_head(conn: &Arc<Conn>, shared: &Shared, e: &HeadError, first: bool) {
    match e.status() {
        Some((status, text)) => {
            shared.refuse(conn, "request head", status, &text, "");
            // Drain what the client is still sending, so our answer is not destroyed by
            // the RST that closing with unread input causes.
            conn.close_gently(true);
        }
        None => {
            if first && matches!(e, HeadError::TimedOut { .. }) {
                shared.chat.metrics.rejected(Refusal::Timeout);
            }
            log::debug!("{}: connection ended before a request ({e:?})", conn.peer);
        }
    }
}
