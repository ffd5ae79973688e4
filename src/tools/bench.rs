//! `threadchat bench`: a load generator for any server that broadcasts chat text.
//!
//! It simulates many clients with non-blocking sockets on a few threads (mio/epoll), so the
//! generator is not the bottleneck. Each sent message carries `tcb:<sender>:<nanos>` in its
//! text; any frame that contains that marker is a delivery, and its latency is measured from
//! the nanosecond timestamp (same process, same clock). That works for threadchat (which
//! wraps the text in JSON) and for a tutorial-style server that rebroadcasts raw frames.
//!
//! Given the server's pid, it also reads the server's CPU time and RSS from `/proc`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use crate::config::BenchArgs;

/// Connections being set up at once per thread: more than the server's accept backlog
/// would only turn into SYN retransmits (a 1 s stall each).
const MAX_PENDING_CONNECTS: usize = 128;
/// Local ports per source address before moving to the next 127.0.0.x.
const PORTS_PER_SOURCE_IP: usize = 20_000;
/// The fixed key is fine: the server only hashes it back.
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum State {
    Connecting,
    Upgrading,
    Open,
    Closed,
}

struct Sim {
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

/// Shared between the bench threads: start/stop of the measurement window.
struct Clock {
    origin: Instant,
    measuring: AtomicBool,
    stop: AtomicBool,
    connected: AtomicU64,
    deliveries: AtomicU64,
    /// How many URLs: a sender's instance is its index mod this.
    instances: usize,
}

impl Clock {
    fn nanos(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }
}

#[derive(Default)]
struct ThreadStats {
    deliveries: u64,
    sent: u64,
    latencies_us: Vec<u32>,
    /// With several URLs: the latencies of deliveries from a sender on another instance.
    cross_us: Vec<u32>,
    connect_us: Vec<u32>,
    errors: u64,
    closed_by_server: u64,
    handshakes: u64,
    /// Upgrades refused, by HTTP status (0: closed before any answer).
    refused: std::collections::BTreeMap<u16, u64>,
}

/// The result of one run, printed as a table or JSON.
#[derive(Serialize, Debug)]
pub struct Report {
    pub url: String,
    pub clients: usize,
    pub connected: u64,
    pub senders: usize,
    pub rate: f64,
    pub duration_secs: f64,
    pub sent: u64,
    pub deliveries: u64,
    pub deliveries_per_sec: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_max_ms: f64,
    /// Messages sent per second over all senders.
    pub sent_per_sec: f64,
    /// Deliveries over what full delivery would be (sent × connected clients); below ~0.99
    /// the servers did not keep up.
    pub delivered_fraction: f64,
    /// With several URLs: deliveries that crossed instances (sender on one, reader on
    /// another) and those that did not.
    pub cross_latency_p50_ms: Option<f64>,
    pub cross_latency_p99_ms: Option<f64>,
    pub local_latency_p99_ms: Option<f64>,
    pub connect_p50_ms: f64,
    pub connect_p99_ms: f64,
    pub connect_max_ms: f64,
    pub handshakes_per_sec: f64,
    pub errors: u64,
    pub closed_by_server: u64,
    /// Refused upgrades by HTTP status ("closed": closed before any answer).
    pub refused: std::collections::BTreeMap<String, u64>,
    /// Which server flags lift those refusals.
    pub hints: Vec<String>,
    /// `--redis-pid`'s CPU over the measurement, in % of one core.
    pub redis_cpu_percent: Option<f64>,
    pub server_cpu_secs: Option<f64>,
    pub server_cpu_ms_per_1k_deliveries: Option<f64>,
    pub server_cpu_percent: Option<f64>,
    /// The load generator's own CPU (this process) per 1k deliveries: on one machine its
    /// reads cost as much kernel time as the server's writes.
    pub generator_cpu_ms_per_1k_deliveries: Option<f64>,
    /// The busiest load-generator thread, in % of a core. Near saturation its own queue
    /// shows up in the latencies, whatever the server does: then add `--threads`.
    pub generator_busiest_thread_percent: Option<f64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_kib: Option<u64>,
    pub server_rss_per_client_kib: Option<f64>,
    /// RSS change over the measurement window (a stalled client's backlog shows up here).
    pub server_rss_growth_kib: Option<i64>,
    /// Growth of the kernel's `KernelStack` (/proc/meminfo) per connected client, from
    /// before connecting to connected: what the server's threads cost the kernel (16 KiB of
    /// stack each on x86-64). Machine-wide: run nothing else meanwhile.
    pub kernel_stack_per_client_kib: Option<f64>,
    /// Growth of the kernel's `Slab` per connected client over the same window: socket,
    /// task and file structures. Machine-wide, so it includes the load generator's end of
    /// each loopback connection — the same for every server measured.
    pub kernel_slab_per_client_kib: Option<f64>,
}

pub fn run(args: &BenchArgs) -> Result<Report, String> {
    let targets = args.urls.iter().map(|u| parse_url(u)).collect::<Result<Vec<_>, _>>()?;
    let pids = &args.server_pid;
    // Summed over the server processes; None without any, or if one cannot be read.
    let rss = || pids.iter().map(|&p| read_rss_kib(p)).sum::<Option<u64>>().filter(|_| !pids.is_empty());
    let cpu_now = || pids.iter().map(|&p| read_cpu_secs(p)).sum::<Option<f64>>().filter(|_| !pids.is_empty());
    let threads = args.threads.clamp(1, 64);
    let clock = Arc::new(Clock {
        origin: Instant::now(),
        measuring: AtomicBool::new(false),
        stop: AtomicBool::new(false),
        connected: AtomicU64::new(0),
        deliveries: AtomicU64::new(0),
        instances: targets.len(),
    });
    let rss_before = rss();
    let kernel_before = read_kernel_kib();

    let mut handles = vec![];
    for t in 0..threads {
        let indices: Vec<usize> = (0..args.clients).filter(|i| i % threads == t).collect();
        let args = args.clone();
        let clock = Arc::clone(&clock);
        let targets = targets.clone();
        handles.push(
            std::thread::Builder::new()
                .name(format!("bench-{t}"))
                .spawn(move || run_thread(&args, &targets, indices, &clock))
                .map_err(|e| e.to_string())?,
        );
    }

    // Connect phase: wait until everyone is connected (or the connect timeout).
    let connect_deadline = Instant::now() + Duration::from_secs(args.connect_timeout_secs);
    let expected = if args.handshakes { 0 } else { args.clients as u64 };
    let mut last_progress = Instant::now();
    while clock.connected.load(Ordering::Relaxed) < expected && Instant::now() < connect_deadline {
        std::thread::sleep(Duration::from_millis(20));
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            eprintln!("bench: connecting… {}/{}", clock.connected.load(Ordering::Relaxed), expected);
        }
    }
    let connected = clock.connected.load(Ordering::Relaxed);
    if connected < expected {
        eprintln!("bench: only {connected} of {expected} clients connected; measuring anyway");
    }
    std::thread::sleep(Duration::from_secs_f64(args.warmup_secs));

    let rss_connected = rss();
    let kernel_connected = read_kernel_kib();
    let cpu_start = cpu_now();
    let generator_start = read_cpu_secs(std::process::id());
    let threads_start = bench_thread_cpu_secs();
    let redis_start = args.redis_pid.and_then(read_cpu_secs);
    clock.measuring.store(true, Ordering::Release);
    let start = Instant::now();
    let duration = Duration::from_secs_f64(args.duration_secs);
    while start.elapsed() < duration {
        std::thread::sleep(Duration::from_millis(100).min(duration.saturating_sub(start.elapsed())));
        if last_progress.elapsed() >= Duration::from_secs(5) {
            last_progress = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            let d = clock.deliveries.load(Ordering::Relaxed);
            eprintln!("bench: {secs:.0}s, {d} deliveries ({:.0}/s)", d as f64 / secs);
        }
    }
    clock.measuring.store(false, Ordering::Release);
    let elapsed = start.elapsed().as_secs_f64();
    let cpu_end = cpu_now();
    let generator_end = read_cpu_secs(std::process::id());
    let busiest = busiest_thread_secs(&threads_start, &bench_thread_cpu_secs());
    let redis_end = args.redis_pid.and_then(read_cpu_secs);
    let rss_end = rss();
    clock.stop.store(true, Ordering::Release);

    let mut total = ThreadStats::default();
    for h in handles {
        let s = h.join().map_err(|_| "a bench thread panicked".to_string())??;
        total.deliveries += s.deliveries;
        total.sent += s.sent;
        total.latencies_us.extend(s.latencies_us);
        total.cross_us.extend(s.cross_us);
        total.connect_us.extend(s.connect_us);
        total.errors += s.errors;
        total.closed_by_server += s.closed_by_server;
        total.handshakes += s.handshakes;
        for (status, n) in s.refused {
            *total.refused.entry(status).or_default() += n;
        }
    }
    let answered: u64 = total.refused.values().sum();
    let mut refused: std::collections::BTreeMap<String, u64> =
        total.refused.iter().map(|(status, n)| (status.to_string(), *n)).collect();
    if total.errors > answered {
        refused.insert("closed".into(), total.errors - answered);
    }
    let hints = refusal_hints(&refused);
    total.latencies_us.sort_unstable();
    total.cross_us.sort_unstable();
    let clustered = targets.len() > 1;
    // Local deliveries, from the difference of the sorted lists (the cross ones are a
    // subset of all).
    let local_us = clustered.then(|| sorted_difference(&total.latencies_us, &total.cross_us));
    total.connect_us.sort_unstable();
    let cpu = match (cpu_start, cpu_end) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    Ok(Report {
        url: args.urls.join(" "),
        clients: args.clients,
        connected,
        senders: args.senders,
        rate: args.rate,
        duration_secs: elapsed,
        sent: total.sent,
        deliveries: total.deliveries,
        deliveries_per_sec: total.deliveries as f64 / elapsed,
        latency_p50_ms: percentile_ms(&total.latencies_us, 0.50),
        latency_p99_ms: percentile_ms(&total.latencies_us, 0.99),
        latency_max_ms: total.latencies_us.last().map_or(0.0, |&us| us as f64 / 1000.0),
        sent_per_sec: total.sent as f64 / elapsed,
        delivered_fraction: if total.sent > 0 && connected > 0 {
            total.deliveries as f64 / (total.sent as f64 * connected as f64)
        } else {
            0.0
        },
        cross_latency_p50_ms: clustered.then(|| percentile_ms(&total.cross_us, 0.50)),
        cross_latency_p99_ms: clustered.then(|| percentile_ms(&total.cross_us, 0.99)),
        local_latency_p99_ms: local_us.as_deref().map(|l| percentile_ms(l, 0.99)),
        connect_p50_ms: percentile_ms(&total.connect_us, 0.50),
        connect_p99_ms: percentile_ms(&total.connect_us, 0.99),
        connect_max_ms: total.connect_us.last().map_or(0.0, |&us| us as f64 / 1000.0),
        handshakes_per_sec: total.handshakes as f64 / elapsed,
        errors: total.errors,
        closed_by_server: total.closed_by_server,
        refused,
        hints,
        redis_cpu_percent: match (redis_start, redis_end) {
            (Some(a), Some(b)) => Some((b - a) * 100.0 / elapsed),
            _ => None,
        },
        server_cpu_secs: cpu,
        server_cpu_ms_per_1k_deliveries: cpu
            .filter(|_| total.deliveries > 0)
            .map(|c| c * 1000.0 / (total.deliveries as f64 / 1000.0)),
        server_cpu_percent: cpu.map(|c| c * 100.0 / elapsed),
        generator_cpu_ms_per_1k_deliveries: match (generator_start, generator_end) {
            (Some(a), Some(b)) if total.deliveries > 0 => Some((b - a) * 1000.0 / (total.deliveries as f64 / 1000.0)),
            _ => None,
        },
        generator_busiest_thread_percent: busiest.map(|c| c * 100.0 / elapsed),
        server_rss_before_kib: rss_before,
        server_rss_kib: rss_end,
        server_rss_per_client_kib: match (rss_before, rss_connected) {
            (Some(a), Some(b)) if connected > 0 => Some((b.saturating_sub(a)) as f64 / connected as f64),
            _ => None,
        },
        server_rss_growth_kib: match (rss_connected, rss_end) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        },
        kernel_stack_per_client_kib: per_client(kernel_before.map(|k| k.0), kernel_connected.map(|k| k.0), connected),
        kernel_slab_per_client_kib: per_client(kernel_before.map(|k| k.1), kernel_connected.map(|k| k.1), connected),
    })
}

fn per_client(before: Option<u64>, after: Option<u64>, clients: u64) -> Option<f64> {
    match (before, after) {
        (Some(a), Some(b)) if clients > 0 => Some((b as f64 - a as f64) / clients as f64),
        _ => None,
    }
}

/// The elements of sorted `all` minus those of sorted `some` (a sub-multiset of it).
fn sorted_difference(all: &[u32], some: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(all.len().saturating_sub(some.len()));
    let mut j = 0;
    for &x in all {
        if j < some.len() && some[j] == x {
            j += 1;
        } else {
            out.push(x);
        }
    }
    out
}

/// The kernel's `KernelStack` and `Slab` from /proc/meminfo, in KiB.
pub fn read_kernel_kib() -> Option<(u64, u64)> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = meminfo.lines().find(|l| l.split(':').next() == Some(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some((field("KernelStack")?, field("Slab")?))
}

#[derive(Clone)]
struct Target {
    addr: SocketAddr,
    host: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
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

fn run_thread(args: &BenchArgs, targets: &[Target], indices: Vec<usize>, clock: &Clock) -> Result<ThreadStats, String> {
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
    let requests: Vec<String> = targets
        .iter()
        .map(|t| {
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n",
                t.path, t.host
            )
        })
        .collect();
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
fn start_connect(addr: SocketAddr, index: usize) -> io::Result<TcpStream> {
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
        if buf.len() < 2 {
            break;
        }
        let opcode = buf[0] & 0x0F;
        let (hlen, plen) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
            127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().unwrap_or([0; 8])) as usize),
            126 | 127 => break,
            n => (2, n as usize),
        };
        if buf.len() < hlen + plen {
            break;
        }
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

/// Every bench message in a frame: `tcb:SENDER:NANOS` markers, one per message.
fn markers(payload: &[u8]) -> impl Iterator<Item = (u32, u64)> + '_ {
    let mut rest = payload;
    std::iter::from_fn(move || {
        loop {
            let start = find(rest, b"tcb:")? + 4;
            rest = &rest[start..];
            if let Some(m) = parse_marker(rest) {
                return Some(m);
            }
        }
    })
}

fn parse_marker(after_tag: &[u8]) -> Option<(u32, u64)> {
    let mut fields = after_tag.split(|&b| b == b':' || b == b'"' || b == b' ');
    let sender = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let ns = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((sender, ns))
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

/// Appends one masked client frame.
fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    // A constant mask is legal (the RFC wants it unpredictable to protect proxies, which
    // a loopback benchmark does not have) and keeps the generator cheap.
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

fn flush(sim: &mut Sim) -> io::Result<()> {
    let Some(stream) = sim.stream.as_mut() else {
        return Ok(());
    };
    while !sim.wbuf.is_empty() && sim.state != State::Connecting {
        match stream.write(&sim.wbuf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                sim.wbuf.drain(..n);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn percentile_ms(sorted_us: &[u32], p: f64) -> f64 {
    if sorted_us.is_empty() {
        return 0.0;
    }
    let idx = ((sorted_us.len() as f64 - 1.0) * p).round() as usize;
    sorted_us[idx] as f64 / 1000.0
}

/// utime + stime of a process, in seconds.
pub fn read_cpu_secs(pid: u32) -> Option<f64> {
    read_cpu_secs_at(&format!("/proc/{pid}/stat"))
}

/// utime + stime from a `stat` file of /proc (a process's or a thread's), in seconds.
fn read_cpu_secs_at(path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(path).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((utime + stime) / ticks)
}

/// CPU seconds of each of this process's load-generator threads (`bench-N`), by thread id.
fn bench_thread_cpu_secs() -> Vec<(u32, f64)> {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else { return vec![] };
    dir.filter_map(|e| {
        let tid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm")).ok()?;
        comm.starts_with("bench-").then_some(())?;
        Some((tid, read_cpu_secs_at(&format!("/proc/self/task/{tid}/stat"))?))
    })
    .collect()
}

/// The most CPU any one thread used between two `bench_thread_cpu_secs` readings.
fn busiest_thread_secs(before: &[(u32, f64)], after: &[(u32, f64)]) -> Option<f64> {
    after
        .iter()
        .filter_map(|(tid, end)| before.iter().find(|(t, _)| t == tid).map(|(_, start)| end - start))
        .max_by(f64::total_cmp)
}

/// Resident set size of a process, in KiB.
pub fn read_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The human-readable table.
pub fn print_table(r: &Report) {
    let opt = |v: Option<f64>, unit: &str| v.map_or("n/a".to_string(), |v| format!("{v:.3} {unit}"));
    println!("target                 {}", r.url);
    println!(
        "clients                {} ({} connected), {} senders, rate {}",
        r.clients,
        r.connected,
        r.senders,
        if r.rate > 0.0 { format!("{} msg/s", r.rate) } else { "max".into() }
    );
    println!("measured               {:.1} s", r.duration_secs);
    println!("sent / deliveries      {} / {} ({:.0} deliveries/s)", r.sent, r.deliveries, r.deliveries_per_sec);
    println!("latency p50/p99/max    {:.3} / {:.3} / {:.3} ms", r.latency_p50_ms, r.latency_p99_ms, r.latency_max_ms);
    println!(
        "sent/s, delivered      {:.0} msg/s, {:.1} % of sent × connected",
        r.sent_per_sec,
        r.delivered_fraction * 100.0
    );
    if let (Some(p50), Some(p99), Some(local)) =
        (r.cross_latency_p50_ms, r.cross_latency_p99_ms, r.local_latency_p99_ms)
    {
        println!("across instances       p50 {p50:.3} ms, p99 {p99:.3} ms (within one: p99 {local:.3} ms)");
    }
    if r.redis_cpu_percent.is_some() {
        println!("redis CPU              {}", opt(r.redis_cpu_percent, "% of a core"));
    }
    println!("connect p50/p99/max    {:.3} / {:.3} / {:.3} ms", r.connect_p50_ms, r.connect_p99_ms, r.connect_max_ms);
    if r.handshakes_per_sec > 0.0 {
        println!("handshakes/s           {:.0}", r.handshakes_per_sec);
    }
    println!("errors / closed        {} / {}", r.errors, r.closed_by_server);
    if !r.refused.is_empty() {
        let list: Vec<String> = r.refused.iter().map(|(status, n)| format!("{status} ×{n}")).collect();
        println!("refused                {}", list.join(", "));
    }
    for hint in &r.hints {
        println!("hint                   {hint}");
    }
    println!(
        "server CPU             {} ({} per 1k deliveries, {})",
        opt(r.server_cpu_secs, "s"),
        opt(r.server_cpu_ms_per_1k_deliveries, "ms"),
        opt(r.server_cpu_percent, "% of a core")
    );
    println!(
        "load generator CPU     {} per 1k deliveries, busiest thread {}",
        opt(r.generator_cpu_ms_per_1k_deliveries, "ms"),
        opt(r.generator_busiest_thread_percent, "% of a core")
    );
    if r.generator_busiest_thread_percent.is_some_and(|p| p > 50.0) {
        println!(
            "hint                   a load-generator thread is over half busy: its own queue is in these latencies; add --threads"
        );
    }
    println!(
        "server RSS             {} KiB (before {} KiB, {} per client)",
        r.server_rss_kib.map_or("n/a".into(), |v| v.to_string()),
        r.server_rss_before_kib.map_or("n/a".into(), |v| v.to_string()),
        opt(r.server_rss_per_client_kib, "KiB")
    );
    println!(
        "kernel, per client     {} KernelStack + {} Slab (machine-wide, both ends of each connection)",
        opt(r.kernel_stack_per_client_kib, "KiB"),
        opt(r.kernel_slab_per_client_kib, "KiB")
    );
}

/// What a refusal status means for a benchmark, and which threadchat flag lifts it (a load
/// generator's clients all come from 127.0.0.x, which per-address limits are made to stop).
fn refusal_hints(refused: &std::collections::BTreeMap<String, u64>) -> Vec<String> {
    refused
        .keys()
        .filter_map(|status| {
            Some(match status.as_str() {
                "429" => "429: over the per-address upgrade rate; start the server with --upgrade-rate 1000000",
                "503" => "503: over a connection cap; raise --max-clients and --max-clients-per-ip (and --max-connections-per-user with JWTs)",
                "401" => "401: the server wants a credential (--token / --jwt-secret)",
                "403" => "403: the Origin is not allowed (--allow-origin)",
                "closed" => "closed without an answer: over --max-handshakes-per-ip (connections still in their handshake from one address), or out of file descriptors",
                _ => return None,
            })
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_come_with_the_flag_that_lifts_them() {
        let refused = [("429".to_string(), 30), ("closed".to_string(), 2)].into_iter().collect();
        let hints = refusal_hints(&refused);
        assert!(hints[0].contains("--upgrade-rate") && hints[1].contains("--max-handshakes-per-ip"), "{hints:?}");
    }

    #[test]
    fn finds_every_marker_in_json_raw_text_and_joined_frames() {
        let all = |p: &[u8]| markers(p).collect::<Vec<_>>();
        assert_eq!(all(br#"{"type":"message","text":"tcb:3:12345: fox"}"#), [(3, 12345)]);
        assert_eq!(all(b"tcb:0:99"), [(0, 99)]);
        assert_eq!(all(b"no marker"), []);
        // gorilla's chat example joins queued messages with newlines; a broken marker in
        // between is skipped, not the end of the frame.
        let joined = b"{\"text\":\"tcb:1:5: a\"}\ntcb:x:1\n{\"text\":\"tcb:2:7: b\"}";
        assert_eq!(all(joined), [(1, 5), (2, 7)]);
    }

    #[test]
    fn masked_frames_round_trip() {
        let mut out = vec![];
        push_frame(&mut out, 0x1, &[b'a'; 300]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 300);
        let mask = &out[4..8];
        assert!(out[8..].iter().enumerate().all(|(i, b)| b ^ mask[i % 4] == b'a'));
    }

    #[test]
    fn busiest_thread_counts_only_threads_seen_at_both_readings() {
        let before = [(1, 1.0), (2, 5.0)];
        let after = [(1, 4.0), (2, 6.0), (3, 9.0)];
        assert_eq!(busiest_thread_secs(&before, &after), Some(3.0));
        assert_eq!(busiest_thread_secs(&[], &after), None);
        // This test's own thread is not a bench thread; a spawned `bench-` thread is.
        let t = std::thread::Builder::new().name("bench-test".into()).spawn(|| bench_thread_cpu_secs().len()).unwrap();
        assert!(t.join().unwrap() >= 1);
    }

    #[test]
    fn percentiles() {
        let v: Vec<u32> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(percentile_ms(&v, 0.5), 51.0);
        assert_eq!(percentile_ms(&v, 0.99), 99.0);
        assert_eq!(percentile_ms(&[], 0.5), 0.0);
    }
}
