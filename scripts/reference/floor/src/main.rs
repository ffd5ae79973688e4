//! The floors: the least servers that speak the same WebSocket chat as the references
//! (`/ws` broadcasts every text message to every client), so `scripts/bench.sh` can say how
//! far threadchat is from what this machine's kernel allows for the same work.
//!
//!   floor [PORT]            the fan-out and handshake floor: one thread, raw epoll
//!   floor [PORT] --threads  the thread floor for memory: a thread per connection, each
//!                           parked in a blocking read() with the smallest stack glibc takes
//!
//! The fan-out floor does what a chat server cannot avoid, and nothing else: accept, answer
//! the upgrade, unmask what clients send, send every text frame to every client. It stores
//! nothing, parses no JSON, checks nothing (no origin, no limits, no fragmented messages).
//! Each text frame is framed once into the wakeup's batch, and every client gets the whole
//! batch in one send() (a sendmsg of one iovec); a client whose kernel buffer is full keeps
//! the rest until epoll says it is writable. Its handshake path is the same: accept, read
//! the head, one SHA-1, one write, and a close() when the client goes.
//!
//! The thread floor answers the upgrade on the accepting thread, then hands the socket to a
//! new thread (pthread_create with PTHREAD_STACK_MIN, 16 KiB on x86-64) that only loops on
//! read() into 64 bytes of stack: what a thread per connection costs before the server does
//! anything at all.
//!
//! Prints "ws listening on ws://ADDR" like the other references. Not a server to deploy.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const MAX_HEAD: usize = 8192;
/// A client that lets this much pile up is dropped (as the references drop theirs).
const MAX_PENDING: usize = 16 << 20;

fn main() {
    // A background job of a script starts with SIGINT ignored: ask for it back (the bench
    // stops each server with SIGINT).
    extern "C" fn exit_now(_: libc::c_int) {
        unsafe { libc::_exit(0) }
    }
    unsafe {
        libc::signal(libc::SIGINT, exit_now as *const () as libc::sighandler_t);
        libc::signal(libc::SIGTERM, exit_now as *const () as libc::sighandler_t);
    }
    let args: Vec<String> = std::env::args().collect();
    let port = args.get(1).map_or("0", String::as_str);
    let listener = TcpListener::bind(format!("127.0.0.1:{port}")).expect("bind");
    println!("ws listening on ws://{}", listener.local_addr().expect("address"));
    std::io::stdout().flush().expect("stdout");
    if args.iter().any(|a| a == "--threads") {
        thread_floor(listener)
    } else {
        fan_out_floor(listener)
    }
}

/// The `Sec-WebSocket-Accept` for a request head, if it has a key.
fn accept_key(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok()?;
    let key = text.lines().find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| value.trim())
    })?;
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID.as_bytes());
    Some(base64(&sha.digest().bytes()))
}

fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            out.push(if i <= chunk.len() { T[(n >> (18 - 6 * i)) as usize & 63] as char } else { '=' });
        }
    }
    out
}

fn upgrade_response(accept: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes()
}

/// Appends an unmasked server frame.
fn frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    match payload.len() {
        n if n < 126 => out.push(n as u8),
        n if n < 65536 => {
            out.push(126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

// ---- the fan-out and handshake floor ----

struct Client {
    stream: TcpStream,
    open: bool,
    input: Vec<u8>,
    /// What the kernel did not take yet; non-empty means EPOLLOUT is armed.
    pending: Vec<u8>,
}

fn fan_out_floor(listener: TcpListener) {
    listener.set_nonblocking(true).expect("nonblocking");
    let ep = unsafe { libc::epoll_create1(0) };
    assert!(ep >= 0, "epoll_create1");
    let lfd = listener.as_raw_fd();
    ctl(ep, libc::EPOLL_CTL_ADD, lfd, libc::EPOLLIN as u32);
    let mut clients: HashMap<RawFd, Client> = HashMap::new();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 1024];
    let mut batch = Vec::new();
    let mut dead = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, -1) };
        if n < 0 {
            continue; // EINTR
        }
        batch.clear();
        for ev in &events[..n as usize] {
            let fd = ev.u64 as RawFd;
            if fd == lfd {
                while let Ok((stream, _)) = listener.accept() {
                    let _ = stream.set_nonblocking(true);
                    let _ = stream.set_nodelay(true);
                    let fd = stream.as_raw_fd();
                    ctl(ep, libc::EPOLL_CTL_ADD, fd, libc::EPOLLIN as u32);
                    clients.insert(fd, Client { stream, open: false, input: Vec::new(), pending: Vec::new() });
                }
                continue;
            }
            let Some(c) = clients.get_mut(&fd) else { continue };
            let mut alive = true;
            if ev.events & (libc::EPOLLIN | libc::EPOLLHUP | libc::EPOLLERR) as u32 != 0 {
                alive = read_ready(c, &mut buf, &mut batch, ep);
            }
            if alive && ev.events & libc::EPOLLOUT as u32 != 0 {
                alive = write_pending(c, ep);
            }
            if !alive {
                dead.push(fd);
            }
        }
        if !batch.is_empty() {
            for (fd, c) in clients.iter_mut().filter(|(_, c)| c.open) {
                if !deliver(c, &batch, ep) {
                    dead.push(*fd);
                }
            }
        }
        for fd in dead.drain(..) {
            if clients.remove(&fd).is_some() {
                ctl(ep, libc::EPOLL_CTL_DEL, fd, 0);
            }
        }
    }
}

fn ctl(ep: RawFd, op: i32, fd: RawFd, events: u32) {
    let mut ev = libc::epoll_event { events, u64: fd as u64 };
    unsafe { libc::epoll_ctl(ep, op, fd, &mut ev) };
}

/// Reads what arrived; returns false when the client is gone or broke the protocol.
fn read_ready(c: &mut Client, buf: &mut [u8], batch: &mut Vec<u8>, ep: RawFd) -> bool {
    match c.stream.read(buf) {
        Ok(0) => return false,
        Ok(n) => c.input.extend_from_slice(&buf[..n]),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return true,
        Err(_) => return false,
    }
    if !c.open {
        let Some(end) = head_end(&c.input) else { return c.input.len() <= MAX_HEAD };
        let Some(accept) = accept_key(&c.input[..end]) else { return false };
        c.input.drain(..end);
        c.open = true;
        if !deliver(c, &upgrade_response(&accept), ep) {
            return false;
        }
    }
    // Whole frames: unmask, and frame each text message once into the batch.
    let mut at = 0;
    loop {
        let b = &mut c.input[at..];
        if b.len() < 2 {
            break;
        }
        let (opcode, masked, len7) = (b[0] & 0x0f, b[1] & 0x80 != 0, (b[1] & 0x7f) as usize);
        let (len, mut head) = match len7 {
            126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() >= 10 => (u64::from_be_bytes(b[2..10].try_into().unwrap_or_default()) as usize, 10),
            126 | 127 => break,
            n => (n, 2),
        };
        if !masked || len > MAX_PENDING {
            return false;
        }
        if b.len() < head + 4 + len {
            break;
        }
        let mask = [b[head], b[head + 1], b[head + 2], b[head + 3]];
        head += 4;
        let payload = &mut b[head..head + len];
        for (i, byte) in payload.iter_mut().enumerate() {
            *byte ^= mask[i & 3];
        }
        match opcode {
            1 => frame(batch, 1, payload),
            8 => return false,
            9 => {
                let mut pong = Vec::new();
                frame(&mut pong, 10, payload);
                if !deliver(c, &pong, ep) {
                    return false;
                }
            }
            _ => {}
        }
        at += head + len;
    }
    c.input.drain(..at);
    true
}

/// One send() of `bytes` (or queue them behind what is waiting); false when the client is
/// gone or over its cap.
fn deliver(c: &mut Client, bytes: &[u8], ep: RawFd) -> bool {
    if !c.pending.is_empty() {
        c.pending.extend_from_slice(bytes);
        return c.pending.len() <= MAX_PENDING;
    }
    let fd = c.stream.as_raw_fd();
    let n = unsafe { libc::send(fd, bytes.as_ptr().cast(), bytes.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    let sent = if n >= 0 {
        n as usize
    } else if std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock {
        0
    } else {
        return false;
    };
    if sent < bytes.len() {
        c.pending.extend_from_slice(&bytes[sent..]);
        ctl(ep, libc::EPOLL_CTL_MOD, fd, (libc::EPOLLIN | libc::EPOLLOUT) as u32);
    }
    true
}

fn write_pending(c: &mut Client, ep: RawFd) -> bool {
    let fd = c.stream.as_raw_fd();
    let n = unsafe { libc::send(fd, c.pending.as_ptr().cast(), c.pending.len(), libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) };
    if n < 0 {
        return std::io::Error::last_os_error().kind() == std::io::ErrorKind::WouldBlock;
    }
    c.pending.drain(..n as usize);
    if c.pending.is_empty() {
        ctl(ep, libc::EPOLL_CTL_MOD, fd, libc::EPOLLIN as u32);
    }
    true
}

// ---- the thread floor ----

fn thread_floor(listener: TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        // The upgrade on this thread, so a parked thread's stack holds nothing but its read.
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        let accept = loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break None,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
            if let Some(end) = head_end(&head) {
                break accept_key(&head[..end]);
            }
            if head.len() > MAX_HEAD {
                break None;
            }
        };
        let Some(accept) = accept else { continue };
        if stream.write_all(&upgrade_response(&accept)).is_err() {
            continue;
        }
        let fd = stream.into_raw_fd();
        unsafe {
            let mut attr: libc::pthread_attr_t = std::mem::zeroed();
            libc::pthread_attr_init(&mut attr);
            libc::pthread_attr_setstacksize(&mut attr, libc::PTHREAD_STACK_MIN);
            let mut thread: libc::pthread_t = 0;
            if libc::pthread_create(&mut thread, &attr, park, fd as usize as *mut libc::c_void) == 0 {
                libc::pthread_detach(thread);
            } else {
                libc::close(fd);
            }
            libc::pthread_attr_destroy(&mut attr);
        }
    }
}

/// A parked connection: read() until the client goes, then close.
extern "C" fn park(arg: *mut libc::c_void) -> *mut libc::c_void {
    let fd = arg as usize as RawFd;
    let mut buf = [0u8; 64];
    while unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    unsafe { libc::close(fd) };
    std::ptr::null_mut()
}
