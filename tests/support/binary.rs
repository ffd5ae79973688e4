//! The real `threadchat` binary on free ports, as a server or as a CLI client.
#![allow(dead_code)]

#[allow(unused_imports)]
use super::*;
use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

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
        let lifted = [
            "--message-rate",
            "1000000",
            "--message-rate-per-ip",
            "1000000",
            "--history-read-rate-per-ip",
            "1000000",
            "--upgrade-rate",
            "1000000",
            "--max-clients-per-ip",
            "10000",
        ];
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
        wait_child(&mut self.child, within)
    }
}

/// Waits for a child process to exit, polling; panics after `within`.
pub fn wait_child(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        assert!(Instant::now() < deadline, "the process did not exit within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
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
    // Drain both pipes while the child runs: a child that writes more than a pipe holds
    // (64 KiB) would otherwise block forever on a full pipe, and never exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>));
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
    let (out, err) = (out.join().expect("stdout reader"), err.join().expect("stderr reader"));
    (status.code().unwrap_or(-1), out, err)
}
