//! `threadchat admin URL ACTION …`: the moderation API from a shell (docs/moderation.md).

use clap::{Args, Subcommand};

#[derive(Args, Debug)]
pub struct AdminArgs {
    /// The server's HTTP address (`http://HOST:PORT` or `https://…`).
    pub url: String,
    /// The server's --admin-token, or a moderator's JWT (sent as `Authorization: Bearer`).
    #[arg(long, env = "THREADCHAT_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// Give up after this many seconds (exit 3).
    #[arg(long, default_value_t = 10)]
    pub timeout_secs: u64,
    /// With https://: trust the certificates in this PEM file instead of the system's.
    #[arg(long)]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub action: AdminAction,
}

/// Whom an action is about: a user id, or whoever holds a display name.
#[derive(Args, Debug)]
#[group(required = true, multiple = false)]
pub struct Whom {
    /// A user id (a JWT `sub`, or a guest's `guest~…`).
    #[arg(long)]
    pub user: Option<String>,
    /// A display name (whoever holds it now).
    #[arg(long)]
    pub name: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum AdminAction {
    /// Close every connection of a user (4003); it may reconnect.
    Kick {
        #[command(flatten)]
        whom: Whom,
        #[arg(long)]
        reason: String,
    },
    /// Kick, then refuse a user or an address (an IPv4 address, or an IPv6 /64).
    Ban {
        #[arg(long, conflicts_with_all = ["name", "address"])]
        user: Option<String>,
        #[arg(long, conflicts_with = "address")]
        name: Option<String>,
        #[arg(long)]
        address: Option<String>,
        /// How long; without it, until unbanned.
        #[arg(long)]
        seconds: Option<u64>,
        #[arg(long)]
        reason: String,
    },
    /// Lift a ban (its id, as `bans` lists it).
    Unban { id: String },
    /// Refuse a user's messages, dms and typing (in one room, or everywhere).
    Mute {
        #[command(flatten)]
        whom: Whom,
        #[arg(long)]
        room: Option<String>,
        #[arg(long)]
        seconds: u64,
        #[arg(long)]
        reason: String,
    },
    /// Lift a mute.
    Unmute { id: String },
    /// Replace a message with a tombstone.
    Delete { room: String, seq: u64 },
    /// A `system` message to a room, or to every room.
    Announce {
        #[arg(long)]
        room: Option<String>,
        text: String,
    },
    /// Tombstone every message of a user (erasure).
    PurgeUser { user: String },
    /// The bans in force.
    Bans,
    /// The mutes in force.
    Mutes,
    /// The audit log, newest first.
    Audit {
        #[arg(long)]
        before: Option<String>,
        #[arg(long)]
        limit: Option<u32>,
    },
}
