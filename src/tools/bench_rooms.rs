//! `threadchat bench --rooms N URL --server-pid PID`: what a room costs the server. One
//! client joins N rooms (a room with a member), then posts one message to each and leaves
//! it (an empty room that has history, which the server keeps listing); the server's RSS is
//! read from /proc before and after each step.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use serde::Serialize;
use tungstenite::{Message, WebSocket};

/// Requests in flight at once: more unread replies would trip the server's outbox cap.
const WINDOW: usize = 200;

#[derive(Debug, Serialize)]
pub struct RoomsReport {
    pub rooms: usize,
    /// KiB of server RSS per room while this client is in it.
    pub kib_per_room_with_member: f64,
    /// KiB per room once it is empty but has a message stored (it stays listed).
    pub kib_per_empty_room: f64,
    /// `GET /api/rooms` with all of them listed, milliseconds (if an HTTP address was given).
    pub list_ms: Option<f64>,
}

pub fn run(url: &str, rooms: usize, pid: u32, http: Option<&str>) -> Result<RoomsReport, String> {
    let rss = || crate::tools::bench::procfs::read_rss_kib(pid).ok_or("cannot read the server's RSS (--server-pid)");
    let (mut ws, _) = tungstenite::connect(url).map_err(|e| format!("connect {url}: {e}"))?;
    if let tungstenite::stream::MaybeTlsStream::Plain(s) = ws.get_ref() {
        s.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    }
    settle(&mut ws)?;
    let base = rss()?;
    let names: Vec<String> = (0..rooms).map(|i| format!("bench-{i}")).collect();
    for window in names.chunks(WINDOW) {
        for room in window {
            send(&mut ws, serde_json::json!({"type": "join", "room": room}))?;
        }
        expect(&mut ws, window.len(), "presence")?;
    }
    let joined = rss()?;
    for window in names.chunks(WINDOW / 2) {
        for room in window {
            send(&mut ws, serde_json::json!({"type": "message", "room": room, "text": "x"}))?;
            send(&mut ws, serde_json::json!({"type": "leave", "room": room}))?;
        }
        expect(&mut ws, window.len(), "leave")?;
    }
    settle(&mut ws)?;
    let left = rss()?;
    let list_ms = http.map(|addr| {
        let started = Instant::now();
        let _ = http_get(addr, "/api/rooms");
        started.elapsed().as_secs_f64() * 1000.0
    });
    Ok(RoomsReport {
        rooms,
        kib_per_room_with_member: joined.saturating_sub(base) as f64 / rooms as f64,
        kib_per_empty_room: left.saturating_sub(base) as f64 / rooms as f64,
        list_ms,
    })
}

fn send(
    ws: &mut WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    v: serde_json::Value,
) -> Result<(), String> {
    ws.send(Message::text(v.to_string())).map_err(|e| format!("send: {e}"))
}

/// Reads until `n` events of `kind` arrived (errors are fatal: the server refused).
fn expect(
    ws: &mut WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>,
    n: usize,
    kind: &str,
) -> Result<(), String> {
    let mut seen = 0;
    while seen < n {
        let msg = ws.read().map_err(|e| format!("read: {e}"))?;
        let Message::Text(t) = msg else { continue };
        let v: serde_json::Value = serde_json::from_str(t.as_str()).map_err(|e| e.to_string())?;
        match v["type"].as_str() {
            Some(k) if k == kind => seen += 1,
            Some("error") => return Err(format!("the server refused: {} (raise --max-rooms?)", v["error"])),
            _ => {}
        }
    }
    Ok(())
}

/// Lets the server finish what it is doing (a moment without traffic) before RSS is read.
fn settle(ws: &mut WebSocket<tungstenite::stream::MaybeTlsStream<TcpStream>>) -> Result<(), String> {
    send(ws, serde_json::json!({"type": "join", "room": "bench-settle"}))?;
    expect(ws, 1, "presence")?;
    send(ws, serde_json::json!({"type": "leave", "room": "bench-settle"}))?;
    expect(ws, 1, "leave")?;
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// `GET path` over a fresh connection, read to the end (`Connection: close`).
fn http_get(addr: &str, path: &str) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
    let mut body = Vec::new();
    s.read_to_end(&mut body)?;
    Ok(body)
}
