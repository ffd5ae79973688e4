//! Connection threads: one per connection, recycled, with small stacks that give back what
//! a deep moment (a handshake) touched.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender};

/// Stack for each connection thread. The read path is shallow (tungstenite, serde_json with
/// its 128-level recursion limit); 256 KiB leaves ample margin. Only touched pages cost
/// memory, but the reservation counts against the address space of thousands of threads.
pub const CONNECTION_STACK_BYTES: usize = 256 * 1024;

/// Idle connection threads kept for reuse. Creating a thread costs an `mmap` for its stack
/// and an `mprotect` for the guard page — which makes the kernel interrupt every other core
/// to flush its TLB — and exiting costs an `munmap`. Profiling showed that to be most of a
/// handshake's cost, so a finished connection thread waits a while to serve the next
/// connection instead of exiting. Still one thread per connection, just recycled.
const MAX_IDLE_THREADS: usize = 64;
/// How long an idle connection thread waits for a new connection before exiting.
const IDLE_THREAD_KEEP: Duration = Duration::from_secs(30);

/// Starts one of the server's long-lived threads: named (so `ps -L` and a debugger show what
/// each is), with its stack size, and logging its end — as an error if it panicked. Every
/// long-lived thread is started here.
pub fn spawn_named<F>(name: &str, stack_bytes: usize, body: F) -> std::io::Result<std::thread::JoinHandle<()>>
where
    F: FnOnce() + Send + 'static,
{
    let exit = ExitLog(name.to_string());
    std::thread::Builder::new().name(name.to_string()).stack_size(stack_bytes).spawn(move || {
        let _exit = exit;
        body();
    })
}

/// Logs a thread's end when dropped (also while unwinding from a panic).
struct ExitLog(String);

impl Drop for ExitLog {
    fn drop(&mut self) {
        if std::thread::panicking() {
            log::error!("thread {} panicked", self.0);
        } else {
            log::debug!("thread {} exited", self.0);
        }
    }
}

/// A connection waiting for a thread.
pub type Job = Box<dyn FnOnce() + Send>;

/// Hands connections to idle threads, or starts new ones. Shared by both accept loops.
#[derive(Clone)]
pub struct Pool {
    /// Zero capacity: `try_send` succeeds only if an idle thread is blocked in `recv` right
    /// now, i.e. it hands the connection straight to that thread.
    handoff: Sender<Job>,
    idle: Receiver<Job>,
    idle_count: Arc<AtomicUsize>,
}

impl Default for Pool {
    fn default() -> Self {
        let (handoff, idle) = crossbeam_channel::bounded::<Job>(0);
        Pool { handoff, idle, idle_count: Arc::new(AtomicUsize::new(0)) }
    }
}

impl Pool {
    /// Runs `job` on an idle connection thread, or a new one. `Err`: no thread could be
    /// started (the job, and with it the socket, is dropped: the client sees a reset).
    pub fn run(&self, job: Job) -> std::io::Result<()> {
        let job = match self.handoff.try_send(job) {
            Ok(()) => return Ok(()),
            Err(e) => e.into_inner(),
        };
        let idle = self.idle.clone();
        let idle_count = Arc::clone(&self.idle_count);
        std::thread::Builder::new()
            .name("conn".into())
            .stack_size(CONNECTION_STACK_BYTES)
            .spawn(move || connection_thread(job, &idle, &idle_count))
            .map(|_| ())
    }
}

/// A connection thread: serves its first connection, then others handed over while it is
/// idle, until it has waited `IDLE_THREAD_KEEP` for nothing (or enough threads are idle
/// already, or every accept loop is gone and with it the sender).
fn connection_thread(first: Job, idle: &Receiver<Job>, idle_count: &AtomicUsize) {
    let mut job = first;
    loop {
        // A panic while serving one connection must not kill the thread silently or touch
        // anyone else: the connection's drop guards clean up during unwinding, the default
        // hook has printed the message, and this thread goes back to work.
        if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
            log::error!("a connection thread panicked; its connection was dropped");
        }
        if idle_count.fetch_add(1, Ordering::AcqRel) >= MAX_IDLE_THREADS {
            idle_count.fetch_sub(1, Ordering::AcqRel);
            return;
        }
        // Idle for REST_AFTER: give back the stack the last connection used (a thread that
        // is handed a connection sooner keeps it: it would touch the pages again at once).
        let next = match idle.recv_timeout(REST_AFTER) {
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                release_unused_stack();
                idle.recv_timeout(IDLE_THREAD_KEEP)
            }
            next => next,
        };
        idle_count.fetch_sub(1, Ordering::AcqRel);
        match next {
            Ok(next) => job = next,
            Err(_) => return,
        }
    }
}

/// How long a connection (or an idle pool thread) waits with nothing to do before it gives
/// its unused stack pages back with [`release_unused_stack`]. Each release is an `madvise`
/// whose TLB shootdown interrupts every core the process runs on: worth it for a client that
/// idles for hours, waste for one that is gone in milliseconds.
pub const REST_AFTER: std::time::Duration = std::time::Duration::from_millis(250);

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
