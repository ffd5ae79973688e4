//! The way in's shared state: one [`Shared`] per server, held by every connection thread
//! and by tiny_http's workers.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::{Condvar, Mutex};

use crate::chat::Chat;
use crate::conn::Conn;
use crate::metrics::Gauges;
use crate::net::entry::admission::Admission;
use crate::net::http::tiny::Workers;

/// What every connection thread of one server shares: the chat, and the way in's own
/// state (admission, per-address and per-user counts, tickets, tiny_http). Built by
/// `server.rs`; every field is immutable or synchronised inside.
pub struct Shared {
    /// The chat: hub, sequencer, store, settings (see `chat/mod.rs`).
    pub chat: Arc<Chat>,
    /// Connections and upgrade rate per client IP.
    pub ips: crate::net::access::per_ip::IpTable,
    /// One-time upgrade tickets (`POST /api/ticket`).
    pub tickets: crate::net::access::tickets::Tickets,
    /// Signs and checks guest identities.
    pub guest_keys: crate::net::access::identity::GuestKeys,
    /// Open sessions per JWT user (`--max-connections-per-user`).
    pub user_sessions: crate::net::access::auth::UserSessions,
    /// Connections that have no thread's worth of request yet, and HTTP requests in progress.
    pub admission: Arc<Admission>,
    /// tiny_http, which connection threads hand complete HTTP requests to.
    pub http: Arc<Workers>,
    /// Browser origins allowed to upgrade: the server's own HTTP origins plus `--allow-origin`.
    pub allowed_origins: Vec<String>,
    /// `--tls-cert`: both listeners speak TLS only.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    /// The bound addresses (ports resolved when the config said 0).
    pub http_addr: SocketAddr,
    pub ws_addr: SocketAddr,
    /// Written once, by `shutdown`; when true the accept loops exit and no client joins.
    pub shutting_down: AtomicBool,
    /// WebSocket sessions being admitted or open (`--max-clients` applies to it).
    pub sessions: std::sync::atomic::AtomicUsize,
    /// Connection threads alive; `shutdown` waits for it to reach 0.
    pub live: Mutex<usize>,
    pub live_changed: Condvar,
}

impl Shared {
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Counts a client thread as alive until the returned guard drops (on every exit path,
    /// panics included).
    pub fn enter_client(self: &Arc<Self>) -> LiveGuard {
        *self.live.lock() += 1;
        LiveGuard(Arc::clone(self))
    }

    pub fn live_clients(&self) -> usize {
        *self.live.lock()
    }

    /// Counts a WebSocket session (from its upgrade request on) until the guard drops.
    pub fn enter_session(&self) -> SessionGuard<'_> {
        let count = self.sessions.fetch_add(1, Ordering::AcqRel) + 1;
        SessionGuard { shared: self, count }
    }

    /// Refuses a request with a plain-text HTTP answer: logged (`what` says which request),
    /// counted by status, queued and sent. The caller then closes the connection (gently:
    /// the client is probably still sending). The one way every entrance refuses.
    pub fn refuse(&self, conn: &Arc<Conn>, what: &str, status: u16, text: &str, extra_headers: &str) {
        log::info!("{}: {what} refused with {status}: {text}", conn.peer);
        self.chat.metrics.rejected(crate::metrics::Refusal::from_status(status));
        conn.push_control(crate::net::entry::head::plain_response(status, text, extra_headers), false);
        conn.flush();
    }

    /// Current gauges for `/metrics`.
    pub fn gauges(&self) -> Gauges {
        let chat = &*self.chat;
        // `/metrics` is open to anyone who can reach it: a private room (`--private-room`)
        // is not named there, nor counted, as the room listing does not show it.
        let mut rooms = chat.hub.occupied_rooms();
        let public = crate::net::access::auth::RoomAccess::default();
        rooms.retain(|(room, _)| public.may_enter(room, &chat.config.private_rooms));
        let backplane = chat.backplane.as_deref().map(|b| (b.ready().is_ok(), b.pending()));
        let mut g = Gauges {
            rooms,
            chat_clients: 0,
            echo_clients: 0,
            handshaking: self.admission.pending(),
            http_requests: self.admission.busy(),
            client_threads: 0,
            queued_bytes: 0,
            backplane,
            moderation: chat.moderation.counts(),
        };
        for conn in chat.hub.snapshot().iter() {
            match conn.kind() {
                crate::conn::Kind::Chat | crate::conn::Kind::Plain => g.chat_clients += 1,
                crate::conn::Kind::Echo => g.echo_clients += 1,
                crate::conn::Kind::Handshaking => {}
            }
        }
        // The outboxes' running total: no need to lock each one.
        g.queued_bytes = chat.outboxes.budget.total();
        g.client_threads = self.live_clients();
        g
    }
}

/// A WebSocket session counted in `Shared::sessions`.
pub struct SessionGuard<'a> {
    shared: &'a Shared,
    /// Sessions, this one included, when it arrived.
    pub count: usize,
}

impl Drop for SessionGuard<'_> {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::AcqRel);
    }
}

pub struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        let mut live = self.0.live.lock();
        *live -= 1;
        self.0.live_changed.notify_all();
    }
}

/// An address that reaches a listener bound to `bound` from this machine (0.0.0.0 is not
/// connectable): to wake our own accept loops, and as a fallback URL host.
pub fn connectable(bound: SocketAddr) -> SocketAddr {
    let mut addr = bound;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => [127, 0, 0, 1].into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    addr
}
