//! tiny_http, kept behind the connection threads: it listens on a private Unix socket (in
//! a mode-0700 directory, so only this process reaches it) and gets each request whole from
//! the connection thread that read it ([`Workers::exchange`]). If its accept thread ever
//! stops (it does so at its first accept error, and panics when out of fds), the next
//! request — or a worker that sees the error — starts a new tiny_http on a new socket.

use std::io::{Read, Write};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

/// How long a connection thread waits for tiny_http's answer. Longer than the longest any
/// route takes on purpose (`messages::POST_TIMEOUT`, a POST waiting for the history store).
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest response relayed. Every route's answer is far smaller (history pages are capped
/// in bytes, static files in size); this is the backstop that bounds a connection's memory.
pub const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// The tiny_http server the workers take requests from, and its Unix socket in a private
/// directory (mode 0700: only this user can reach tiny_http without passing a connection
/// thread, which is what makes the peer header trustworthy). The directory is removed on drop.
pub struct Workers {
    /// The server and its socket. Replaced when tiny_http's accept thread has stopped, on a
    /// new path each time: a dropped tiny_http server deletes its socket file.
    current: Mutex<(Arc<tiny_http::Server>, PathBuf)>,
    /// Restarts so far; names the next socket.
    restarts: AtomicUsize,
    dir: PathBuf,
}

impl Workers {
    pub fn start() -> std::io::Result<Workers> {
        static STARTED: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!(
            "threadchat-{}-{}-{nanos}",
            std::process::id(),
            STARTED.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        let socket = dir.join("http-0.sock");
        let server = match listen(&socket) {
            Ok(server) => server,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        Ok(Workers { current: Mutex::new((Arc::new(server), socket)), restarts: AtomicUsize::new(0), dir })
    }

    /// Hands one complete request to tiny_http and returns its whole answer. Called by
    /// connection threads; tiny_http never sees a client socket.
    pub fn exchange(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut socket = self.connect()?;
        socket.set_write_timeout(Some(UPSTREAM_TIMEOUT))?;
        socket.set_read_timeout(Some(UPSTREAM_TIMEOUT))?;
        socket.write_all(request)?;
        let limit = MAX_RESPONSE_BYTES as u64;
        let mut response = Vec::new();
        (&mut socket).take(limit + 1).read_to_end(&mut response)?;
        if response.len() as u64 > limit {
            return Err(std::io::Error::other("response larger than MAX_RESPONSE_BYTES"));
        }
        Ok(response)
    }

    /// Connects to tiny_http, restarting it if its socket refuses (its accept thread died).
    fn connect(&self) -> std::io::Result<UnixStream> {
        let socket = self.current.lock().1.clone();
        match UnixStream::connect(&socket) {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                log::error!("http: tiny_http is not accepting; restarting it");
                if !self.restart(None) {
                    return Err(e);
                }
                let socket = self.current.lock().1.clone();
                UnixStream::connect(&socket)
            }
            other => other,
        }
    }

    pub fn current(&self) -> Arc<tiny_http::Server> {
        Arc::clone(&self.current.lock().0)
    }

    /// Replaces `failed` (`None`: the current server) with a new tiny_http server, unless
    /// someone already did. Returns false if that failed (out of fds, say); retry later.
    ///
    /// Two ways tiny_http's accept thread can stop: it hands its workers the accept error
    /// and exits (a worker then calls this), or it panics — under fd exhaustion it unwraps a
    /// failed `try_clone` — and says nothing; the next request then finds the socket
    /// refusing connections and calls this.
    pub fn restart(&self, failed: Option<&Arc<tiny_http::Server>>) -> bool {
        let mut current = self.current.lock();
        if failed.is_some_and(|f| !Arc::ptr_eq(&current.0, f)) {
            return true;
        }
        let n = self.restarts.fetch_add(1, Ordering::Relaxed) + 1;
        let socket = self.dir.join(format!("http-{n}.sock"));
        match listen(&socket) {
            Ok(server) => {
                log::warn!("http: tiny_http restarted");
                *current = (Arc::new(server), socket);
                true
            }
            Err(e) => {
                log::debug!("http: cannot restart tiny_http yet: {e}");
                false
            }
        }
    }

    /// Wakes up to `n` workers blocked in `recv` (at shutdown).
    pub fn unblock(&self, n: usize) {
        let server = self.current();
        for _ in 0..n {
            server.unblock();
        }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn listen(socket: &Path) -> std::io::Result<tiny_http::Server> {
    let listener = std::os::unix::net::UnixListener::bind(socket)?;
    tiny_http::Server::from_listener(listener, None).map_err(|e| std::io::Error::other(e.to_string()))
}
