//! How queued frames leave for the socket, without ever blocking: plain connections
//! gather up to `MAX_IOVECS` frames into one `sendmsg`; TLS connections encrypt at most
//! `TLS_CHUNK` at a time and write rustls's records out. Both pop what was sent, advance a
//! partly sent frame, and stop at `EAGAIN` (the flusher takes over from there).

use std::collections::VecDeque;
use std::io::{self, IoSlice, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::{Buf, Bytes};

use super::Conn;
use crate::conn::flusher::{Flushed, Parked};

impl Conn {
    /// Writes as much of `batch` as the kernel takes without blocking, in as few `sendmsg`
    /// calls as possible. Sent frames are popped; a partly sent one is advanced. Returns the
    /// queued bytes consumed and whether everything went out; stops early on `EAGAIN`.
    pub(super) fn send_batch(&self, batch: &mut VecDeque<Bytes>) -> io::Result<(usize, bool)> {
        let bytes_out = &self.metrics.bytes_out;
        match &self.tls {
            Some(state) => tls(&self.socket, &mut state.lock(), batch, bytes_out),
            None => plain(&self.socket, batch, bytes_out).map(|n| (n, batch.is_empty())),
        }
    }
}

/// While its kernel buffer is full, a connection is the flusher's: it finishes the write
/// when epoll says the socket has room.
impl Parked for Conn {
    fn id(&self) -> u64 {
        self.id
    }

    fn fd(&self) -> std::os::fd::RawFd {
        std::os::fd::AsRawFd::as_raw_fd(&self.socket)
    }

    fn flush_parked(&self) -> Flushed {
        self.write_queued(true)
    }

    fn terminate(&self) {
        Conn::terminate(self);
    }
}

/// How many queued frames one `sendmsg` call may gather. Linux allows 1024 iovecs; 64 frames
/// is already far more than a burst usually holds and keeps the stack array small.
const MAX_IOVECS: usize = 64;

/// With TLS: plaintext encrypted per round. rustls then holds at most this much ciphertext
/// that the kernel has not taken, so the outbox cap still bounds a stalled client.
pub(super) const TLS_CHUNK: usize = 64 * 1024;

/// The TLS writer: alternately hands rustls up to `TLS_CHUNK` of frames to encrypt and
/// writes its records out, until both are empty or the kernel buffer is full.
pub(super) fn tls(
    socket: &TcpStream,
    tls: &mut rustls::ServerConnection,
    batch: &mut VecDeque<Bytes>,
    bytes_out: &AtomicU64,
) -> io::Result<(usize, bool)> {
    let mut consumed = 0;
    loop {
        while tls.wants_write() {
            match tls.write_tls(&mut DontWait(socket)) {
                Ok(n) => {
                    bytes_out.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok((consumed, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if batch.is_empty() {
            return Ok((consumed, true));
        }
        let mut budget = TLS_CHUNK;
        while budget > 0 {
            let Some(front) = batch.front_mut() else { break };
            let n = tls.writer().write(&front[..front.len().min(budget)])?;
            if n == 0 {
                break; // rustls's own buffer is full: write it out first
            }
            consumed += n;
            budget -= n;
            if n == front.len() {
                batch.pop_front();
            } else {
                front.advance(n);
            }
        }
    }
}

/// The plain writer: `sendmsg` with up to `MAX_IOVECS` frames per call.
pub(super) fn plain(socket: &TcpStream, batch: &mut VecDeque<Bytes>, bytes_out: &AtomicU64) -> io::Result<usize> {
    let sock = socket2::SockRef::from(socket);
    let mut total = 0;
    while !batch.is_empty() {
        let mut slices = [IoSlice::new(&[]); MAX_IOVECS];
        let mut count = 0;
        for (slot, frame) in slices.iter_mut().zip(batch.iter()) {
            *slot = IoSlice::new(frame);
            count += 1;
        }
        // MSG_DONTWAIT makes just this call non-blocking, while the socket stays in
        // blocking mode for the client thread's reads. MSG_NOSIGNAL: a reset peer gives
        // EPIPE, not a process-killing SIGPIPE.
        let flags = libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL;
        let mut n = match sock.send_vectored_with_flags(&slices[..count], flags) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(total),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n;
        bytes_out.fetch_add(n as u64, Ordering::Relaxed);
        while n > 0 {
            let Some(front) = batch.front_mut() else {
                break;
            };
            if n >= front.len() {
                n -= front.len();
                batch.pop_front();
            } else {
                front.advance(n);
                n = 0;
            }
        }
    }
    Ok(total)
}

/// `Write` for rustls's `write_tls`: one non-blocking `send` (see [`plain`]).
struct DontWait<'a>(&'a TcpStream);

impl Write for DontWait<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        socket2::SockRef::from(self.0).send_with_flags(buf, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
