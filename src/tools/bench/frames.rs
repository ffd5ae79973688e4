//! The bytes on the wire: masked client frames out, server frames in (headers), writes until
//! the socket would block, and the
//! `tcb:SENDER:NANOS` markers that make a frame a delivery.

/// Every bench message in a frame: `tcb:SENDER:NANOS` markers, one per message.
pub(super) fn markers(payload: &[u8]) -> impl Iterator<Item = (u32, u64)> + '_ {
    let mut rest = payload;
    std::iter::from_fn(move || {
        loop {
            let start = find(rest, b"tcb:")? + 4;
            rest = &rest[start..];
            if let Some(m) = parse_marker(rest) {
                return Some(m);
            }
        }
    })
}

fn parse_marker(after_tag: &[u8]) -> Option<(u32, u64)> {
    let mut fields = after_tag.split(|&b| b == b':' || b == b'"' || b == b' ');
    let sender = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    let ns = std::str::from_utf8(fields.next()?).ok()?.parse().ok()?;
    Some((sender, ns))
}

/// Appends one masked client frame.
pub(super) fn push_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8]) {
    out.push(0x80 | opcode);
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= u16::MAX as usize {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    // A constant mask is legal (the RFC wants it unpredictable to protect proxies, which
    // a loopback benchmark does not have) and keeps the generator cheap.
    let mask = [0x5a, 0x17, 0xc3, 0x88];
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
}

/// The first frame in `buf`, once all of it has arrived: (opcode, header length, payload
/// length). Server frames are unmasked.
pub(super) fn whole_frame(buf: &[u8]) -> Option<(u8, usize, usize)> {
    if buf.len() < 2 {
        return None;
    }
    let (hlen, plen) = match buf[1] & 0x7F {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().unwrap_or([0; 8])) as usize),
        126 | 127 => return None,
        n => (2, n as usize),
    };
    (buf.len() >= hlen + plen).then_some((buf[0] & 0x0F, hlen, plen))
}

/// Writes what `wbuf` holds until the socket would block.
pub(super) fn write_some(stream: &mut mio::net::TcpStream, wbuf: &mut Vec<u8>) -> std::io::Result<()> {
    use std::io::{ErrorKind, Write};
    while !wbuf.is_empty() {
        match stream.write(wbuf) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => {
                wbuf.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(super) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_every_marker_in_json_raw_text_and_joined_frames() {
        let all = |p: &[u8]| markers(p).collect::<Vec<_>>();
        assert_eq!(all(br#"{"type":"message","text":"tcb:3:12345: fox"}"#), [(3, 12345)]);
        assert_eq!(all(b"tcb:0:99"), [(0, 99)]);
        assert_eq!(all(b"no marker"), []);
        // gorilla's chat example joins queued messages with newlines; a broken marker in
        // between is skipped, not the end of the frame.
        let joined = b"{\"text\":\"tcb:1:5: a\"}\ntcb:x:1\n{\"text\":\"tcb:2:7: b\"}";
        assert_eq!(all(joined), [(1, 5), (2, 7)]);
    }

    #[test]
    fn masked_frames_round_trip() {
        let mut out = vec![];
        push_frame(&mut out, 0x1, &[b'a'; 300]);
        assert_eq!(out[0], 0x81);
        assert_eq!(out[1], 0x80 | 126);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 300);
        let mask = &out[4..8];
        assert!(out[8..].iter().enumerate().all(|(i, b)| b ^ mask[i % 4] == b'a'));
    }
}
