//! A connection's way in, up to its request head: the accept loop of both ports, admission
//! (which connections may have a thread), the connection thread that reads the head and
//! becomes a WebSocket session or an HTTP exchange, and the stream it reads (TLS included).

pub mod accept;
pub mod admission;
pub mod connection;
pub mod head;
pub mod stream;
pub mod tls;
