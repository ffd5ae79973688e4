//! WebSocket clients in which every read has a timeout, from any loopback address.
#![allow(dead_code)]

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::Instant;

#[allow(unused_imports)]
use super::*;
use serde_json::{Value, json};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// A WebSocket client in which every read times out after `WAIT`.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    /// This connection's id.
    pub id: u64,
    /// Who it is: a JWT's `sub`, or a guest id.
    pub user: String,
    pub name: String,
    /// A guest's credential (`?identity=` brings it back as the same user).
    pub identity: Option<String>,
}

impl Client {
    /// Connects to a chat URL and consumes the welcome.
    pub fn connect(url: &str) -> Client {
        Self::connect_from(None, url)
    }

    /// Connects from `local` (e.g. 127.0.0.2: all of 127/8 is loopback on Linux), to play a
    /// client at another address than the test's hostile one.
    pub fn connect_from(local: Option<IpAddr>, url: &str) -> Client {
        let ws = connect_from(local, url, &[]).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Self::welcomed(ws)
    }

    /// Connects with extra request headers (`Authorization`, `Cookie`…).
    pub fn connect_headers(url: &str, headers: &[(&str, &str)]) -> Client {
        let ws = connect_from(None, url, headers).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        Self::welcomed(ws)
    }

    /// As a JWT's user (`Authorization: Bearer`).
    pub fn signed_in(url: &str, token: &str) -> Client {
        Self::connect_headers(url, &[("Authorization", &format!("Bearer {token}"))])
    }

    /// Another connection of this guest (its identity on the URL): a reload, or a tab.
    pub fn again(&self, url: &str) -> Client {
        let identity = self.identity.as_deref().expect("a guest has an identity");
        let sep = if url.contains('?') { '&' } else { '?' };
        Client::connect(&format!("{url}{sep}identity={identity}"))
    }

    /// Reads the welcome and the lobby's presence from a freshly upgraded socket.
    pub fn welcomed(mut ws: WebSocket<TcpStream>) -> Client {
        let welcome = read_json(&mut ws);
        assert_eq!(welcome["type"], "welcome", "first frame must be the welcome: {welcome}");
        let id = welcome["id"].as_u64().expect("welcome.id is a number");
        let name = welcome["name"].as_str().expect("welcome.name is a string").to_string();
        let user = welcome["user"].as_str().expect("welcome.user is a string").to_string();
        let identity = welcome["identity"].as_str().map(str::to_string);
        // Everyone starts in the lobby: its presence list comes right after the welcome.
        let presence = read_json(&mut ws);
        assert_eq!(
            (presence["type"].as_str(), presence["room"].as_str()),
            (Some("presence"), Some("lobby")),
            "{presence}"
        );
        Client { ws, id, user, name, identity }
    }

    pub fn send_json(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).expect("send");
    }

    pub fn say(&mut self, text: &str) {
        self.send_json(json!({"type": "message", "text": text}));
    }

    /// Says `"{i:04} {text}"` for each `i` below `count` (`count` a multiple of 100), in
    /// rounds of 100, each read back before the next, so the echoes of a long history never
    /// pile up past the 1 MiB outbox cap.
    pub fn say_numbered(&mut self, count: usize, text: &str) {
        for round in 0..count / 100 {
            for i in round * 100..(round + 1) * 100 {
                self.ws
                    .write(Message::text(json!({"type": "message", "text": format!("{i:04} {text}")}).to_string()))
                    .expect("send");
            }
            self.ws.flush().expect("flush");
            let last = format!("{:04} ", round * 100 + 99);
            while !self.recv_type("message")["text"].as_str().unwrap_or("").starts_with(&last) {}
        }
    }

    /// Sends `request` and reads until an event of type `yes` (true) or an `error` (false).
    pub fn answered(&mut self, request: Value, yes: &str) -> bool {
        self.send_json(request);
        loop {
            let v = self.recv();
            match v["type"].as_str() {
                Some(t) if t == yes => return true,
                Some("error") => return false,
                _ => {}
            }
        }
    }

    /// Next JSON text frame (control frames are skipped; pongs are answered by tungstenite).
    pub fn recv(&mut self) -> Value {
        read_json(&mut self.ws)
    }

    /// Next event of type `kind`, skipping others.
    pub fn recv_type(&mut self, kind: &str) -> Value {
        let deadline = Instant::now() + WAIT;
        loop {
            assert!(Instant::now() < deadline, "no {kind} event within {WAIT:?}");
            let v = self.recv();
            if v["type"] == kind {
                return v;
            }
        }
    }

    /// Reads until the server's Close frame and returns it.
    pub fn expect_close(&mut self) -> Option<CloseFrame> {
        expect_close(&mut self.ws)
    }
}

/// Connects with extra request headers (`Origin`, `Authorization`, `Cookie`…).
pub fn connect_with(url: &str, headers: &[(&str, &str)]) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    connect_from(None, url, headers)
}

/// A TCP connection to `addr` whose local end is bound to `local` (any 127/8 address).
pub fn tcp_from(local: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(local, 0).into())?;
    socket.connect_timeout(&addr.into(), WAIT)?;
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    Ok(stream)
}

/// A TCP connection from 127.0.0.1 with the tests' read and write timeouts, so that a
/// server that stops reading or answering fails the test instead of hanging it.
pub fn tcp(addr: SocketAddr) -> TcpStream {
    tcp_from(IpAddr::from([127, 0, 0, 1]), addr).expect("connect")
}

/// The second address tests use for an innocent client.
pub fn other_ip() -> IpAddr {
    IpAddr::from([127, 0, 0, 2])
}

/// [`connect_with`] from a chosen local address (`None`: the default, 127.0.0.1).
pub fn connect_from(
    local: Option<IpAddr>,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    use tungstenite::client::IntoClientRequest;
    let mut req = url.into_client_request()?;
    for (k, v) in headers {
        req.headers_mut().insert(
            tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            tungstenite::http::HeaderValue::from_str(v).unwrap(),
        );
    }
    let addr: SocketAddr = url.trim_start_matches("ws://").split('/').next().and_then(|a| a.parse().ok()).unwrap();
    let stream = match local {
        Some(local) => tcp_from(local, addr)?,
        None => TcpStream::connect_timeout(&addr, WAIT)?,
    };
    stream.set_read_timeout(Some(WAIT))?;
    stream.set_write_timeout(Some(WAIT))?;
    match tungstenite::client::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::HandshakeError::Failure(e)) => Err(e),
        Err(tungstenite::HandshakeError::Interrupted(_)) => {
            Err(tungstenite::Error::Io(std::io::ErrorKind::TimedOut.into()))
        }
    }
}

/// The HTTP status of a refused upgrade (panics if it was accepted).
pub fn refused_status(result: Result<WebSocket<TcpStream>, tungstenite::Error>) -> u16 {
    match result {
        Err(tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("expected an HTTP refusal, got error {e}"),
        Ok(_) => panic!("expected an HTTP refusal, but the upgrade succeeded"),
    }
}

pub fn connect_raw(url: &str) -> Result<WebSocket<TcpStream>, tungstenite::Error> {
    connect_with(url, &[])
}

pub fn read_json(ws: &mut WebSocket<TcpStream>) -> Value {
    loop {
        match ws.read() {
            Ok(Message::Text(t)) => {
                return serde_json::from_str(t.as_str()).unwrap_or_else(|e| panic!("server sent non-JSON {t}: {e}"));
            }
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
            Ok(other) => panic!("expected a JSON text frame, got {other:?}"),
            Err(e) => panic!("read failed (timeout is {WAIT:?}): {e}"),
        }
    }
}

pub fn expect_close(ws: &mut WebSocket<TcpStream>) -> Option<CloseFrame> {
    let deadline = Instant::now() + WAIT;
    loop {
        assert!(Instant::now() < deadline, "no Close frame within {WAIT:?}");
        match ws.read() {
            Ok(Message::Close(frame)) => return frame,
            Ok(_) => continue,
            Err(e) => panic!("expected a Close frame, got error {e}"),
        }
    }
}
