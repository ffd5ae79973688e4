//! `threadchat bench --storm`: the reconnect storm a deployment meets when a proxy in front
//! of it restarts. `--clients` connect; one more client (the sender) posts at `--rate`
//! throughout; then every client but the sender is dropped at once (a reset, as a dying
//! proxy does), stays away `--storm-gap-ms`, and all reconnect together.
//!
//! With `--resume` (threadchat), each reconnects with `?resume=ROOM:SEQ`, SEQ being the
//! last message it had, and the storm is over when every client is back *and* has every
//! message up to the last one the sender had seen when the reconnects began, each exactly
//! once (gaps and duplicates are counted). Without it (servers with no resume), it is over
//! when every client is back. Meanwhile the server's threads and RSS are sampled from /proc
//! every 10 ms for their peaks.

use std::io::{self, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use serde::Serialize;

use super::client::{Target, parse_url, start_connect};
use super::frames::{find, push_frame, whole_frame, write_some};
use super::procfs::{read_rss_kib, read_threads};
use crate::config::BenchArgs;

/// Upgrades in progress at once: the server's listen backlog is 1,024.
const MAX_PENDING: usize = 1024;
/// The room everyone is in (the server's default).
const ROOM: &str = "lobby";
/// The storm must be over by then, or the report says what was left.
const STORM_LIMIT: Duration = Duration::from_secs(120);

#[derive(Serialize, Debug, Default)]
pub struct StormReport {
    pub url: String,
    pub clients: usize,
    /// Connected before the drop.
    pub connected: usize,
    pub resume: bool,
    /// Messages the sender posted while the clients were away.
    pub sent_while_away: u64,
    /// From the first reconnect until every client was upgraded again.
    pub reconnect_secs: f64,
    /// With --resume: until every client also had every message it missed.
    pub caught_up_secs: Option<f64>,
    /// Clients back, and (with --resume) clients with everything, when the report was made.
    pub back: usize,
    pub caught_up: usize,
    /// Messages a resumed client never got (a gap in its seqs), and ones it got twice.
    pub missed: u64,
    pub duplicates: u64,
    /// Failed attempts (refused, reset, closed), each retried.
    pub errors: u64,
    pub server_threads_before: Option<u64>,
    pub server_threads_peak: Option<u64>,
    pub server_rss_before_kib: Option<u64>,
    pub server_rss_peak_kib: Option<u64>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    Away,
    Connecting,
    Upgrading,
    Open,
}

struct Peer {
    stream: Option<TcpStream>,
    state: State,
    rbuf: Vec<u8>,
    wbuf: Vec<u8>,
    /// The last message seq this client has, in order (0: none yet).
    seq: u64,
    /// Counting gaps and duplicates (after its resume).
    strict: bool,
}

pub fn run(args: &BenchArgs) -> Result<StormReport, String> {
    let target = parse_url(args.urls.first().ok_or("a URL is needed")?)?;
    let pid = args.server_pid.first().copied();
    let n = args.clients;
    // Peer n is the sender; it never leaves.
    let mut peers: Vec<Peer> = (0..=n)
        .map(|_| Peer { stream: None, state: State::Away, rbuf: vec![], wbuf: vec![], seq: 0, strict: false })
        .collect();
    let mut report = StormReport { url: args.urls[0].clone(), clients: n, resume: args.resume, ..Default::default() };
    let mut net = Net {
        poll: Poll::new().map_err(|e| e.to_string())?,
        target,
        scratch: vec![0; 64 * 1024],
        sender: Sender { next: Instant::now(), interval: Duration::from_secs_f64(1.0 / args.rate.max(1.0)), sent: 0 },
        errors: 0,
        missed: 0,
        duplicates: 0,
    };
    let open = |p: &[Peer]| p.iter().all(|p| p.state == State::Open);

    // 1. Everyone connects, then a second of messages.
    let deadline = Instant::now() + Duration::from_secs(args.connect_timeout_secs);
    net.run(&mut peers, (0..=n).collect(), &|_| String::new(), deadline, &open)?;
    report.connected = peers[..n].iter().filter(|p| p.state == State::Open).count();
    net.run(&mut peers, vec![], &|_| String::new(), Instant::now() + Duration::from_secs(1), &|_| false)?;

    // 2. The drop: every client but the sender, at once.
    report.server_threads_before = pid.and_then(read_threads);
    report.server_rss_before_kib = pid.and_then(read_rss_kib);
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = pid.map(|pid| {
        let sampling = Arc::clone(&sampling);
        std::thread::spawn(move || {
            let (mut threads, mut rss) = (0, 0);
            while sampling.load(Ordering::Relaxed) {
                threads = threads.max(read_threads(pid).unwrap_or(0));
                rss = rss.max(read_rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(10));
            }
            (threads, rss)
        })
    });
    for peer in &mut peers[..n] {
        net.drop_peer(peer);
        peer.strict = args.resume;
    }
    let sent_before = net.sender.sent;
    let back_at = Instant::now() + Duration::from_millis(args.storm_gap_ms);
    net.run(&mut peers, vec![], &|_| String::new(), back_at, &|_| false)?;
    report.sent_while_away = net.sender.sent - sent_before;

    // 3. Everyone back, with what they missed.
    let upto = peers[n].seq;
    let started = Instant::now();
    let resume = args.resume;
    let query = move |seq: u64| if resume { format!("?resume={ROOM}:{seq}") } else { String::new() };
    let deadline = started + STORM_LIMIT;
    net.run(&mut peers, (0..n).collect(), &query, deadline, &open)?;
    report.reconnect_secs = started.elapsed().as_secs_f64();
    report.back = peers[..n].iter().filter(|p| p.state == State::Open).count();
    if resume {
        net.run(&mut peers, vec![], &query, deadline, &|p: &[Peer]| p[..n].iter().all(|p| p.seq >= upto))?;
        report.caught_up_secs = Some(started.elapsed().as_secs_f64());
        report.caught_up = peers[..n].iter().filter(|p| p.seq >= upto).count();
    }
    sampling.store(false, Ordering::Relaxed);
    if let Some(Ok((threads, rss))) = sampler.map(|s| s.join()) {
        report.server_threads_peak = Some(threads);
        report.server_rss_peak_kib = Some(rss);
    }
    report.missed = net.missed;
    report.duplicates = net.duplicates;
    report.errors = net.errors;
    Ok(report)
}

/// The client that keeps posting while the others are away (the last peer).
struct Sender {
    next: Instant,
    interval: Duration,
    sent: u64,
}

struct Net {
    poll: Poll,
    target: Target,
    scratch: Vec<u8>,
    sender: Sender,
    errors: u64,
    missed: u64,
    duplicates: u64,
}

impl Net {
    /// Connects the peers in `queue` (at most MAX_PENDING at a time; a failed one is
    /// retried), reads everything, and keeps the sender posting, until `done` or `until`.
    fn run(
        &mut self,
        peers: &mut [Peer],
        queue: Vec<usize>,
        query: &dyn Fn(u64) -> String,
        until: Instant,
        done: &dyn Fn(&[Peer]) -> bool,
    ) -> Result<(), String> {
        let mut queue: std::collections::VecDeque<usize> = queue.into();
        let mut pending = 0;
        let mut events = Events::with_capacity(1024);
        let sender = peers.len() - 1;
        while !done(peers) && Instant::now() < until {
            while pending < MAX_PENDING {
                let Some(i) = queue.pop_front() else { break };
                match start_connect(self.target.addr, i) {
                    Ok(mut stream) => {
                        self.poll
                            .registry()
                            .register(&mut stream, Token(i), Interest::READABLE | Interest::WRITABLE)
                            .map_err(|e| e.to_string())?;
                        let p = &mut peers[i];
                        let request = self.target.request(&query(p.seq));
                        (p.stream, p.state, p.wbuf) = (Some(stream), State::Connecting, request.into_bytes());
                        p.rbuf.clear();
                        pending += 1;
                    }
                    Err(_) => {
                        self.errors += 1;
                        queue.push_back(i);
                        break;
                    }
                }
            }
            let wait = self.sender.next.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
            self.poll
                .poll(&mut events, Some(wait))
                .or_else(|e| if e.kind() == io::ErrorKind::Interrupted { Ok(()) } else { Err(e.to_string()) })?;
            for event in events.iter() {
                let i = event.token().0;
                let before = peers[i].state;
                if before == State::Away {
                    continue;
                }
                if let Err(e) = self.drive(&mut peers[i]) {
                    if i == sender {
                        return Err(format!("the sender was cut off: {e}"));
                    }
                    self.errors += 1;
                    self.drop_peer(&mut peers[i]);
                    queue.push_back(i);
                }
                if before != State::Open && peers[i].state != State::Connecting && peers[i].state != State::Upgrading {
                    pending -= 1;
                }
            }
            let now = Instant::now();
            if peers[sender].state == State::Open && self.sender.next <= now {
                while self.sender.next <= now {
                    self.sender.next += self.sender.interval;
                    self.sender.sent += 1;
                    let text = format!(r#"{{"type":"message","text":"storm {}"}}"#, self.sender.sent);
                    push_frame(&mut peers[sender].wbuf, 0x1, text.as_bytes());
                }
                if flush(&mut peers[sender]).is_err() {
                    return Err("the sender was cut off".into());
                }
            }
        }
        Ok(())
    }

    /// Closes a peer's socket with a reset (its linger is 0), as a dying proxy would.
    fn drop_peer(&mut self, p: &mut Peer) {
        if let Some(mut s) = p.stream.take() {
            let _ = self.poll.registry().deregister(&mut s);
        }
        p.state = State::Away;
    }

    fn drive(&mut self, p: &mut Peer) -> io::Result<()> {
        if p.state == State::Connecting {
            let stream = p.stream.as_ref().ok_or(io::ErrorKind::NotConnected)?;
            if let Some(e) = stream.take_error()? {
                return Err(e);
            }
            match stream.peer_addr() {
                Ok(_) => p.state = State::Upgrading,
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        flush(p)?;
        loop {
            let stream = p.stream.as_mut().ok_or(io::ErrorKind::NotConnected)?;
            match stream.read(&mut self.scratch) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => p.rbuf.extend_from_slice(&self.scratch[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            if p.state == State::Upgrading
                && let Some(end) = find(&p.rbuf, b"\r\n\r\n")
            {
                if !p.rbuf.starts_with(b"HTTP/1.1 101") {
                    return Err(io::Error::other("upgrade refused"));
                }
                p.rbuf.drain(..end + 4);
                p.state = State::Open;
            }
            if p.state == State::Open {
                self.frames(p)?;
            }
        }
        flush(p)
    }

    /// Consumes whole frames: message seqs are checked, pings answered.
    fn frames(&mut self, p: &mut Peer) -> io::Result<()> {
        let mut pos = 0;
        loop {
            let buf = &p.rbuf[pos..];
            let Some((opcode, hlen, plen)) = whole_frame(buf) else { break };
            let payload = &buf[hlen..hlen + plen];
            match opcode {
                0x1 => {
                    if let Some(seq) = message_seq(payload) {
                        if !p.strict {
                            p.seq = p.seq.max(seq);
                        } else if seq == p.seq + 1 {
                            p.seq = seq;
                        } else if seq <= p.seq {
                            self.duplicates += 1;
                        } else {
                            self.missed += seq - p.seq - 1;
                            p.seq = seq;
                        }
                    }
                }
                0x8 => return Err(io::Error::other("closed by the server")),
                0x9 => {
                    let pong = payload.to_vec();
                    push_frame(&mut p.wbuf, 0xA, &pong);
                }
                _ => {}
            }
            pos += hlen + plen;
        }
        p.rbuf.drain(..pos);
        Ok(())
    }
}

/// A chat message's `seq` (threadchat's JSON); `None` for anything else.
fn message_seq(payload: &[u8]) -> Option<u64> {
    find(payload, br#""type":"message""#)?;
    let at = find(payload, br#""seq":"#)? + 6;
    let digits = payload[at..].iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&payload[at..at + digits]).ok()?.parse().ok()
}

fn flush(p: &mut Peer) -> io::Result<()> {
    match p.stream.as_mut() {
        Some(stream) if p.state != State::Connecting => write_some(stream, &mut p.wbuf),
        _ => Ok(()),
    }
}
