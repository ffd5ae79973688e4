//! `threadchat send` and `threadchat tail`: a blocking WebSocket client for shell scripts.
//! Every read has a deadline, so a script never hangs on a silent server.

use std::io::{self, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::{Message, WebSocket};

use crate::config::{ConnectArgs, SendArgs, TailArgs};

/// Why a client command failed; `exit_code` is what the process returns.
#[derive(Debug)]
pub enum CliError {
    /// Bad URL, connection refused, DNS failure.
    Connect(String),
    /// The server answered the upgrade with an HTTP error status.
    Refused(u16, String),
    /// Nothing (or not enough) arrived in time.
    Timeout(Duration),
    /// The server closed the connection before we were done.
    Closed(String),
    /// The server replied `{"type":"error"}` to our request.
    Rejected(String),
    /// stdout is gone (the reader of our pipe exited).
    Output(io::Error),
}

impl CliError {
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Timeout(_) => 3,
            _ => 1,
        }
    }
}

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CliError::Connect(e) => write!(f, "cannot connect: {e}"),
            CliError::Refused(status, body) => {
                write!(f, "server refused the connection: HTTP {status}: {}", body.trim())
            }
            CliError::Timeout(d) => write!(f, "timed out after {}s", d.as_secs_f64()),
            CliError::Closed(why) => write!(f, "connection closed: {why}"),
            CliError::Rejected(e) => write!(f, "server rejected the request: {e}"),
            CliError::Output(e) => write!(f, "cannot write output: {e}"),
        }
    }
}

impl std::error::Error for CliError {}

type Ws = WebSocket<Stream>;

/// The connection under the WebSocket: plain TCP for `ws://`, rustls for `wss://` (the
/// same TLS stack as the server's).
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Stream {
    fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => &s.sock,
        }
    }

    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        self.tcp().set_read_timeout(t)
    }
}

impl io::Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// Where a `wss://` client's trusted certificates come from: `--ca-file`, else the
/// system's bundle (`SSL_CERT_FILE`, or Debian's /etc/ssl/certs/ca-certificates.crt).
fn trusted_roots(ca_file: Option<&Path>) -> Result<rustls::RootCertStore, CliError> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let env_file = std::env::var_os("SSL_CERT_FILE").map(std::path::PathBuf::from);
    let path = match (ca_file, &env_file) {
        (Some(p), _) => p,
        (None, Some(p)) => p.as_path(),
        (None, None) => Path::new("/etc/ssl/certs/ca-certificates.crt"),
    };
    let mut roots = rustls::RootCertStore::empty();
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| CliError::Connect(format!("cannot read certificates from {}: {e}", path.display())))?;
    for cert in certs {
        let cert = cert.map_err(|e| CliError::Connect(format!("{}: {e}", path.display())))?;
        // A bundle may hold a certificate rustls cannot use; the others still count.
        let _ = roots.add(cert);
    }
    if roots.is_empty() {
        return Err(CliError::Connect(format!("no usable certificate in {}", path.display())));
    }
    Ok(roots)
}

fn tls_stream(tcp: TcpStream, host: &str, ca_file: Option<&Path>) -> Result<Stream, CliError> {
    let roots = trusted_roots(ca_file)?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Connect(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| CliError::Connect(format!("{host}: {e}")))?;
    let conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name)
        .map_err(|e| CliError::Connect(format!("TLS: {e}")))?;
    Ok(Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))))
}

/// `threadchat send URL TEXT`: prints the broadcast of our own message (matched by our
/// client id) as one JSON line.
///
/// Against an `/echo` URL it sends TEXT verbatim (no JSON, no welcome) and prints what
/// comes back.
pub fn send(args: &SendArgs) -> Result<(), CliError> {
    let timeout = Duration::from_secs(args.timeout_secs);
    let deadline = Instant::now() + timeout;
    let mut ws = connect(&args.url, &args.connect, deadline, timeout)?;
    if is_echo_url(&args.url) {
        ws.send(Message::text(args.text.as_str())).map_err(|e| CliError::Closed(e.to_string()))?;
        let (raw, _) = next_event(&mut ws, deadline, timeout)?;
        print_line(&raw)?;
        close(&mut ws);
        return Ok(());
    }
    let my_id = wait_welcome(&mut ws, &args.connect, deadline, timeout)?;
    rename(&mut ws, my_id, &args.connect, deadline, timeout)?;
    join(&mut ws, &args.room, deadline, timeout)?;
    write(&mut ws, serde_json::json!({"type": "message", "text": args.text, "room": args.room}))?;
    loop {
        let (raw, event) = next_event(&mut ws, deadline, timeout)?;
        match event.get("type").and_then(Value::as_str) {
            Some("message")
                if event.get("id").and_then(Value::as_u64) == Some(my_id)
                    && event.get("room").and_then(Value::as_str) == Some(args.room.as_str()) =>
            {
                print_line(&raw)?;
                close(&mut ws);
                return Ok(());
            }
            Some("error") => {
                let error = event.get("error").and_then(Value::as_str).unwrap_or("unknown error");
                return Err(CliError::Rejected(error.to_string()));
            }
            _ => {}
        }
    }
}

/// `threadchat tail URL`: prints events (not the welcome) until `--count` is reached, the
/// timeout passes, or the server closes.
pub fn tail(args: &TailArgs) -> Result<(), CliError> {
    let timeout = args.timeout_secs.map(Duration::from_secs);
    let deadline = timeout.map(|t| Instant::now() + t);
    // The upgrade itself always gets a deadline, even when tailing forever.
    let connect_timeout = timeout.unwrap_or(Duration::from_secs(10));
    let connect_deadline = Instant::now() + connect_timeout;
    // --since: the server replays the room from there before going live, in one step.
    let url = match args.since {
        Some(seq) => {
            format!("{}{}resume={}:{seq}", args.url, if args.url.contains('?') { '&' } else { '?' }, args.room)
        }
        None => args.url.clone(),
    };
    let mut ws = connect(&url, &args.connect, connect_deadline, connect_timeout)?;
    let my_id = wait_welcome(&mut ws, &args.connect, connect_deadline, connect_timeout)?;
    rename(&mut ws, my_id, &args.connect, connect_deadline, connect_timeout)?;
    if args.since.is_none() {
        join(&mut ws, &args.room, connect_deadline, connect_timeout)?;
    }
    // On stderr, so scripts can wait for it without mixing it into the events.
    eprintln!("connected as client {my_id}");
    let mut printed = 0;
    if args.count == Some(0) {
        close(&mut ws);
        return Ok(());
    }
    loop {
        let next = match (deadline, timeout) {
            (Some(d), Some(t)) => next_event(&mut ws, d, t),
            _ => next_event_forever(&mut ws),
        };
        let (raw, event) = match next {
            Ok(ev) => ev,
            // Without --count, the server closing is the normal end of a tail.
            Err(CliError::Closed(_)) if args.count.is_none() => return Ok(()),
            Err(e) => return Err(e),
        };
        let kind = event.get("type").and_then(Value::as_str).unwrap_or("");
        if args.kind.as_deref().is_some_and(|want| want != kind) {
            continue;
        }
        // Events of another room (`lobby`, which every client starts in) are not ours.
        if event.get("room").and_then(Value::as_str).is_some_and(|room| room != args.room) {
            continue;
        }
        print_line(&raw)?;
        printed += 1;
        if Some(printed) == args.count {
            close(&mut ws);
            return Ok(());
        }
    }
}

/// Takes the `--name` asked for, if any: waits for this connection's `name` event; an
/// error reply (a name someone else holds, or not a valid name) fails the command.
fn rename(ws: &mut Ws, my_id: u64, how: &ConnectArgs, deadline: Instant, timeout: Duration) -> Result<(), CliError> {
    let Some(name) = &how.name else { return Ok(()) };
    write(ws, serde_json::json!({"type": "name", "name": name}))?;
    await_reply(ws, deadline, timeout, |e| e["type"] == "name" && e["id"].as_u64() == Some(my_id))
}

/// Enters `room` (every client starts in `lobby`): sends `join` and waits for the room's
/// `presence`; an error reply (a bad name, the room budget) fails the command.
fn join(ws: &mut Ws, room: &str, deadline: Instant, timeout: Duration) -> Result<(), CliError> {
    if room == "lobby" {
        return Ok(());
    }
    write(ws, serde_json::json!({"type": "join", "room": room}))?;
    await_reply(ws, deadline, timeout, |e| e["type"] == "presence" && e["room"] == room)
}

/// Reads events until one that `done` accepts (`Ok`) or an `error` reply (`Rejected`).
fn await_reply(
    ws: &mut Ws,
    deadline: Instant,
    timeout: Duration,
    done: impl Fn(&Value) -> bool,
) -> Result<(), CliError> {
    loop {
        let (_, event) = next_event(ws, deadline, timeout)?;
        if done(&event) {
            return Ok(());
        }
        if event["type"] == "error" {
            let error = event.get("error").and_then(Value::as_str).unwrap_or("unknown error");
            return Err(CliError::Rejected(error.to_string()));
        }
    }
}

fn is_echo_url(url: &str) -> bool {
    url.split(['?', '#']).next().is_some_and(|u| u.ends_with("/echo"))
}

fn connect(url: &str, how: &ConnectArgs, deadline: Instant, timeout: Duration) -> Result<Ws, CliError> {
    let ca_file = how.ca_file.as_deref();
    let mut request = url.into_client_request().map_err(|e| CliError::Connect(format!("{url}: {e}")))?;
    // Headers, not `?token=` or `?identity=`: secrets in URLs end up in logs.
    if let Some(token) = &how.token {
        let value = format!("Bearer {token}")
            .parse()
            .map_err(|_| CliError::Connect("--token contains characters not allowed in a header".into()))?;
        request.headers_mut().insert("Authorization", value);
    }
    if let Some(identity) = how.identity_file.as_deref().and_then(|p| std::fs::read_to_string(p).ok()) {
        let value = format!("threadchat_identity={}", identity.trim())
            .parse()
            .map_err(|_| CliError::Connect("the --identity-file does not hold an identity".into()))?;
        request.headers_mut().insert("Cookie", value);
    }
    let uri = request.uri();
    let tls = match uri.scheme_str() {
        Some("ws") => false,
        Some("wss") => true,
        _ => return Err(CliError::Connect(format!("{url}: the URL must start with ws:// or wss://"))),
    };
    let host = uri.host().ok_or_else(|| CliError::Connect(format!("{url}: no host")))?;
    let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // The TLS handshake happens inside the upgrade's first write and read, under the same
    // deadline; an untrusted certificate fails it with rustls's reason.
    let stream = open_stream(&host, port, tls.then_some(ca_file), deadline, timeout)?;
    match tungstenite::client::client(request, stream) {
        Ok((ws, _response)) => Ok(ws),
        Err(HandshakeError::Failure(tungstenite::Error::Http(resp))) => {
            let body = resp.body().as_deref().map(String::from_utf8_lossy).unwrap_or_default().into_owned();
            Err(CliError::Refused(resp.status().as_u16(), body))
        }
        Err(HandshakeError::Failure(tungstenite::Error::Io(e))) if is_timeout(&e) => Err(CliError::Timeout(timeout)),
        Err(HandshakeError::Interrupted(_)) => Err(CliError::Timeout(timeout)),
        Err(HandshakeError::Failure(e)) => Err(CliError::Connect(e.to_string())),
    }
}

/// A TCP connection to `host:port` within the deadline, with TLS if `tls` is given (and
/// these trusted roots: `Some(None)` for the system's). Shared with `threadchat admin`.
pub(crate) fn open_stream(
    host: &str,
    port: u16,
    tls: Option<Option<&Path>>,
    deadline: Instant,
    timeout: Duration,
) -> Result<Stream, CliError> {
    let addrs = (host, port).to_socket_addrs().map_err(|e| CliError::Connect(format!("{host}: {e}")))?;
    let mut last_error = io::Error::other("no address");
    let mut stream = None;
    for addr in addrs {
        let left = remaining(deadline, timeout)?;
        match TcpStream::connect_timeout(&addr, left) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = e,
        }
    }
    let stream = stream.ok_or_else(|| CliError::Connect(format!("{host}:{port}: {last_error}")))?;
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(remaining(deadline, timeout)?)).map_err(|e| CliError::Connect(e.to_string()))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| CliError::Connect(e.to_string()))?;
    match tls {
        Some(ca_file) => tls_stream(stream, host, ca_file),
        None => Ok(Stream::Plain(stream)),
    }
}

/// Reads the welcome; returns this connection's id. A guest's identity is kept in the
/// `--identity-file`, if one was given and did not hold it already.
fn wait_welcome(ws: &mut Ws, how: &ConnectArgs, deadline: Instant, timeout: Duration) -> Result<u64, CliError> {
    let (_, event) = next_event(ws, deadline, timeout)?;
    let id = match (event.get("type").and_then(Value::as_str), event.get("id").and_then(Value::as_u64)) {
        (Some("welcome"), Some(id)) => id,
        _ => return Err(CliError::Connect(format!("expected a welcome, got {event}"))),
    };
    if let (Some(path), Some(identity)) = (&how.identity_file, event.get("identity").and_then(Value::as_str))
        && std::fs::read_to_string(path).ok().as_deref().map(str::trim) != Some(identity)
    {
        keep_identity(path, identity).map_err(|e| CliError::Connect(format!("{}: {e}", path.display())))?;
    }
    Ok(id)
}

/// Writes a guest identity to `path`, readable by its owner only (it is a credential).
fn keep_identity(path: &Path, identity: &str) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    io::Write::write_all(&mut file, format!("{identity}\n").as_bytes())
}

/// The next text frame as (raw text, parsed JSON), with the read deadline re-armed to
/// the time left before each socket read.
fn next_event(ws: &mut Ws, deadline: Instant, timeout: Duration) -> Result<(String, Value), CliError> {
    loop {
        let left = remaining(deadline, timeout)?;
        let _ = ws.get_ref().set_read_timeout(Some(left));
        match read_one(ws)? {
            Some(ev) => return Ok(ev),
            None => continue,
        }
    }
}

fn next_event_forever(ws: &mut Ws) -> Result<(String, Value), CliError> {
    let _ = ws.get_ref().set_read_timeout(None);
    loop {
        if let Some(ev) = read_one(ws)? {
            return Ok(ev);
        }
    }
}

/// One read: `Some` for a JSON text frame, `None` for control frames.
fn read_one(ws: &mut Ws) -> Result<Option<(String, Value)>, CliError> {
    match ws.read() {
        Ok(Message::Text(text)) => {
            let value = serde_json::from_str(text.as_str()).unwrap_or(Value::Null);
            Ok(Some((text.to_string(), value)))
        }
        Ok(Message::Close(frame)) => {
            // tungstenite has queued the Close reply (RFC 6455 §5.5.1); send it now, as we
            // are about to exit, so the server sees a clean close rather than just a FIN.
            let _ = ws.flush();
            Err(CliError::Closed(match frame {
                Some(f) => format!("code {} {}", u16::from(f.code), f.reason),
                None => "no close code".into(),
            }))
        }
        Ok(_) => Ok(None),
        // A timed-out read surfaces as WouldBlock (SO_RCVTIMEO); the caller's deadline check
        // turns it into a Timeout on the next turn.
        Err(tungstenite::Error::Io(e)) if is_timeout(&e) => Ok(None),
        Err(e) => Err(CliError::Closed(e.to_string())),
    }
}

fn write(ws: &mut Ws, value: Value) -> Result<(), CliError> {
    ws.send(Message::text(value.to_string())).map_err(|e| CliError::Closed(e.to_string()))
}

/// Polite close: send Close and wait briefly for the server's reply.
fn close(ws: &mut Ws) {
    let _ = ws.close(None);
    let _ = ws.get_ref().set_read_timeout(Some(Duration::from_secs(2)));
    while ws.read().is_ok() {}
}

fn remaining(deadline: Instant, timeout: Duration) -> Result<Duration, CliError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() { Err(CliError::Timeout(timeout)) } else { Ok(left) }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
}

fn print_line(line: &str) -> Result<(), CliError> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}").and_then(|_| out.flush()).map_err(CliError::Output)
}
