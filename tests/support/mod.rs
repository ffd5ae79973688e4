//! Shared test helpers: servers on free ports (in-process or the real binary), a WebSocket
//! client whose every read has a timeout, and a raw HTTP client that sends paths verbatim.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use threadchat::{Config, ServerHandle};
use tungstenite::protocol::CloseFrame;
use tungstenite::{Message, WebSocket};

/// Default time any single wait in a test may take before the test fails.
pub const WAIT: Duration = Duration::from_secs(5);

/// A directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("threadchat-test-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// An in-process server on free ports with its own history database; dropping it shuts
/// it down (and removes the database unless it was given one).
pub struct TestServer {
    pub handle: Option<ServerHandle>,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    _data: Option<TempDir>,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::with(|_| {})
    }

    pub fn with(adjust: impl FnOnce(&mut Config)) -> TestServer {
        let data = TempDir::new();
        let dir = data.0.clone();
        let mut server = Self::in_dir(&dir, |c| {
            // THREADCHAT_TEST_DATABASE (set by scripts/test.sh for the Postgres pass) runs
            // every test against Postgres instead of SQLite.
            c.database = test_database();
            adjust(c)
        });
        server._data = Some(data);
        server
    }

    /// A server on an existing data directory (to test restarts).
    pub fn in_dir(dir: &std::path::Path, adjust: impl FnOnce(&mut Config)) -> TestServer {
        // Server logs show up for failing tests (RUST_LOG=info for more).
        let _ = env_logger::builder().is_test(true).try_init();
        // Tests flood on purpose and connect from one address: lift the rate limits and the
        // per-IP cap (the tests of those limits set them back).
        let mut config = Config {
            data_dir: dir.to_path_buf(),
            message_rate: 1e6,
            upgrade_rate: 1e6,
            max_clients_per_ip: 10_000,
            ..Config::default()
        };
        adjust(&mut config);
        config.validate().expect("test config is valid");
        let handle = ServerHandle::start(config).expect("server starts");
        TestServer { http: handle.http_addr(), ws: handle.ws_addr(), handle: Some(handle), _data: None }
    }

    pub fn chat_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    pub fn echo_url(&self) -> String {
        format!("ws://{}/echo", self.ws)
    }

    pub fn chat(&self) -> Client {
        Client::connect(&self.chat_url())
    }

    pub fn hub_len(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.shared().chat.hub.len())
    }

    pub fn live_clients(&self) -> usize {
        self.handle.as_ref().map_or(0, |h| h.shared().live_clients())
    }

    /// Shuts down and returns how long it took.
    pub fn shutdown(&mut self) -> Duration {
        let start = Instant::now();
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
        start.elapsed()
    }
}

/// The Postgres server tests should use instead of SQLite, from `THREADCHAT_TEST_DATABASE`
/// (set by `scripts/test.sh` for its Postgres pass). Each test server gets a fresh database.
pub fn test_database() -> Option<String> {
    let base = std::env::var("THREADCHAT_TEST_DATABASE").ok()?;
    Some(fresh_pg_database(&base))
}

/// Creates a new, empty database on the server of `base` and returns its URL.
pub fn fresh_pg_database(base: &str) -> String {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = format!("t{}_{n}", std::process::id());
    let mut client = postgres::Client::connect(base, postgres::NoTls)
        .unwrap_or_else(|e| panic!("THREADCHAT_TEST_DATABASE={base} is set but Postgres is unreachable: {e}"));
    client.batch_execute(&format!("CREATE DATABASE {name}")).expect("create test database");
    let (prefix, _) = base.rsplit_once('/').expect("database URL ends with /dbname");
    format!("{prefix}/{name}")
}

/// A WebSocket client in which every read times out after `WAIT`.
pub struct Client {
    pub ws: WebSocket<TcpStream>,
    pub id: u64,
    pub name: String,
}

impl Client {
    /// Connects to a chat URL and consumes the welcome.
    pub fn connect(url: &str) -> Client {
        Self::connect_from(None, url)
    }

    /// Connects from `local` (e.g. 127.0.0.2: all of 127/8 is loopback on Linux), to play a
    /// client at another address than the test's hostile one.
    pub fn connect_from(local: Option<IpAddr>, url: &str) -> Client {
        let mut ws = connect_from(local, url, &[]).unwrap_or_else(|e| panic!("connect {url}: {e}"));
        let welcome = read_json(&mut ws);
        assert_eq!(welcome["type"], "welcome", "first frame must be the welcome: {welcome}");
        let id = welcome["id"].as_u64().expect("welcome.id is a number");
        let name = welcome["name"].as_str().expect("welcome.name is a string").to_string();
        // Everyone starts in the lobby: its presence list comes right after the welcome.
        let presence = read_json(&mut ws);
        assert_eq!(
            (presence["type"].as_str(), presence["room"].as_str()),
            (Some("presence"), Some("lobby")),
            "{presence}"
        );
        Client { ws, id, name }
    }

    pub fn send_json(&mut self, value: Value) {
        self.ws.send(Message::text(value.to_string())).expect("send");
    }

    pub fn say(&mut self, text: &str) {
        self.send_json(json!({"type": "message", "text": text}));
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

/// A raw HTTP/1.1 response.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl HttpResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends `GET path` exactly as given (no client-side normalization of `..`), with `extra`
/// header lines, and reads the whole response (the server closes: `Connection: close`).
pub fn http_request(addr: SocketAddr, method: &str, path: &str, extra: &[&str]) -> HttpResponse {
    http_request_from(None, addr, method, path, extra, "")
}

/// [`http_request`] from a chosen local address, with a body.
pub fn http_request_from(
    local: Option<IpAddr>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    extra: &[&str],
    body: &str,
) -> HttpResponse {
    let mut stream = match local {
        Some(local) => tcp_from(local, addr).expect("connect"),
        None => TcpStream::connect_timeout(&addr, WAIT).expect("connect"),
    };
    stream.set_read_timeout(Some(WAIT)).unwrap();
    stream.set_write_timeout(Some(WAIT)).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    if !extra.iter().any(|h| h.to_ascii_lowercase().starts_with("host:")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for h in extra {
        req.push_str(h);
        req.push_str("\r\n");
    }
    if !body.is_empty() {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).expect("write request");
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).expect("read response (timeout is WAIT)");
    parse_response(&raw)
}

pub fn http_get(addr: SocketAddr, path: &str) -> HttpResponse {
    http_request(addr, "GET", path, &[])
}

pub fn parse_response(raw: &[u8]) -> HttpResponse {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response has a header end");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line.split(' ').nth(1).and_then(|s| s.parse().ok()).expect("status code");
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(k, v)| (k.trim().to_string(), v.trim().to_string())).collect();
    let mut body = raw[split + 4..].to_vec();
    let chunked = headers.iter().any(|(k, v): &(String, String)| {
        k.eq_ignore_ascii_case("Transfer-Encoding") && v.eq_ignore_ascii_case("chunked")
    });
    if chunked {
        body = dechunk(&body);
    }
    HttpResponse { status, headers, body }
}

/// Decodes a chunked transfer-encoded body (tiny_http uses it above 32 KiB).
fn dechunk(mut raw: &[u8]) -> Vec<u8> {
    let mut out = vec![];
    loop {
        let line_end = raw.windows(2).position(|w| w == b"\r\n").expect("chunk size line");
        let size_text = std::str::from_utf8(&raw[..line_end]).unwrap();
        let size = usize::from_str_radix(size_text.split(';').next().unwrap().trim(), 16).expect("hex chunk size");
        raw = &raw[line_end + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&raw[..size]);
        raw = &raw[size + 2..];
    }
}

/// Polls `cond` every 10 ms until it holds or `WAIT` passes.
pub fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The real `threadchat` binary on free ports; killed on drop if still running.
pub struct BinaryServer {
    pub child: Child,
    pub http: SocketAddr,
    pub ws: SocketAddr,
    /// Its own history directory, unless the test passed `--data-dir`.
    _data: Option<TempDir>,
}

impl BinaryServer {
    /// The binary with the rate limits and per-IP cap lifted (tests flood from one address).
    pub fn start(extra_args: &[&str]) -> BinaryServer {
        Self::start_limited(extra_args, None)
    }

    /// With `max_fds`, the server runs with that `RLIMIT_NOFILE` (to test fd exhaustion).
    pub fn start_limited(extra_args: &[&str], max_fds: Option<u64>) -> BinaryServer {
        let lifted = ["--message-rate", "1000000", "--upgrade-rate", "1000000", "--max-clients-per-ip", "10000"];
        Self::spawn([&lifted[..], extra_args].concat().as_slice(), max_fds)
    }

    /// The binary exactly as `cargo run` starts it (every default limit), but on free ports
    /// and a temporary data directory, plus `extra_args`.
    pub fn start_defaults(extra_args: &[&str]) -> BinaryServer {
        Self::spawn(extra_args, None)
    }

    fn spawn(extra_args: &[&str], max_fds: Option<u64>) -> BinaryServer {
        let mut command = Command::new(env!("CARGO_BIN_EXE_threadchat"));
        if let Some(max) = max_fds {
            use std::os::unix::process::CommandExt;
            // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
            unsafe {
                command.pre_exec(move || {
                    let limit = libc::rlimit { rlim_cur: max, rlim_max: max };
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Never the default ./data: binary servers of parallel tests would share one history.
        let data = (!extra_args.contains(&"--data-dir")).then(TempDir::new);
        if let Some(dir) = &data {
            command.arg("--data-dir").arg(&dir.0);
        }
        let mut child = command
            .args(["--http-addr", "127.0.0.1:0", "--ws-addr", "127.0.0.1:0"])
            .args(extra_args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn threadchat");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = || rx.recv_timeout(WAIT).expect("the server prints its addresses");
        let http = line().strip_prefix("http listening on http://").expect("http line").parse().unwrap();
        let ws = line().strip_prefix("ws listening on ws://").expect("ws line").parse().unwrap();
        BinaryServer { child, http, ws, _data: data }
    }

    pub fn chat_url(&self) -> String {
        format!("ws://{}/ws", self.ws)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn signal(&self, sig: libc::c_int) {
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits for the process to exit; panics after `within`.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "server did not exit within {within:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for BinaryServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the binary as a CLI client with a timeout; returns (exit code, stdout, stderr).
pub fn run_cli(args: &[&str], within: Duration) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_threadchat"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn threadchat");
    let deadline = Instant::now() + within;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("`threadchat {}` did not finish within {within:?}", args.join(" "));
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    let mut err = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    (status.code().unwrap_or(-1), out, err)
}

/// A private `redis-server` on a free port, with its data in a temp dir (append-only file
/// fsynced on every write, as production should run it). Killed on drop.
pub struct RedisServer {
    child: Option<Child>,
    pub port: u16,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let mut redis = RedisServer { child: None, port, dir: TempDir::new() };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again, on the same port and data) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(&self.dir.0)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot run redis-server ({e}): scripts/test.sh installs it (apt install redis-server)")
            });
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        wait_until("redis-server answers PING", || {
            let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else { return false };
            let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
            let mut buf = [0u8; 7];
            s.write_all(b"PING\r\n").is_ok() && s.read_exact(&mut buf).is_ok() && &buf == b"+PONG\r\n"
        });
    }

    /// `kill -9`: no shutdown, no final save.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// An HS256 JWT with these claims, signed with `secret`.
pub fn jwt(secret: &str, claims: Value) -> String {
    use jsonwebtoken::{EncodingKey, Header, encode};
    encode(&Header::default(), &claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}
