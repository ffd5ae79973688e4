//! threadchat's idea in one file: a chat server with no async runtime. Run it with
//! `cargo run --example minimal`, open http://127.0.0.1:3000 in two windows, and chat.
//!
//! tiny_http serves the page; a separate accept loop upgrades sockets with tungstenite and
//! gives each client its own thread; the clients live in a `parking_lot::Mutex` list; a
//! heartbeat thread pings them and drops the dead; Ctrl-C shuts it all down. What the real
//! server adds, and why, is in the README's architecture section.

use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use tungstenite::{Message, WebSocket};

/// What a client's thread is asked to send: a chat line, or a heartbeat ping.
enum Out {
    Text(String),
    Ping,
}

/// The shared client list: an id and the sending end of each client's queue. Broadcasting
/// only queues (never writes a socket while holding the lock), like gorilla's hub.
type Clients = Arc<Mutex<Vec<(u64, Sender<Out>)>>>;

const PAGE: &str = r#"<!doctype html><title>minimal chat</title><ul id=log></ul>
<form id=f><input id=t autocomplete=off><button>Send</button></form><script>
const ws = new WebSocket(`ws://${location.hostname}:WS_PORT/`);
ws.onmessage = (e) => { const li = document.createElement("li"); li.textContent = e.data; log.append(li); };
f.onsubmit = (e) => { e.preventDefault(); ws.send(t.value); t.value = ""; };
</script>"#;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let http_addr = args.next().unwrap_or_else(|| "127.0.0.1:3000".into());
    let ws_addr = args.next().unwrap_or_else(|| "127.0.0.1:3001".into());
    let ws_listener = TcpListener::bind(&ws_addr)?;
    let ws_port = ws_listener.local_addr()?.port();
    let http = tiny_http::Server::http(&http_addr).map_err(std::io::Error::other)?;
    println!("http listening on http://{}", http.server_addr().to_ip().ok_or(std::io::ErrorKind::Other)?);
    println!("ws listening on ws://{}", ws_listener.local_addr()?);
    let page = PAGE.replace("WS_PORT", &ws_port.to_string());
    std::thread::spawn(move || {
        for request in http.incoming_requests() {
            let header = tiny_http::Header::from_bytes("Content-Type", "text/html").expect("static header");
            let _ = request.respond(tiny_http::Response::from_string(page.clone()).with_header(header));
        }
    });

    let clients: Clients = Arc::default();
    let stopping = Arc::new(AtomicBool::new(false));
    // Heartbeat: every 10 s each client is asked to ping; one that did not answer the last
    // ping closes itself.
    let heartbeat = Arc::clone(&clients);
    std::thread::spawn(move || {
        loop {
            std::thread::sleep(Duration::from_secs(10));
            heartbeat.lock().retain(|(_, tx)| tx.try_send(Out::Ping).is_ok());
        }
    });
    // Ctrl-C: set the flag, then connect to ourselves to wake the blocking accept().
    let (flag, wake) = (Arc::clone(&stopping), ws_listener.local_addr()?);
    ctrlc::set_handler(move || {
        flag.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(wake);
    })
    .map_err(std::io::Error::other)?;

    let next_id = AtomicU64::new(1);
    let mut threads = vec![];
    for stream in ws_listener.incoming() {
        if stopping.load(Ordering::SeqCst) {
            break;
        }
        let Ok(stream) = stream else { continue };
        let (id, clients, stopping) =
            (next_id.fetch_add(1, Ordering::Relaxed), Arc::clone(&clients), Arc::clone(&stopping));
        threads.push(std::thread::spawn(move || {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(5))); // for the upgrade
            let Ok(ws) = tungstenite::accept(stream) else { return };
            // A slow client's queue fills up; then it is dropped, never waited on.
            let (tx, rx) = crossbeam_channel::bounded(64);
            clients.lock().push((id, tx));
            serve(ws, &rx, &clients, &stopping);
            clients.lock().retain(|(other, _)| *other != id);
        }));
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

/// One client's thread: reads with a short timeout, and between reads sends what others
/// queued for it. (The real server never makes a client wait for its own writes: see
/// `src/conn.rs`.)
fn serve(mut ws: WebSocket<TcpStream>, rx: &Receiver<Out>, clients: &Clients, stopping: &AtomicBool) {
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_millis(50)));
    let mut alive = true;
    loop {
        if stopping.load(Ordering::SeqCst) {
            let _ = ws.close(None);
            let _ = ws.flush();
            return;
        }
        match ws.read() {
            Ok(Message::Text(text)) => {
                let text = text.to_string();
                clients
                    .lock()
                    .retain(|(_, tx)| !matches!(tx.try_send(Out::Text(text.clone())), Err(TrySendError::Full(_))));
            }
            Ok(Message::Pong(_)) => alive = true,
            Ok(Message::Close(_)) => return,
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
        while let Ok(out) = rx.try_recv() {
            let sent = match out {
                Out::Text(text) => ws.send(Message::text(text)),
                Out::Ping if !alive => return, // no pong since the last ping: gone
                Out::Ping => {
                    alive = false;
                    ws.send(Message::Ping(Default::default()))
                }
            };
            if sent.is_err() {
                return;
            }
        }
    }
}
