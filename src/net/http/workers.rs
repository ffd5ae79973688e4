//! tiny_http's workers: a few threads that take requests from tiny_http (see `tiny.rs`)
//! and answer them with the routes of `api.rs`.
//!
//! A panic in a route is caught here: that request gets `500`, the worker goes on, and
//! (parking_lot locks do not poison) no shared state is left locked.

use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::net::http::respond::{header, text};
use crate::net::http::tiny::Workers;
use crate::net::shared::Shared;

/// How often an idle worker looks whether tiny_http was restarted (and at the shutdown flag).
const WORKER_POLL: Duration = Duration::from_secs(1);

pub fn spawn_worker(index: usize, workers: Arc<Workers>, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    crate::conn::threads::spawn_named(&format!("http-{index}"), 256 * 1024, move || {
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
                crate::net::http::api::route(&mut request, &shared)
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
