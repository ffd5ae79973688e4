//! threadchat's idea in one file: a chat server with no async runtime. Run it with
//! `cargo run --example minimal -- [HTTP_ADDR [WS_ADDR]]`, open http://127.0.0.1:3000 in two
//! windows, and chat. tiny_http serves the page; an accept loop upgrades sockets with
//! tungstenite and gives each client its own thread; the clients live in a
//! `parking_lot::Mutex` list; a heartbeat thread pings them; Ctrl-C ends it. A client's
//! thread writes only to its own socket, so a slow reader holds up itself alone. What the
//! real server adds, and why, is in the README's architecture section.

use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TryRecvError};
use parking_lot::Mutex;
use tungstenite::protocol::{CloseFrame, WebSocketConfig, frame::coding::CloseCode};
use tungstenite::{Message, WebSocket};

/// Largest message a client may send (more: close 1009). 64 KiB, the Node tutorials' cap.
const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// Messages waiting for one client. Full: the client is dropped (1008), never waited on.
const QUEUE: usize = 64;
/// Messages one client may send per second, in bursts of twice that (more: close 1008). A
/// flood would otherwise fill every other client's queue.
const MESSAGE_RATE: f64 = 20.0;
/// Heartbeat period. A client that has not answered one ping by the next is dropped.
const PING_INTERVAL: Duration = Duration::from_secs(5);
/// A client's thread waits this long in `read` before it sends what was queued for it.
const POLL: Duration = Duration::from_millis(50);
/// Time for the upgrade request, and for one write to a peer that stopped reading.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Clients at most, one thread each; past it, new connections are closed at once.
const MAX_CLIENTS: usize = 1000;
/// At Ctrl-C, time for the clients to take their Close; then the process ends, and with it
/// any thread still stuck in a write (a partial write restarts the write timeout).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What a client's thread is asked to send: a chat line, or a heartbeat ping.
enum Out {
    Text(String),
    Ping,
}

#[derive(Default)]
struct Server {
    /// Each client's id and queue. Broadcasting only queues: no socket is written under it.
    clients: Mutex<Vec<(u64, Sender<Out>)>>,
    threads: AtomicUsize,
    stopping: AtomicBool,
    next_id: AtomicU64,
}

const PAGE: &str = r#"<!doctype html><title>minimal chat</title><ul id=log></ul><form id=f><input id=t>
<button>Send</button></form><script>const ws = new WebSocket(`ws://${location.hostname}:WS_PORT/`);
ws.onmessage = (e) => { const li = document.createElement("li"); li.textContent = e.data; log.append(li); };
f.onsubmit = (e) => { e.preventDefault(); ws.send(t.value); t.value = ""; };</script>"#;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let http = tiny_http::Server::http(args.next().as_deref().unwrap_or("127.0.0.1:3000"));
    let http = http.map_err(std::io::Error::other)?;
    let listener = TcpListener::bind(args.next().as_deref().unwrap_or("127.0.0.1:3001"))?;
    println!("http listening on http://{}", http.server_addr().to_ip().ok_or(std::io::ErrorKind::Other)?);
    println!("ws listening on ws://{}", listener.local_addr()?);
    let page = PAGE.replace("WS_PORT", &listener.local_addr()?.port().to_string());
    std::thread::spawn(move || serve_page(&http, &page));
    let server: &'static Server = Box::leak(Box::default());
    std::thread::spawn(|| beat(server));
    // Ctrl-C: set the flag, then connect to ourselves to wake the blocking accept().
    let wake = listener.local_addr()?;
    ctrlc::set_handler(move || {
        server.stopping.store(true, SeqCst);
        let _ = TcpStream::connect(wake);
    })
    .map_err(std::io::Error::other)?;
    accept_loop(&listener, server);
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while server.threads.load(SeqCst) > 0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

fn serve_page(http: &tiny_http::Server, page: &str) {
    for request in http.incoming_requests() {
        let header = tiny_http::Header::from_bytes("Content-Type", "text/html").expect("static header");
        let _ = request.respond(tiny_http::Response::from_string(page).with_header(header));
    }
}

/// Each round every client is asked to ping; one whose queue is full is dropped.
fn beat(server: &Server) {
    while !server.stopping.load(SeqCst) {
        std::thread::sleep(PING_INTERVAL);
        server.clients.lock().retain(|(_, tx)| tx.try_send(Out::Ping).is_ok());
    }
}

fn accept_loop(listener: &TcpListener, server: &'static Server) {
    for stream in listener.incoming() {
        if server.stopping.load(SeqCst) {
            return;
        }
        // An accept error (out of fds), or the cap: that connection is closed; go on.
        let Ok(stream) = stream else { continue };
        if server.threads.fetch_add(1, SeqCst) >= MAX_CLIENTS
            || std::thread::Builder::new().spawn(move || client(stream, server)).is_err()
        {
            server.threads.fetch_sub(1, SeqCst);
        }
    }
}

/// One client's thread: the upgrade, its place in the list, then its reads and writes.
fn client(stream: TcpStream, server: &Server) {
    let max = Some(MAX_MESSAGE_BYTES);
    let config = WebSocketConfig::default().max_message_size(max).max_frame_size(max);
    let _ = stream.set_read_timeout(Some(IO_TIMEOUT)).and(stream.set_write_timeout(Some(IO_TIMEOUT)));
    if let Ok(mut ws) = tungstenite::accept_with_config(stream, Some(config)) {
        let id = server.next_id.fetch_add(1, SeqCst);
        let (tx, rx) = crossbeam_channel::bounded(QUEUE);
        server.clients.lock().push((id, tx));
        if let Some((code, why)) = serve(&mut ws, &rx, server) {
            let _ = ws.close(Some(CloseFrame { code, reason: why.into() }));
        }
        let _ = ws.flush(); // our Close, or the reply tungstenite queued to the client's
        server.clients.lock().retain(|(other, _)| *other != id);
    }
    server.threads.fetch_sub(1, SeqCst);
}

/// Reads with a short timeout and, between reads, sends what others queued. Returns the
/// Close to send, if the server ends it (`None`: the client closed, or is gone).
fn serve(ws: &mut WebSocket<TcpStream>, rx: &Receiver<Out>, server: &Server) -> Option<(CloseCode, &'static str)> {
    let _ = ws.get_ref().set_read_timeout(Some(POLL));
    let (mut alive, mut tokens, mut refilled) = (true, 2.0 * MESSAGE_RATE, Instant::now());
    while !server.stopping.load(SeqCst) {
        match ws.read() {
            Ok(Message::Text(text)) => {
                // A token bucket: MESSAGE_RATE a second, at most twice that saved up.
                tokens = (tokens + refilled.elapsed().as_secs_f64() * MESSAGE_RATE).min(2.0 * MESSAGE_RATE) - 1.0;
                refilled = Instant::now();
                if tokens < 0.0 {
                    return Some((CloseCode::Policy, "message flood"));
                }
                broadcast(server, text.as_str());
            }
            Ok(Message::Close(_)) => return None,
            Ok(_) => alive = true, // any frame, a pong included, says the client is there
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(tungstenite::Error::Capacity(_)) => return Some((CloseCode::Size, "message too big")),
            Err(_) => return None,
        }
        loop {
            let sent = match rx.try_recv() {
                Ok(Out::Text(text)) => ws.send(Message::text(text)),
                Ok(Out::Ping) if !alive => return None, // no answer since the last ping: gone
                Ok(Out::Ping) => {
                    alive = false;
                    ws.send(Message::Ping(Default::default()))
                }
                Err(TryRecvError::Empty) => break,
                // Dropped from the list: its queue overflowed (see `broadcast`).
                Err(TryRecvError::Disconnected) => return Some((CloseCode::Policy, "slow consumer")),
            };
            if sent.is_err() {
                return None;
            }
        }
    }
    Some((CloseCode::Away, "server shutting down"))
}

/// Queues `text` for every client; one whose queue is full is dropped from the list, which
/// its thread sees as a closed queue. (The real server queues bytes, not messages, and
/// writes for every client from whichever thread is free: see `src/conn/outbox.rs`.)
fn broadcast(server: &Server, text: &str) {
    server.clients.lock().retain(|(_, tx)| tx.try_send(Out::Text(text.to_string())).is_ok());
}
