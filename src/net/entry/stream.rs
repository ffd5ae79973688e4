//! A connection's byte stream as its own thread sees it: reads come straight from the
//! socket (decrypted, with TLS), within a deadline while there is one; writes go into the
//! connection's outbox (`conn/outbox.rs`), never to the socket directly.
//!
//! The same stream serves the whole life of a connection: the request head, an HTTP body,
//! and then — for a WebSocket — tungstenite's frames, which is why tungstenite's pongs and
//! Close replies end up in the outbox like everything else.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::conn::frames;
use crate::conn::{Conn, Push};

/// The stream the connection thread reads requests from, and tungstenite reads frames from
/// and writes to.
pub struct ConnStream {
    pub conn: Arc<Conn>,
    /// When the current request must be complete; `None` once upgraded (a WebSocket may
    /// idle for hours: the heartbeat watches it instead).
    pub deadline: Option<Instant>,
    /// After the upgrade, writes are WebSocket frames (checked for Close); before it, HTTP.
    pub upgraded: bool,
    /// A write (a pong) did not fit under the outbox cap.
    pub overflowed: bool,
    /// The upgraded connection has been quiet for `threads::REST_AFTER` once (see
    /// [`ConnStream::rest`]).
    rested: bool,
}

impl ConnStream {
    pub fn new(conn: Arc<Conn>, deadline: Instant) -> ConnStream {
        ConnStream { conn, deadline: Some(deadline), upgraded: false, overflowed: false, rested: false }
    }
}

impl Read for ConnStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.conn.tls().is_none() {
            return self.read_socket(buf);
        }
        // A clone of the handle (a reference count), so the TLS state is not borrowed from
        // `self` while the reads below need `self` mutably.
        let conn = Arc::clone(&self.conn);
        match conn.tls() {
            Some(tls) => self.read_tls(tls, buf),
            None => self.read_socket(buf),
        }
    }
}

impl ConnStream {
    /// Not inlined: an idle client blocks in `read`, and the TLS path's locals would make
    /// that frame — resident for every idle connection — bigger for plain ones too.
    #[inline(never)]
    fn read_tls(&mut self, tls: &parking_lot::Mutex<rustls::ServerConnection>, buf: &mut [u8]) -> io::Result<usize> {
        // TLS: `buf` first receives ciphertext from the socket (read without the TLS lock,
        // so writers are never blocked by this thread waiting for input), which rustls then
        // takes; then it receives the decrypted bytes. The TLS handshake happens here too,
        // driven by the first reads, inside the same handshake deadline.
        loop {
            match tls.lock().reader().read(buf) {
                Ok(n) => return Ok(n), // 0: the client sent close_notify
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            let n = self.read_socket(buf)?;
            if n == 0 {
                return Ok(0);
            }
            let mut tls = tls.lock();
            let mut ciphertext = &buf[..n];
            let mut state = Ok(());
            while !ciphertext.is_empty() && state.is_ok() {
                tls.read_tls(&mut ciphertext)?;
                state = tls.process_new_packets().map(|_| ());
            }
            let reply = tls.wants_write();
            drop(tls);
            if reply {
                // Handshake messages, or an alert about the error below.
                self.conn.flush();
            }
            if let Err(e) = state {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")));
            }
        }
    }

    /// Reads from the socket, within the handshake deadline while there is one.
    fn read_socket(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.upgraded && !self.rested {
            return self.rest(buf);
        }
        if let Some(deadline) = self.deadline {
            // A per-read timeout alone would let a client trickle one byte per timeout
            // forever; re-arming it with the time left bounds the whole handshake.
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::ErrorKind::TimedOut.into());
            }
            self.conn.socket().set_read_timeout(Some(left))?;
        }
        self.conn.socket().read(buf)
    }

    /// An upgraded connection's reads until it first idles: the session armed a read
    /// timeout of `threads::REST_AFTER`, and when a read runs into it the connection is
    /// idle: from then on reads have no timeout, and this one returns `WouldBlock` so that
    /// the read loop, near the top of the stack, gives back the pages the handshake touched
    /// (see `ws/session.rs`). Done at once after every upgrade instead, the `madvise` and
    /// the TLB shootdown it sends every core were 18 % of the server's CPU in a
    /// connect-and-drop loop, for connections that would have ended in milliseconds anyway.
    fn rest(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self.conn.socket().read(buf) {
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                self.rested = true;
                self.conn.socket().set_read_timeout(None)?;
                Err(io::ErrorKind::WouldBlock.into())
            }
            other => other,
        }
    }
}

impl Write for ConnStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let is_close = self.upgraded && frames::contains_close_frame(buf);
        // Refused (Closed) means a Close already went out: anything after it is dropped,
        // as RFC 6455 requires. Reporting success keeps tungstenite's state machine going.
        if self.conn.push_control(Bytes::copy_from_slice(buf), is_close) == Push::Overflow {
            // Pongs piling up: the client sends pings but does not read. The read loop
            // closes it with 1008 after this read returns.
            self.overflowed = true;
        }
        // Send at once: tungstenite does not always call flush() after writing (its Close
        // reply path returns early), and pongs should not wait for the next read.
        self.conn.flush();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.conn.flush();
        Ok(())
    }
}

/// A connection's TLS state, built on the heap by a function of its own: a rustls
/// connection is several KiB, and as a local of a connection thread's frame it would keep
/// an extra stack page resident in every idle thread, TLS or not.
#[inline(never)]
pub fn new_tls(
    config: &Arc<rustls::ServerConfig>,
) -> Result<Box<parking_lot::Mutex<rustls::ServerConnection>>, rustls::Error> {
    Ok(Box::new(parking_lot::Mutex::new(rustls::ServerConnection::new(Arc::clone(config))?)))
}
