//! WebSocket frames as the server sends them: built once, unmasked (RFC 6455 §5.1: a server
//! must not mask), as one shared buffer that any number of outboxes can queue.

use bytes::Bytes;
use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{CloseCode, Control as OpCtl, Data as OpData, OpCode};

/// A server-to-client text frame holding `payload` (already valid UTF-8).
pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(OpData::Text), payload)
}

/// A server-to-client binary frame.
pub fn binary_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(OpData::Binary), payload)
}

/// A Ping with an empty payload, as the heartbeat sends.
pub fn ping_frame() -> Bytes {
    frame(OpCode::Control(OpCtl::Ping), &[])
}

/// A Close frame with `code` and a reason (cut to fit the 123 bytes a control frame allows).
pub fn close_frame(code: CloseCode, reason: &str) -> Bytes {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let reason = &reason[..end];
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&u16::from(code).to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    frame(OpCode::Control(OpCtl::Close), &payload)
}

/// Frames `payload` once into a single buffer: header then payload, never masked (RFC 6455
/// §5.1: a server must not mask). The result can be shared by any number of receivers.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader { is_final: true, opcode, mask: None, ..FrameHeader::default() };
    let len = payload.len() as u64;
    let mut buf = Vec::with_capacity(header.len(len) + payload.len());
    header.format(len, &mut buf).expect("writing to a Vec cannot fail");
    buf.extend_from_slice(payload);
    Bytes::from(buf)
}

/// Whether `buf`, a sequence of whole server frames, contains a Close frame. Used to notice
/// the Close replies tungstenite writes by itself, so no second Close ever follows one.
pub fn contains_close_frame(mut buf: &[u8]) -> bool {
    while buf.len() >= 2 {
        if buf[0] & 0x0F == 0x8 {
            return true;
        }
        let (header_len, payload_len): (usize, usize) = match buf[1] & 0x7F {
            126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
            127 if buf.len() >= 10 => {
                let mut n = [0u8; 8];
                n.copy_from_slice(&buf[2..10]);
                (10, usize::try_from(u64::from_be_bytes(n)).unwrap_or(usize::MAX))
            }
            126 | 127 => return false,
            n => (2, n as usize),
        };
        let mask_len = if buf[1] & 0x80 != 0 { 4 } else { 0 };
        let total = header_len.saturating_add(mask_len).saturating_add(payload_len);
        if total > buf.len() {
            return false;
        }
        buf = &buf[total..];
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_correct_headers() {
        let small = text_frame(b"hello");
        assert_eq!(&small[..2], &[0x81, 5]);
        assert_eq!(&small[2..], b"hello");
        let medium = binary_frame(&[7u8; 300]);
        assert_eq!(&medium[..4], &[0x82, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let big = text_frame(&vec![b'a'; 70_000]);
        assert_eq!(big[1], 127);
        assert_eq!(u64::from_be_bytes(big[2..10].try_into().unwrap()), 70_000);
        let close = close_frame(CloseCode::Size, "too big");
        assert_eq!(&close[..4], &[0x88, 9, 0x03, 0xF1]);
    }

    #[test]
    fn finds_close_frames_among_others() {
        let mut buf = ping_frame().to_vec();
        buf.extend_from_slice(&text_frame(&[b'x'; 200]));
        assert!(!contains_close_frame(&buf));
        buf.extend_from_slice(&close_frame(CloseCode::Normal, ""));
        assert!(contains_close_frame(&buf));
        assert!(!contains_close_frame(&[0x81]));
    }

    #[test]
    fn close_reason_is_cut_on_a_char_boundary() {
        let frame = close_frame(CloseCode::Away, &"é".repeat(100));
        assert!(frame.len() <= 2 + 125);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }
}
