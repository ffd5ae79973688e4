//! TLS (`--tls-cert`/`--tls-key`): https:// and wss:// on both listeners, tested with a
//! certificate made here (rcgen) that the test client trusts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

use crate::support::*;

type TlsStream = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A server with a fresh self-signed certificate for `localhost` and 127.0.0.1, and a client
/// configuration that trusts exactly that certificate.
struct TlsServer {
    server: TestServer,
    client: Arc<rustls::ClientConfig>,
    dir: TempDir,
}

impl TlsServer {
    fn start() -> TlsServer {
        Self::start_with(|_| {})
    }

    fn start_with(adjust: impl FnOnce(&mut threadchat::config::Config)) -> TlsServer {
        let dir = TempDir::new();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
        let (cert_path, key_path) = (dir.0.join("cert.pem"), dir.0.join("key.pem"));
        std::fs::write(&cert_path, cert.cert.pem()).unwrap();
        std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
        let server = TestServer::with(|c| {
            c.tls = Some((cert_path, key_path));
            adjust(c)
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from(cert.cert.der().to_vec())).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        TlsServer { server, client: Arc::new(client), dir }
    }

    fn connect(&self, addr: SocketAddr) -> TlsStream {
        self.connect_tcp(tcp(addr))
    }

    fn connect_tcp(&self, tcp: TcpStream) -> TlsStream {
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        tcp.set_write_timeout(Some(WAIT)).unwrap();
        let name = ServerName::try_from("localhost").unwrap();
        rustls::StreamOwned::new(rustls::ClientConnection::new(Arc::clone(&self.client), name).unwrap(), tcp)
    }

    fn https_get(&self, path: &str) -> HttpResponse {
        let mut s = self.connect(self.server.http);
        write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").unwrap();
        let mut raw = Vec::new();
        // Ends at the server's close_notify; a truncation would be an error here.
        s.read_to_end(&mut raw).expect("complete response");
        parse_response(&raw)
    }

    fn wss(&self, path: &str) -> WebSocket<TlsStream> {
        self.wss_over(path, tcp(self.server.ws))
    }

    fn wss_over(&self, path: &str, tcp: TcpStream) -> WebSocket<TlsStream> {
        let url = format!("wss://localhost:{}{path}", self.server.ws.port());
        let (ws, _) = tungstenite::client::client(url, self.connect_tcp(tcp)).expect("wss upgrade");
        ws
    }
}

fn next_json(ws: &mut WebSocket<TlsStream>) -> Value {
    loop {
        match ws.read().expect("read (timeout WAIT)") {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Ping(_) | Message::Pong(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn next_of(ws: &mut WebSocket<TlsStream>, kind: &str) -> Value {
    loop {
        let v = next_json(ws);
        if v["type"] == kind {
            return v;
        }
    }
}

#[test]
fn https_and_wss_work_with_a_trusted_certificate() {
    let tls = TlsServer::start();
    let health = tls.https_get("/healthz");
    assert_eq!((health.status, health.text().as_str()), (200, "ok\n"));
    let config: Value = serde_json::from_slice(&tls.https_get("/api/config").body).unwrap();
    assert!(config["ws_url"].as_str().unwrap().starts_with("wss://"), "{config}");

    let mut alice = tls.wss("/ws");
    let mut bob = tls.wss("/ws");
    assert_eq!(next_json(&mut alice)["type"], "welcome");
    assert_eq!(next_json(&mut bob)["type"], "welcome");
    // Long messages span several TLS records; a burst fills the per-client encryption.
    let long = "é".repeat(4000);
    for i in 0..300 {
        let text = if i % 50 == 0 { long.clone() } else { format!("over tls {i}") };
        alice.send(Message::text(json!({"type": "message", "text": text}).to_string())).unwrap();
    }
    for i in 0..300 {
        let got = next_of(&mut bob, "message");
        let want = if i % 50 == 0 { long.clone() } else { format!("over tls {i}") };
        if got["text"] != want.as_str() {
            // Say what came instead (a long text would drown the message).
            let text = got["text"].as_str().unwrap_or("");
            let shown: String = text.chars().take(40).collect();
            panic!("message {i}: got seq {} {shown:?} ({} chars)", got["seq"], text.chars().count());
        }
    }
    // /echo over wss: a 60 KiB binary message comes back intact.
    let mut echo = tls.wss("/echo");
    let blob: Vec<u8> = (0..60 * 1024).map(|i| (i % 251) as u8).collect();
    echo.send(Message::binary(blob.clone())).unwrap();
    match echo.read().unwrap() {
        Message::Binary(b) => assert_eq!(b.as_ref(), blob.as_slice()),
        other => panic!("expected the echo, got {other:?}"),
    }
    // A clean close: our Close, the server's Close, then TLS close_notify and EOF.
    alice.close(None).unwrap();
    loop {
        match alice.read() {
            Ok(_) => continue,
            Err(tungstenite::Error::ConnectionClosed) => break,
            Err(e) => panic!("unclean close: {e}"),
        }
    }
}

#[test]
fn plaintext_and_bad_handshakes_on_tls_ports_fail_cleanly() {
    let tls = TlsServer::start();
    for addr in [tls.server.http, tls.server.ws] {
        // Plain HTTP to a TLS port: the server answers with a TLS alert (or nothing) and
        // closes; it never answers in plain text.
        let mut s = tcp(addr);
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut got = Vec::new();
        let _ = s.read_to_end(&mut got);
        assert!(!got.starts_with(b"HTTP/"), "{addr}: plain answer on a TLS port");
        // A client that does not trust the certificate gives up in the handshake.
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let untrusting = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let tcp = tcp(addr);
        tcp.set_read_timeout(Some(WAIT)).unwrap();
        let conn = rustls::ClientConnection::new(Arc::new(untrusting), ServerName::try_from("localhost").unwrap());
        let mut s = rustls::StreamOwned::new(conn.unwrap(), tcp);
        // The handshake must fail with a certificate error — not hang until the read
        // timeout (which would also be an error).
        let outcome = s.write_all(b"GET / HTTP/1.1\r\n\r\n").and_then(|_| s.flush()).and_then(|_| s.read(&mut [0; 16]));
        let e = outcome.expect_err("an untrusting client gets no answer");
        assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "the handshake hung instead of failing: {e}"
        );
    }
    // The server is unharmed.
    assert_eq!(tls.https_get("/healthz").status, 200);
    let mut c = tls.wss("/ws");
    assert_eq!(next_json(&mut c)["type"], "welcome");
    wait_until("bad connections are gone", || tls.server.live_clients() == 1);
}

#[test]
fn a_tls_client_that_never_reads_is_closed_and_others_keep_receiving() {
    const MESSAGES: usize = 2000;
    let tls = Arc::new(TlsServer::start_with(|c| c.max_queued_bytes = 256 * 1024));
    // The stalled client: a tiny receive buffer, and it never reads. Its kernel buffers
    // fill, then rustls's one chunk, then the 256 KiB outbox: closed with 1008.
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect_timeout(&tls.server.ws.into(), WAIT).unwrap();
    let mut stalled = tls.wss_over("/ws", socket.into());
    assert_eq!(next_json(&mut stalled)["type"], "welcome");

    let mut reader = tls.wss("/ws");
    assert_eq!(next_json(&mut reader)["type"], "welcome");
    // How many the reader has seen: the sender stays within a batch of it, so a reader
    // starved of CPU on a loaded machine is not itself a slow consumer (the cap is 256 KiB).
    let read = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sender = std::thread::spawn({
        let (tls, read) = (Arc::clone(&tls), Arc::clone(&read));
        move || {
            let mut s = tls.wss("/ws");
            let text = "x".repeat(3000);
            // In batches, reading its own broadcasts back so it does not stall itself.
            for batch in 0..MESSAGES / 50 {
                wait_until("the reader keeps up", || read.load(std::sync::atomic::Ordering::Acquire) >= batch * 50);
                for _ in 0..50 {
                    s.send(Message::text(json!({"type": "message", "text": text}).to_string())).unwrap();
                }
                let mut got = 0;
                while got < 50 {
                    if next_json(&mut s)["type"] == "message" {
                        got += 1;
                    }
                }
            }
        }
    });
    let mut seqs = vec![];
    while seqs.len() < MESSAGES {
        let v = next_json(&mut reader);
        if v["type"] == "message" {
            seqs.push(v["seq"].as_u64().unwrap());
            read.store(seqs.len(), std::sync::atomic::Ordering::Release);
        }
    }
    sender.join().unwrap();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "the reader got every message, in order");
    // Reading the stalled socket now: its backlog, then the 1008.
    let mut received = 0;
    let code = loop {
        match stalled.read().expect("the backlog and a Close within the timeout") {
            Message::Text(_) => received += 1,
            Message::Close(frame) => break frame.map(|f| f.code),
            _ => {}
        }
    };
    assert_eq!(code, Some(tungstenite::protocol::frame::coding::CloseCode::Policy));
    assert!(received < MESSAGES, "cut off (got {received})");
}

#[test]
fn with_tls_the_allowed_origins_are_https() {
    let tls = TlsServer::start();
    let port = tls.server.http.port();
    match upgrade_with_origin(&tls, &format!("http://localhost:{port}")) {
        Err(tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp))) => assert_eq!(resp.status(), 403),
        Err(e) => panic!("expected 403, got {e}"),
        Ok(_) => panic!("a plain-http origin was allowed on a TLS server"),
    }
    let (mut ws, _) =
        upgrade_with_origin(&tls, &format!("https://localhost:{port}")).expect("the page's own https origin");
    assert_eq!(next_json(&mut ws)["type"], "welcome");
}

/// A wss upgrade with an `Origin` header. (The error type is tungstenite's.)
#[allow(clippy::result_large_err)]
fn upgrade_with_origin(
    tls: &TlsServer,
    origin: &str,
) -> Result<
    (WebSocket<TlsStream>, tungstenite::handshake::client::Response),
    tungstenite::HandshakeError<tungstenite::ClientHandshake<TlsStream>>,
> {
    use tungstenite::client::IntoClientRequest;
    let url = format!("wss://localhost:{}/ws", tls.server.ws.port());
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("Origin", origin.parse().unwrap());
    let tcp = tcp(tls.server.ws);
    tungstenite::client::client(req, tls.connect_tcp(tcp))
}

#[test]
fn the_cli_speaks_wss_with_a_ca_file_and_refuses_an_untrusted_certificate() {
    let tls = TlsServer::start();
    let cert = tls.dir.0.join("cert.pem");
    let cert = cert.to_str().unwrap();
    let wait = std::time::Duration::from_secs(15);
    for addr in [tls.server.ws, tls.server.http] {
        let url = format!("wss://localhost:{}/ws", addr.port());
        let (code, out, err) = run_cli(&["send", &url, "over TLS", "--ca-file", cert, "--room", "ops"], wait);
        assert_eq!(code, 0, "stderr: {err}");
        let line: Value = serde_json::from_str(out.trim()).expect("one JSON line");
        assert_eq!((line["text"].as_str(), line["room"].as_str()), (Some("over TLS"), Some("ops")));
        // tail over TLS too, replaying what send stored.
        let args = ["tail", &url, "--room", "ops", "--since", "0", "--type", "message", "--count", "1"];
        let (code, out, err) = run_cli(&[&args[..], &["--timeout-secs", "10", "--ca-file", cert]].concat(), wait);
        assert_eq!(code, 0, "stderr: {err}");
        assert!(out.contains("over TLS"), "{out}");
    }
    // Without --ca-file the system's authorities do not know this certificate: exit 1
    // with the reason, and nothing sent.
    let url = format!("wss://localhost:{}/ws", tls.server.ws.port());
    let (code, out, err) = run_cli(&["send", &url, "should not arrive"], wait);
    assert_eq!(code, 1, "stdout: {out}");
    assert!(err.contains("certificate"), "the reason names the certificate: {err}");
    // A ws:// client on a TLS port fails, and so does a missing CA file (exit 1, not a hang).
    let (code, _, err) = run_cli(&["send", &url, "x", "--ca-file", "/nonexistent.pem"], wait);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent.pem"), "{err}");
}
