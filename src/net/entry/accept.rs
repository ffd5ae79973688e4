//! The accept loop, one per listener (the HTTP port and `--ws-addr` run the same function):
//! accept, admit (see `admission.rs`), and hand the socket to a connection thread. It never
//! reads from a socket, so a client that connects and says nothing holds up only its own
//! thread, which its deadline ends — and admission bounds how many such threads exist.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::conn::Conn;
use crate::conn::threads::Pool;
use crate::net::entry::admission::Refused;
use crate::net::shared::Shared;

/// After an accept error (EMFILE, ENFILE, ENOBUFS: out of resources), accepting pauses
/// this long instead of spinning; the connections wait in the listen backlog meanwhile.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// The kernel's send buffer per connection (it doubles the figure for its bookkeeping).
/// Left to autotuning, Linux lets one socket whose peer does not read hold about 3 MB of
/// kernel memory — 30 GB for ten thousand such clients, memory the kernel then takes from
/// everyone's sockets. Fixed at this size, a connection's unsent bytes live mostly in its
/// outbox, where `--max-queued-bytes` and `--max-queued-total` see and bound them. A chat
/// connection never needs more in flight.
const SOCKET_SEND_BUFFER: usize = 64 * 1024;

/// How long the kernel keeps a connection that has sent nothing before handing it to
/// `accept` anyway (`TCP_DEFER_ACCEPT`, in seconds; see [`tune_listener`]).
const DEFER_ACCEPT_SECS: libc::c_int = 1;

/// Sets on a listening socket what every accepted connection needs:
/// - the fixed send buffer above;
/// - `TCP_NODELAY`: chat frames are small and latency matters more than packet count; the
///   outbox already batches queued frames into one sendmsg, so Nagle would only add delay;
/// - `TCP_DEFER_ACCEPT`: the kernel hands a connection over once its first bytes (the
///   request head) have arrived, so the connection thread finds them there instead of
///   sleeping in `read` and being woken again — one context switch fewer per connection
///   (measured: 26.2k → 30.2k handshakes/s in the connect-and-drop loop). A socket that
///   says nothing is handed over after `DEFER_ACCEPT_SECS` anyway, and then meets the
///   same admission and deadline as always; until then it costs the kernel a request
///   socket and the server nothing (no thread, no descriptor).
///
/// Linux copies a listener's options into each socket it accepts, so the accept loop,
/// which every connection waits behind, spends no system call on them.
pub fn tune_listener(socket: &socket2::Socket) -> std::io::Result<()> {
    socket.set_send_buffer_size(SOCKET_SEND_BUFFER)?;
    socket.set_tcp_nodelay(true)?;
    let secs = DEFER_ACCEPT_SECS;
    // SAFETY: a plain integer option on a socket we own; the pointer and length describe `secs`.
    let rc = unsafe {
        libc::setsockopt(
            std::os::fd::AsRawFd::as_raw_fd(socket),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Starts the accept loop for `listener` on a thread called `name`.
pub fn spawn(name: &str, listener: TcpListener, shared: Arc<Shared>, pool: Pool) -> std::io::Result<JoinHandle<()>> {
    let label = name.to_string();
    crate::conn::threads::spawn_named(name, 256 * 1024, move || accept_loop(&label, &listener, &shared, &pool))
}

fn accept_loop(name: &str, listener: &TcpListener, shared: &Arc<Shared>, pool: &Pool) {
    // Set while accept keeps failing, so an episode is logged once, not 20 times a second.
    let mut failing_since: Option<Instant> = None;
    loop {
        let accepted = listener.accept();
        if shared.is_shutting_down() {
            return; // the wake-up connection from shutdown(), or a late client
        }
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(e) => {
                if failing_since.is_none() {
                    log::error!("{name}: accept failed: {e}; retrying every {ACCEPT_BACKOFF:?}");
                    failing_since = Some(Instant::now());
                }
                std::thread::sleep(ACCEPT_BACKOFF);
                continue;
            }
        };
        if let Some(since) = failing_since.take() {
            log::warn!("{name}: accept works again after {:.1?}", since.elapsed());
        }
        let tls = match &shared.tls {
            None => None,
            Some(config) => match crate::net::entry::stream::new_tls(config) {
                Ok(tls) => Some(tls),
                Err(e) => {
                    log::error!("{peer}: TLS setup failed: {e}");
                    continue;
                }
            },
        };
        let conn = Arc::new(Conn::new(shared.chat.hub.next_id(), peer, stream, tls, &shared.chat.outboxes));
        // Counted before a thread is spent on it; refused ones are just closed (nothing has
        // been read, so there is no request to answer).
        let slot = match shared.admission.accept(&conn) {
            Ok(slot) => slot,
            Err(Refused::TooManyFromAddress) => {
                log::info!("{peer}: closed at accept: too many unfinished connections from this address");
                shared.chat.metrics.rejected(crate::metrics::Refusal::Capacity);
                continue;
            }
            Err(Refused::ShuttingDown) => return,
        };
        // Counted from here, so shutdown waits for this connection's thread too.
        let live = shared.enter_client();
        let job = Box::new({
            let shared = Arc::clone(shared);
            move || crate::net::entry::connection::serve(conn, slot, &shared, live)
        });
        if let Err(e) = pool.run(job) {
            log::error!("{peer}: cannot start a connection thread: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    fn tuned_listener() -> TcpListener {
        let addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&addr.into()).unwrap();
        super::tune_listener(&socket).unwrap();
        socket.listen(8).unwrap();
        socket.into()
    }

    /// Accepts within `within`, polling (the listener is non-blocking).
    fn accept_within(listener: &TcpListener, within: Duration) -> Option<TcpStream> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok((s, _)) = listener.accept() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        None
    }

    /// What `tune_listener` sets reaches the accepted sockets without a call of theirs, and
    /// a connection is handed over when its first bytes arrive, not before.
    #[test]
    fn accepted_sockets_inherit_the_options_and_wait_for_their_first_bytes() {
        let listener = tuned_listener();
        listener.set_nonblocking(true).unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert!(accept_within(&listener, Duration::from_millis(300)).is_none(), "handed over before it spoke");
        client.write_all(b"G").unwrap();
        let accepted = accept_within(&listener, Duration::from_secs(5)).expect("handed over once it spoke");
        assert!(accepted.nodelay().unwrap());
        // The kernel doubles the figure for its bookkeeping.
        let sndbuf = socket2::SockRef::from(&accepted).send_buffer_size().unwrap();
        assert_eq!(sndbuf, 2 * super::SOCKET_SEND_BUFFER);
        drop(accepted);
        assert_eq!(client.read(&mut [0; 1]).unwrap_or(0), 0);
        // One that never speaks is handed over all the same, after the deferral.
        let _silent = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        assert!(accept_within(&listener, Duration::from_secs(10)).is_some(), "a silent socket was never handed over");
    }
}
