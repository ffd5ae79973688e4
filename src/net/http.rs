//! The HTTP side: a blocking tiny_http server answering the chat page, `/healthz` and the
//! JSON API. A few worker threads share one `tiny_http::Server` and each loops on `recv()`.
//!
//! tiny_http listens on a private Unix socket, not on a public port: connection threads
//! (`session.rs`, `exchange.rs`) read each request whole, within limits, and hand it over
//! with the client's address in [`PEER_HEADER`]. If tiny_http's accept thread ever stops (it
//! does so at its first accept error, and panics when out of fds), the next request starts a
//! new tiny_http server on a new socket.
//!
//! A panic in a route is caught here: that request gets `500`, the worker goes on, and
//! (parking_lot locks do not poison) no shared state is left locked.

use std::io::{Cursor, Read, Write};
use std::net::IpAddr;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;

use tiny_http::{Header, Request, Response, StatusCode};

use crate::server::Shared;

pub type HttpResponse = Response<Cursor<Vec<u8>>>;

/// Carries the client's address (after `--trusted-proxy` resolution) to tiny_http. Set only
/// by connection threads; a copy sent by a client is dropped before forwarding.
pub const PEER_HEADER: &str = "X-Threadchat-Peer";

/// How long a connection thread waits for tiny_http's answer: a POST may wait up to its
/// own timeout for the history store, plus a margin.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(crate::net::api::POST_TIMEOUT.as_secs() + 5);

/// How often an idle worker looks whether tiny_http was restarted (and at the shutdown flag).
const WORKER_POLL: Duration = Duration::from_secs(1);

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
        let limit = crate::net::exchange::MAX_RESPONSE_BYTES as u64;
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

    fn current(&self) -> Arc<tiny_http::Server> {
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

pub fn spawn_worker(index: usize, workers: Arc<Workers>, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new().name(format!("http-{index}")).stack_size(256 * 1024).spawn(move || {
        while !shared.is_shutting_down() {
            let server = workers.current();
            let mut request = match server.recv_timeout(WORKER_POLL) {
                Ok(Some(request)) => request,
                // Timed out, or our own `unblock()` at shutdown: check the flag.
                Ok(None) => continue,
                // tiny_http passes along the accept error that stopped its accept thread.
                Err(e) => {
                    log::error!("http: tiny_http stopped accepting ({e}); restarting it");
                    while !workers.restart(Some(&server)) && !shared.is_shutting_down() {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                    continue;
                }
            };
            let method = request.method().clone();
            let url = request.url().to_string();
            let routed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                crate::net::api::route(&mut request, &shared)
            }));
            let response = routed.unwrap_or_else(|_| {
                // The panic message was printed by the hook; this request fails alone.
                log::error!("http {method} {url}: the handler panicked; answered 500");
                text(500, "internal error\n")
            });
            let response = response.with_header(header("X-Content-Type-Options", "nosniff"));
            let status = response.status_code().0;
            if let Err(e) = request.respond(response) {
                log::debug!("http {method} {url}: connection thread went away: {e}");
            } else {
                log::debug!("http {method} {url} -> {status}");
            }
        }
    })
}

/// The client's address, as its connection thread recorded it.
pub fn peer_ip(request: &Request) -> Option<IpAddr> {
    request_header(request, PEER_HEADER).and_then(|v| v.parse().ok())
}

pub fn request_header<'r>(request: &'r Request, name: &str) -> Option<&'r str> {
    request.headers().iter().find(|h| h.field.as_str().as_str().eq_ignore_ascii_case(name)).map(|h| h.value.as_str())
}

pub fn header(name: &str, value: &str) -> Header {
    // Only called with ASCII names and values of ours: cannot fail.
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("valid header")
}

pub fn text(status: u16, body: &str) -> HttpResponse {
    Response::from_data(body.as_bytes().to_vec())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "text/plain; charset=utf-8"))
}

pub fn json(status: u16, value: &serde_json::Value) -> HttpResponse {
    Response::from_data(value.to_string().into_bytes())
        .with_status_code(StatusCode(status))
        .with_header(header("Content-Type", "application/json"))
}
