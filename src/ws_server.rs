//! The WebSocket accept loop: one thread that only accepts TCP connections and gives each
//! its own client thread. It never reads from a socket, so a client that connects and says
//! nothing (slowloris) holds up only its own thread, which its handshake deadline ends.

use std::net::TcpListener;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::client;
use crate::server::Shared;

/// Stack for each client thread. The read path is shallow (tungstenite, serde_json with its
/// 128-level recursion limit); 256 KiB leaves ample margin. Only touched pages cost memory,
/// but the reservation counts against the address space of thousands of threads.
pub const CLIENT_STACK_BYTES: usize = 256 * 1024;

/// Connections accepted beyond `max_clients` still get a thread, so that they can be told
/// `503` properly. Past this many extra, new connections are closed at once instead.
const OVER_CAPACITY_SLACK: usize = 64;

pub fn spawn_accept_loop(
    listener: TcpListener,
    shared: Arc<Shared>,
) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ws-accept".into())
        .stack_size(256 * 1024)
        .spawn(move || accept_loop(&listener, &shared))
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                if shared.is_shutting_down() {
                    return;
                }
                // EMFILE/ENFILE/ENOBUFS: out of resources. Back off briefly instead of
                // spinning; the connection stays in the backlog and is retried.
                log::error!("ws accept failed: {e}");
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if shared.is_shutting_down() {
            return; // the wake-up connection from shutdown(), or a late client
        }
        if shared.live_clients() >= shared.config.max_clients + OVER_CAPACITY_SLACK {
            log::warn!("{peer}: dropped at accept, far over --max-clients");
            continue;
        }
        let id = shared.hub.next_id();
        // Counted from here, so the cap above sees threads that are still starting.
        let live = shared.enter_client();
        let spawned = std::thread::Builder::new()
            .name(format!("client-{id}"))
            .stack_size(CLIENT_STACK_BYTES)
            .spawn({
                let shared = Arc::clone(shared);
                move || client::run(stream, peer, id, &shared, live)
            });
        if let Err(e) = spawned {
            // The closure (and with it the socket) is dropped: the client sees a reset.
            log::error!("{peer}: cannot start a client thread: {e}");
        }
    }
}
