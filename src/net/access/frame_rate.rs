//! What one WebSocket client's incoming frames may cost, on every endpoint: each data frame
//! spends the client's bucket (`--message-rate`) and its address's (`--message-rate-per-ip`),
//! each ping a bucket of its own. Over them a chat frame is refused with an error reply,
//! and `burst` refusals in a row close the client with 1008; `/echo` has no error replies,
//! so an echo it will not send ends it; a ping over its bucket ends it too, before the
//! next read, where tungstenite would send the pong.
//!
//! Why pings and echoes count: each costs the server a write (a `sendmsg`), and one client
//! pipelining empty pings (or echoing as fast as it could) kept a core busy.
//!
//! The client's buckets live on its own thread (no lock); the address's is in the per-IP
//! table, taken only for what the client's own allowed, so one flooding client cannot
//! spend its neighbours' share with frames that would be refused anyway.

use std::net::IpAddr;
use std::time::Instant;

use crate::config::Config;
use crate::net::access::per_ip::{Bucket, IpTable};

/// What to do with a frame.
pub enum Verdict {
    Pass,
    /// Drop it and tell the client why (chat endpoints).
    Refuse(String),
    /// Close the client with 1008, for this reason.
    Close(String),
}

pub struct FrameBudget {
    messages: Bucket,
    pings: Bucket,
    refused_in_a_row: f64,
    rate: f64,
    burst: f64,
    ip_rate: f64,
    ip: IpAddr,
}

impl FrameBudget {
    pub fn new(config: &Config, ip: IpAddr) -> FrameBudget {
        let (rate, burst) = (config.message_rate, config.message_rate * 2.0);
        FrameBudget {
            messages: Bucket::new(burst),
            pings: Bucket::new(burst),
            refused_in_a_row: 0.0,
            rate,
            burst,
            ip_rate: config.message_rate_per_ip,
            ip,
        }
    }

    /// A token of the client's own message bucket (rooms resumed from the upgrade URL
    /// spend it as `resume` requests would).
    pub fn take_message(&mut self) -> bool {
        self.messages.take(self.rate, self.burst, Instant::now())
    }

    /// A ping: `Err` is the reason to close with.
    pub fn ping(&mut self) -> Result<(), String> {
        match self.pings.take(self.rate, self.burst, Instant::now()) {
            true => Ok(()),
            false => Err(format!("ping flood: over {} pings per second", self.rate)),
        }
    }

    /// A data frame (text or binary), on a chat endpoint or not (`/echo`).
    pub fn frame(&mut self, ips: &IpTable, chat: bool) -> Verdict {
        let refusal = if !self.take_message() {
            format!("rate limit: at most {} messages per second; message dropped", self.rate)
        } else if !ips.allow_message(self.ip, self.ip_rate, self.ip_rate * 2.0) {
            format!("rate limit: at most {} messages per second from one address; message dropped", self.ip_rate)
        } else {
            self.refused_in_a_row = 0.0;
            return Verdict::Pass;
        };
        if !chat {
            return Verdict::Close(format!("echo flood: {refusal}"));
        }
        self.refused_in_a_row += 1.0;
        if self.refused_in_a_row >= self.burst {
            return Verdict::Close("message flood: over the rate limit for too long".into());
        }
        Verdict::Refuse(refusal)
    }
}
