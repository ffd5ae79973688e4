//! The simulated clients: each thread drives its share of them on one epoll (mio) loop —
//! connecting, upgrading, sending on schedule and reading every frame.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};

use super::frames::{find, markers, push_frame, whole_frame, write_some};
use super::{Clock, ThreadStats};
use crate::config::BenchArgs;

/// Connections being set up at once per thread: more than the server's accept backlog
/// would only turn into SYN retransmits (a 1 s stall each).
const MAX_PENDING_CONNECTS: usize = 128;
/// Local ports per source address before moving to the next 127.0.0.x.
const PORTS_PER_SOURCE_IP: usize = 20_000;
/// The fixed key is fine: the server only hashes it back.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum State {
    Connecting,
    Upgrading,
    Open,
    Closed,
}

pub(super) struct Sim {
    stream: Option<TcpStream>,
    state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    started: Instant,
    /// Index among senders, if this client sends.
    sender: Option<u32>,
    /// Never reads (the "stalled" client of scenario 4).
    stalled: bool,
    in_flight: u32,
    next_send: Instant,
    /// Which URL it connects to (with several: client i takes URL i mod N).
    instance: usize,
}

#[derive(Clone)]
pub(super) struct Target {
    pub(super) addr: SocketAddr,
    host: String,
    path: String,
}

impl Target {
    /// The upgrade request for this target, with `query` (`?…` or "") after its path.
    pub(super) fn request(&self, query: &str) -> String {
        format!(
            "GET {}{query} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            self.path, self.host
        )
    }
}

pub(super) fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url.strip_prefix("ws://").ok_or("the bench URL must start with ws://")?;
    let (hostport, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr = hostport
        .to_socket_addrs()
        .map_err(|e| format!("{hostport}: {e}"))?
        .next()
        .ok_or_else(|| format!("{hostport}: no address"))?;
    Ok(Target { addr, host: hostport.to_string(), path: path.to_string() })
}

pub(super) fn run_thread(
    args: &BenchArgs,
    targets: &[Target],
    indices: Vec<usize>,
    clock: &Clock,
) -> Result<ThreadStats, String> {
    let mut poll = Poll::new().map_err(|e| e.to_string())?;
    let mut events = Events::with_capacity(1024);
    let mut stats = ThreadStats::default();
    let now = Instant::now();
    let send_interval = if args.rate > 0.0 && args.senders > 0 {
        Some(Duration::from_secs_f64(args.senders as f64 / args.rate))
    } else {
        None
    };
    let mut sims: Vec<Sim> = indices
        .iter()
        .map(|&i| {
            let sender = (i < args.senders).then_some(i as u32);
            // Stagger senders evenly over one interval so the total rate is smooth.
            let offset = match (sender, send_interval) {
                (Some(s), Some(iv)) => iv.mul_f64(s as f64 / args.senders as f64),
                _ => Duration::ZERO,
            };
            Sim {
                stream: None,
                state: State::Closed,
                rbuf: Vec::with_capacity(4096),
                wbuf: Vec::new(),
                started: now,
                sender,
                stalled: i >= args.clients.saturating_sub(args.stalled),
                instance: i % targets.len(),
                in_flight: 0,
                next_send: now + offset,
            }
        })
        .collect();
    let mut to_connect: VecDeque<usize> = (0..sims.len()).collect();
    let mut pending = 0usize;
    let requests: Vec<String> = targets.iter().map(|t| t.request("")).collect();
    let mut scratch = vec![0u8; 64 * 1024];

    while !clock.stop.load(Ordering::Acquire) {
        while pending < MAX_PENDING_CONNECTS {
            let Some(slot) = to_connect.pop_front() else {
                break;
            };
            let global = indices[slot];
            match start_connect(targets[global % targets.len()].addr, global) {
                Ok(mut stream) => {
                    poll.registry()
                        .register(&mut stream, Token(slot), Interest::READABLE | Interest::WRITABLE)
                        .map_err(|e| e.to_string())?;
                    let sim = &mut sims[slot];
                    sim.stream = Some(stream);
                    sim.state = State::Connecting;
                    sim.started = Instant::now();
                    sim.rbuf.clear();
                    sim.wbuf.clear();
                    sim.in_flight = 0;
                    pending += 1;
                }
                Err(_) => {
                    stats.errors += 1;
                    to_connect.push_back(slot);
                    break;
                }
            }
        }

        // Wake for the next scheduled send, or at least every 50 ms to check `stop`.
        let now = Instant::now();
        let mut timeout = Duration::from_millis(50);
        if send_interval.is_some() {
            for sim in sims.iter().filter(|s| s.sender.is_some() && s.state == State::Open) {
                timeout = timeout.min(sim.next_send.saturating_duration_since(now));
            }
        }
        poll.poll(&mut events, Some(timeout))
            .or_else(|e| if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e.to_string()) })?;

        for event in events.iter() {
            let slot = event.token().0;
            let sim = &mut sims[slot];
            if sim.stream.is_none() {
                continue; // closed earlier in this batch
            }
            let before = sim.state;
            let request = &requests[sim.instance];
            if let Err(_e) = drive(sim, request, &mut scratch, clock, &mut stats, args) {
                if sim.state == State::Open || before == State::Open {
                    stats.closed_by_server += 1;
                } else {
                    stats.errors += 1;
                }
                close(sim, &mut poll);
            }
            if before != State::Open && sim.state == State::Open {
                pending -= 1;
                stats.connect_us.push(sim.started.elapsed().as_micros() as u32);
                if args.handshakes {
                    if clock.measuring.load(Ordering::Relaxed) {
                        stats.handshakes += 1;
                    }
                    close(sim, &mut poll);
                    to_connect.push_back(slot);
                } else {
                    clock.connected.fetch_add(1, Ordering::Relaxed);
                }
            } else if before != State::Open && sim.state == State::Closed {
                pending -= 1;
                if args.handshakes {
                    to_connect.push_back(slot);
                }
            }
        }

        // Senders.
        let now = Instant::now();
        for sim in sims.iter_mut().filter(|s| s.sender.is_some() && s.state == State::Open) {
            let due = match send_interval {
                Some(iv) => {
                    let mut n = 0;
                    while sim.next_send <= now {
                        sim.next_send += iv;
                        n += 1;
                    }
                    n
                }
                None => args.window.saturating_sub(sim.in_flight),
            };
            let measuring = clock.measuring.load(Ordering::Relaxed);
            for _ in 0..due {
                queue_message(sim, clock, args.payload_bytes);
                sim.in_flight += 1;
                stats.sent += u64::from(measuring);
            }
            if due > 0 && flush(sim).is_err() {
                sim.state = State::Closed;
            }
        }
    }
    for sim in sims.iter_mut() {
        close(sim, &mut poll);
    }
    Ok(stats)
}

/// A non-blocking connect from 127.0.0.x when the target is loopback and there are more
/// clients than one source address has ports.
pub(super) fn start_connect(addr: SocketAddr, index: usize) -> io::Result<TcpStream> {
    let domain = socket2::Domain::for_address(addr);
    let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    // RST on close: a benchmark that closes thousands of sockets must not fill TIME_WAIT.
    socket.set_linger(Some(Duration::ZERO))?;
    if let IpAddr::V4(ip) = addr.ip()
        && ip.is_loopback()
    {
        let n = (index / PORTS_PER_SOURCE_IP) as u8;
        let src = Ipv4Addr::new(127, 0, 0, 1u8.wrapping_add(n).max(1));
        socket.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

fn close(sim: &mut Sim, poll: &mut Poll) {
    if let Some(mut s) = sim.stream.take() {
        let _ = poll.registry().deregister(&mut s);
    }
    sim.state = State::Closed;
}

/// Handles readiness for one simulated client.
fn drive(
    sim: &mut Sim,
    request: &str,
    scratch: &mut [u8],
    clock: &Clock,
    stats: &mut ThreadStats,
    args: &BenchArgs,
) -> io::Result<()> {
    if sim.state == State::Connecting {
        let stream = sim.stream.as_ref().ok_or(io::ErrorKind::NotConnected)?;
        if let Some(e) = stream.take_error()? {
            return Err(e);
        }
        match stream.peer_addr() {
            Ok(_) => {
                sim.state = State::Upgrading;
                sim.wbuf.extend_from_slice(request.as_bytes());
            }
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    flush(sim)?;
    if sim.stalled && sim.state == State::Open {
        return Ok(()); // never reads: its buffers fill up and the server must cope
    }
    // Edge-triggered: read until WouldBlock.
    loop {
        let stream = sim.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
        match stream.read(scratch) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => sim.rbuf.extend_from_slice(&scratch[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        if sim.state == State::Upgrading
            && let Some(end) = find(&sim.rbuf, b"\r\n\r\n")
        {
            if !sim.rbuf.starts_with(b"HTTP/1.1 101") {
                let status = std::str::from_utf8(&sim.rbuf[..end]).ok().and_then(|h| h.split(' ').nth(1)?.parse().ok());
                *stats.refused.entry(status.unwrap_or(0)).or_default() += 1;
                return Err(io::Error::other("upgrade refused"));
            }
            sim.rbuf.drain(..end + 4);
            sim.state = State::Open;
            if args.handshakes {
                return Ok(());
            }
        }
        if sim.state == State::Open {
            parse_frames(sim, clock, stats)?;
        }
    }
    flush(sim)
}

/// Consumes complete frames from `rbuf`.
fn parse_frames(sim: &mut Sim, clock: &Clock, stats: &mut ThreadStats) -> io::Result<()> {
    let mut pos = 0;
    let measuring = clock.measuring.load(Ordering::Relaxed);
    let mut pong: Option<Vec<u8>> = None;
    loop {
        let buf = &sim.rbuf[pos..];
        let Some((opcode, hlen, plen)) = whole_frame(buf) else { break };
        let payload = &buf[hlen..hlen + plen];
        match opcode {
            // A frame may carry several messages: the gorilla reference joins what is
            // queued for a client with newlines, as gorilla's chat example does.
            0x1 | 0x2 => {
                for (sender, sent_ns) in markers(payload) {
                    if measuring {
                        stats.deliveries += 1;
                        clock.deliveries.fetch_add(1, Ordering::Relaxed);
                        let lat = (clock.nanos().saturating_sub(sent_ns) / 1000).min(u32::MAX as u64) as u32;
                        stats.latencies_us.push(lat);
                        if sender as usize % clock.instances != sim.instance {
                            stats.cross_us.push(lat);
                        }
                    }
                    if Some(sender) == sim.sender {
                        sim.in_flight = sim.in_flight.saturating_sub(1);
                    }
                }
            }
            0x8 => return Err(io::Error::other("closed by server")),
            0x9 => pong = Some(payload.to_vec()),
            _ => {}
        }
        pos += hlen + plen;
    }
    sim.rbuf.drain(..pos);
    if let Some(p) = pong {
        push_frame(&mut sim.wbuf, 0xA, &p);
    }
    Ok(())
}

fn queue_message(sim: &mut Sim, clock: &Clock, payload_bytes: usize) {
    let mut text = format!(
        r#"{{"type":"message","text":"tcb:{}:{}: the quick brown fox jumps over the lazy dog"#,
        sim.sender.unwrap_or(0),
        clock.nanos()
    );
    // Pad the text (not the JSON) so both kinds of server carry the same bytes.
    while text.len() + 2 < payload_bytes {
        text.push('.');
    }
    text.push_str("\"}");
    push_frame(&mut sim.wbuf, 0x1, text.as_bytes());
}

fn flush(sim: &mut Sim) -> io::Result<()> {
    match sim.stream.as_mut() {
        Some(stream) if sim.state != State::Connecting => write_some(stream, &mut sim.wbuf),
        _ => Ok(()),
    }
}
