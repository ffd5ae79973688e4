//! A private `redis-server` per test, on a Unix socket of its own.
#![allow(dead_code)]

#[allow(unused_imports)]
use super::*;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A private `redis-server` listening on a Unix socket in a temp dir, with its data there
/// too (append-only file fsynced on every write, as production should run it). Killed on
/// drop. A socket path, not a TCP port: a restart gets the same address back for sure,
/// where a released port could meanwhile be taken by another test's `bind(0)`.
pub struct RedisServer {
    child: Option<Child>,
    dir: TempDir,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut redis = RedisServer { child: None, dir: TempDir::new() };
        redis.restart();
        redis
    }

    fn socket(&self) -> std::path::PathBuf {
        self.dir.0.join("redis.sock")
    }

    pub fn url(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Starts it (again, on the same socket and data) and waits until it answers.
    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", "0", "--save", ""])
            .arg("--unixsocket")
            .arg(self.socket())
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
        wait_until("redis-server answers PING", || {
            let Ok(mut s) = UnixStream::connect(self.socket()) else { return false };
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
