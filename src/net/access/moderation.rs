//! Moderation requests as the way in reads them (the actions are the chat's,
//! `chat/moderation/`): the HTTP admin API (`http/admin.rs`) and moderators' WebSocket
//! requests (`ws/chat.rs`) both parse here.

use crate::chat::moderation::request::{self, BanTarget, Request};

/// A request as the chat reads it, with an address ban widened to what one client is (an
/// IPv6 /64): the same rule every per-address limit uses. The admin API's and the
/// WebSocket's requests both come through here.
pub fn parse(action: &str, fields: &serde_json::Map<String, serde_json::Value>) -> Result<Request, String> {
    let mut req = request::parse(action, fields)?;
    if let Request::Ban { target: BanTarget::Address(ip), .. } = &mut req {
        *ip = crate::net::access::per_ip::address_of(*ip);
    }
    Ok(req)
}
