//! Query strings (`?token=…&resume=lobby:12`), parsed one way for every entrance.

/// Every `key=value` pair, in order, with the value percent-decoded (left as sent if it
/// does not decode).
pub fn pairs(query: &str) -> impl Iterator<Item = (&str, String)> {
    query
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k, percent_decode(v).unwrap_or_else(|| v.to_string())))
}

/// The first value of `key`.
pub fn get(query: &str, key: &str) -> Option<String> {
    pairs(query).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// Every value of `key` (for parameters that may repeat, like `resume=`).
pub fn all<'a>(query: &'a str, key: &'a str) -> impl Iterator<Item = String> + 'a {
    pairs(query).filter(move |(k, _)| *k == key).map(|(_, v)| v)
}

/// Percent-decodes once. Invalid escapes or a result that is not UTF-8 → None (404).
pub fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let hex = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    let decoded = String::from_utf8(out).ok()?;
    // A second layer of encoding (%252e) decodes to "%2e": refuse rather than guess.
    if decoded.contains('%') {
        return None;
    }
    Some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_decoded_once_and_repeats_kept() {
        let q = "token=s%20x&resume=lobby:3&resume=dev%3A4&bad=%zz&flag";
        assert_eq!(get(q, "token").as_deref(), Some("s x"));
        assert_eq!(all(q, "resume").collect::<Vec<_>>(), ["lobby:3", "dev:4"]);
        assert_eq!(get(q, "bad").as_deref(), Some("%zz"), "left as sent");
        assert_eq!(get(q, "flag"), None);
        assert_eq!(percent_decode("%252e"), None, "double encoding is refused");
    }
}
