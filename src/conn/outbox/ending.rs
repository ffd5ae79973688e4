//! How a connection's bytes end (part of the outbox; see `outbox.rs`): waiting for the queue
//! to drain, a whole HTTP response sent within a deadline, the gentle close that lets the
//! last bytes arrive before the socket is shut, and the hard stop.

use std::io::Read;
use std::net::Shutdown;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use super::{BLOCKING_CHUNK, CLOSE_LINGER, Conn, Push};

impl Conn {
    /// Waits until everything queued has been written (or the socket died), at most until
    /// `deadline`. Returns whether the outbox drained.
    pub fn wait_drained(&self, deadline: Instant) -> bool {
        let mut out = self.out.lock();
        while !out.is_drained() {
            if self.drained.wait_until(&mut out, deadline).timed_out() {
                return out.is_drained();
            }
        }
        true
    }

    /// Sends `data` (an HTTP response) and waits until the kernel has taken it, queueing at
    /// most [`BLOCKING_CHUNK`] at a time so a big response never sits whole in the outbox.
    /// `false`: the socket failed, or `deadline` passed first (a client that does not read).
    pub fn send_blocking(self: &Arc<Self>, mut data: Bytes, deadline: Instant) -> bool {
        while !data.is_empty() {
            let part = data.split_to(data.len().min(BLOCKING_CHUNK).min(self.max_queued));
            if self.push_control(part, false) != Push::Queued {
                return false;
            }
            self.flush();
            if !self.wait_drained(deadline) {
                return false;
            }
        }
        !self.out.lock().dead
    }

    /// The end of a connection: sends TLS's close_notify, lets queued bytes (our Close, a
    /// refusal, a response) reach the client for up to [`CLOSE_LINGER`], then shuts the write
    /// side. With `drain_reads`, also reads and discards until the client closes: closing a
    /// socket with unread input makes the kernel send RST, which can destroy our last bytes
    /// in the client's receive buffer before it reads them.
    #[inline(never)] // its 4 KiB buffer must not join the frame an idle client sits in
    pub fn close_gently(self: &Arc<Self>, drain_reads: bool) {
        self.send_close_notify();
        let deadline = Instant::now() + CLOSE_LINGER;
        self.wait_drained(deadline);
        let _ = self.socket.shutdown(Shutdown::Write);
        if drain_reads {
            let mut scratch = [0u8; 4096];
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() || self.socket.set_read_timeout(Some(left)).is_err() {
                    break;
                }
                match (&self.socket).read(&mut scratch) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
    }

    /// Hard stop: both directions shut, which wakes the client thread's blocking read.
    pub fn terminate(&self) {
        let _ = self.socket.shutdown(Shutdown::Both);
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        // Whatever was still queued leaves the server-wide budget with the connection.
        self.budget.sub(self.out.get_mut().queued_bytes);
    }
}
