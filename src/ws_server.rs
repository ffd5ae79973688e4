//! The WebSocket accept loop: one thread that only accepts TCP connections and gives each
//! its own client thread (a recycled one when one is idle). It never reads from a socket, so a client that connects and says
//! nothing (slowloris) holds up only its own thread, which its handshake deadline ends.

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crossbeam_channel::Receiver;
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

/// Idle client threads kept for reuse. Creating a thread costs an `mmap` for its stack and
/// an `mprotect` for the guard page — which makes the kernel interrupt every other core to
/// flush its TLB — and exiting costs an `munmap`. Profiling showed that to be most of a
/// handshake's cost, so a finished client thread waits a while to serve the next
/// connection instead of exiting. Still one thread per connection, just recycled.
const MAX_IDLE_THREADS: usize = 64;
/// How long an idle client thread waits for a new connection before exiting.
const IDLE_THREAD_KEEP: Duration = Duration::from_secs(30);

/// A connection waiting for a thread.
type Job = Box<dyn FnOnce() + Send>;

pub fn spawn_accept_loop(listener: TcpListener, shared: Arc<Shared>) -> std::io::Result<JoinHandle<()>> {
    std::thread::Builder::new()
        .name("ws-accept".into())
        .stack_size(256 * 1024)
        .spawn(move || accept_loop(&listener, &shared))
}

fn accept_loop(listener: &TcpListener, shared: &Arc<Shared>) {
    // Zero capacity: `try_send` succeeds only if an idle thread is blocked in `recv` right
    // now, i.e. it hands the connection straight to that thread.
    let (handoff, idle) = crossbeam_channel::bounded::<Job>(0);
    let idle_count = Arc::new(AtomicUsize::new(0));
    // Set while accept keeps failing, so an episode is logged once, not 20 times a second.
    let mut failing_since: Option<std::time::Instant> = None;
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(accepted) => accepted,
            Err(e) => {
                if shared.is_shutting_down() {
                    return;
                }
                // EMFILE/ENFILE/ENOBUFS: out of resources. Back off briefly instead of
                // spinning; the connection stays in the backlog and is retried.
                if failing_since.is_none() {
                    log::error!("ws accept failed: {e}; retrying every 50 ms");
                    failing_since = Some(std::time::Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        if let Some(since) = failing_since.take() {
            log::warn!("ws accept works again after {:.1?}", since.elapsed());
        }
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
        let job: Job = Box::new({
            let shared = Arc::clone(shared);
            move || client::run(stream, peer, id, &shared, live)
        });
        let job = match handoff.try_send(job) {
            Ok(()) => continue,
            Err(e) => e.into_inner(),
        };
        let spawned = std::thread::Builder::new().name("ws-client".into()).stack_size(CLIENT_STACK_BYTES).spawn({
            let idle = idle.clone();
            let idle_count = Arc::clone(&idle_count);
            move || client_thread(job, &idle, &idle_count)
        });
        if let Err(e) = spawned {
            // The job (and with it the socket) is dropped: the client sees a reset.
            log::error!("{peer}: cannot start a client thread: {e}");
        }
    }
}

/// A client thread: serves its first connection, then others handed over by the accept
/// loop while it is idle, until it has waited `IDLE_THREAD_KEEP` for nothing (or enough
/// threads are idle already, or the server shut down and dropped the sender).
fn client_thread(first: Job, idle: &Receiver<Job>, idle_count: &AtomicUsize) {
    let mut job = first;
    loop {
        // A panic while serving one client must not kill the thread silently or touch
        // anyone else: the client's drop guards clean up during unwinding, the default
        // hook has printed the message, and this thread goes back to work.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            log::error!("a client thread panicked; its connection was dropped");
        }
        release_unused_stack();
        if idle_count.fetch_add(1, Ordering::AcqRel) >= MAX_IDLE_THREADS {
            idle_count.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        let next = idle.recv_timeout(IDLE_THREAD_KEEP);
        idle_count.fetch_sub(1, Ordering::AcqRel);
        match next {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
}

/// Bytes below the caller's stack pointer that [`release_unused_stack`] leaves alone: more
/// than x86-64's 128-byte red zone. (Measured: an idle client blocked in `recv` uses about
/// 2.5 KiB of stack below the thread's entry frame, so nearly all of a handshake's pages
/// can go.)
const STACK_KEEP_BELOW_SP: usize = 512;

/// Gives the kernel back this thread's stack pages below the current frame.
///
/// A thread's stack pages stay resident once touched. The WebSocket handshake (HTTP parsing,
/// header maps, SHA-1) goes much deeper than the read loop a connection then idles in, so
/// without this every idle client would keep ~20 KiB of dead stack resident. The pages
/// below the stack pointer hold nothing live (x86-64's red zone is 128 bytes, and we keep
/// 512), so `MADV_DONTNEED` is safe: they come back zero-filled if ever needed again.
pub(crate) fn release_unused_stack() {
    // SAFETY: pthread_getattr_np/pthread_attr_getstack only fill in the attr we own; the
    // madvise range lies inside this thread's own stack mapping, strictly below the live
    // frames of this function and its callers.
    unsafe {
        let mut attr: libc::pthread_attr_t = std::mem::zeroed();
        if libc::pthread_getattr_np(libc::pthread_self(), &mut attr) != 0 {
            return;
        }
        let mut base: *mut libc::c_void = std::ptr::null_mut();
        let mut size: libc::size_t = 0;
        let found = libc::pthread_attr_getstack(&attr, &mut base, &mut size) == 0;
        libc::pthread_attr_destroy(&mut attr);
        if !found {
            return;
        }
        let marker = 0u8;
        let sp = std::hint::black_box(&marker) as *const u8 as usize;
        let page = 4096;
        let low = (base as usize).next_multiple_of(page);
        let high = sp.saturating_sub(STACK_KEEP_BELOW_SP) & !(page - 1);
        if high > low && sp < base as usize + size {
            libc::madvise(low as *mut libc::c_void, high - low, libc::MADV_DONTNEED);
        }
    }
}
