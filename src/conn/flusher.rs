//! The flusher thread: finishes writes to sockets whose kernel send buffer was full.
//!
//! Almost every write completes at once (a loopback or LAN socket has hundreds of KiB of
//! buffer). When one does not, the writer parks the connection here instead of blocking:
//! this thread registers the socket with epoll (through `mio`, edge-triggered) and writes
//! the rest when the kernel reports room. One thread serves every parked socket, so a slow
//! reader costs a map entry, not a blocked broadcaster.
//!
//! Only this thread touches the epoll set; other threads hand it connections over a channel
//! and wake it with `mio::Waker` (an eventfd).

use std::collections::HashMap;
use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};

/// What the flusher needs of a connection whose kernel buffer is full. The outbox
/// implements it; the flusher knows nothing else about connections, so the two modules do
/// not depend on each other.
pub trait Parked: Send + Sync {
    /// A number unique among live connections (the epoll token).
    fn id(&self) -> u64;
    fn fd(&self) -> std::os::fd::RawFd;
    /// Writes what it can, now that the socket is writable again.
    fn flush_parked(&self) -> Flushed;
    /// Shuts the socket (when it cannot even be watched).
    fn terminate(&self);
}

/// What a writer pass ended with.
#[derive(Debug, PartialEq, Eq)]
pub enum Flushed {
    /// Everything queued was written.
    Empty,
    /// The kernel buffer is full; the socket is parked with the flusher.
    Blocked,
    /// Another thread owns the writes (or nothing is parked).
    NotOwner,
    /// The socket failed.
    Dead,
}

/// Token of the waker; connection tokens are connection ids, which start at 1.
const WAKE: Token = Token(usize::MAX);

enum Cmd {
    Park(Arc<dyn Parked>),
    Stop,
}

/// Handle used by writers to park a connection.
pub struct Flusher {
    tx: Sender<Cmd>,
    waker: Waker,
}

impl Flusher {
    /// Starts the flusher thread.
    pub fn start() -> io::Result<(Arc<Flusher>, JoinHandle<()>)> {
        let poll = Poll::new()?;
        let waker = Waker::new(poll.registry(), WAKE)?;
        let (tx, rx) = crossbeam_channel::unbounded();
        let handle = crate::conn::threads::spawn_named("flusher", 256 * 1024, move || run(poll, rx))?;
        Ok((Arc::new(Flusher { tx, waker }), handle))
    }

    /// Hands a connection whose writer hit `EAGAIN` to the flusher thread.
    pub fn park(&self, conn: Arc<dyn Parked>) {
        if self.tx.send(Cmd::Park(conn)).is_ok() {
            let _ = self.waker.wake();
        }
    }

    /// Asks the thread to exit (after the server has closed its clients).
    pub fn stop(&self) {
        let _ = self.tx.send(Cmd::Stop);
        let _ = self.waker.wake();
    }
}

fn run(mut poll: Poll, rx: Receiver<Cmd>) {
    let mut events = Events::with_capacity(256);
    // Parked connections by token. Holding the Arc keeps the fd open (and so its epoll
    // registration valid) until we deregister it.
    let mut parked: HashMap<Token, Arc<dyn Parked>> = HashMap::new();
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("flusher: epoll failed: {e}; parked sockets will only drain on close");
            return;
        }
        for event in events.iter() {
            if event.token() == WAKE {
                continue;
            }
            let Some(conn) = parked.get(&event.token()) else {
                continue;
            };
            match conn.flush_parked() {
                // Still full: edge-triggered epoll will report the next time room appears.
                Flushed::Blocked => {}
                Flushed::Empty | Flushed::Dead | Flushed::NotOwner => {
                    if let Some(conn) = parked.remove(&event.token()) {
                        deregister(&poll, &*conn);
                    }
                }
            }
        }
        // Commands after events: a connection parked again right after we drained it is
        // re-registered below, never lost.
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Stop => return,
                Cmd::Park(conn) => {
                    let token = Token(conn.id() as usize);
                    let fd = conn.fd();
                    let registry = poll.registry();
                    // reregister (EPOLL_CTL_MOD) re-arms the edge: if the socket is already
                    // writable, an event is reported at once.
                    let result = if parked.contains_key(&token) {
                        registry.reregister(&mut SourceFd(&fd), token, Interest::WRITABLE)
                    } else {
                        registry.register(&mut SourceFd(&fd), token, Interest::WRITABLE)
                    };
                    match result {
                        Ok(()) => {
                            parked.insert(token, conn);
                        }
                        Err(e) => {
                            log::warn!("client {}: cannot watch socket: {e}; closing", conn.id());
                            conn.terminate();
                        }
                    }
                }
            }
        }
    }
}

fn deregister(poll: &Poll, conn: &dyn Parked) {
    let fd = conn.fd();
    let _ = poll.registry().deregister(&mut SourceFd(&fd));
}
