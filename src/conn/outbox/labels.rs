//! What a connection is, as the chat sees it: its endpoint (`Kind`), its user id, display
//! name and address, and why it ended. Set once at the upgrade (the name changes with
//! renames), read by anyone; part of `Conn` (see `outbox.rs`), kept apart from the outbox's
//! single-writer machinery.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::metrics::Disconnect;

use super::{Conn, Kind};

impl Conn {
    pub fn kind(&self) -> Kind {
        match self.kind.load(Ordering::Acquire) {
            1 => Kind::Chat,
            2 => Kind::Echo,
            3 => Kind::Plain,
            _ => Kind::Handshaking,
        }
    }

    pub fn set_kind(&self, kind: Kind) {
        self.kind.store(kind as u8, Ordering::Release);
    }

    /// Records why the connection ends, unless a reason was recorded already.
    pub fn set_close_reason(&self, why: Disconnect) {
        let _ = self.close_reason.compare_exchange(0, why as u8, Ordering::AcqRel, Ordering::Acquire);
    }

    pub fn close_reason(&self) -> Option<Disconnect> {
        Disconnect::from_u8(self.close_reason.load(Ordering::Acquire))
    }

    pub fn name(&self) -> Arc<str> {
        self.name.lock().clone()
    }

    /// The user id ("" until the upgrade decided it, and for `/echo`).
    pub fn user(&self) -> Arc<str> {
        self.user.get().cloned().unwrap_or_else(|| Arc::from(""))
    }

    /// Sets the user id, once (later calls are ignored).
    pub fn set_user(&self, user: Arc<str>) {
        let _ = self.user.set(user);
    }

    /// The client's address (see the field); `None` before the upgrade.
    pub fn address(&self) -> Option<std::net::IpAddr> {
        self.address.get().copied()
    }

    pub fn set_address(&self, address: std::net::IpAddr) {
        let _ = self.address.set(address);
    }

    pub fn set_name(&self, name: &str) -> Arc<str> {
        std::mem::replace(&mut *self.name.lock(), Arc::from(name))
    }
}
