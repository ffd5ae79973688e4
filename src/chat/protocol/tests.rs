//! Unit tests of `protocol.rs`.
use super::*;

#[test]
fn parses_every_request() {
    assert_eq!(
        parse_client(r#"{"type":"message","text":"hi"}"#),
        Ok(ClientMsg::Message { room: "lobby".into(), text: "hi".into(), r#ref: None })
    );
    assert_eq!(
        parse_client(r#"{"type":"message","text":"hi","room":"dev-1","ref":7}"#),
        Ok(ClientMsg::Message { room: "dev-1".into(), text: "hi".into(), r#ref: Some(7) })
    );
    assert_eq!(parse_client(r#"{"type":"name","name":"ada"}"#), Ok(ClientMsg::Name { name: "ada".into() }));
    assert_eq!(parse_client(r#"{"type":"join","room":"x_y"}"#), Ok(ClientMsg::Join { room: "x_y".into() }));
    assert_eq!(parse_client(r#"{"type":"leave","room":"x"}"#), Ok(ClientMsg::Leave { room: "x".into() }));
    assert_eq!(
        parse_client(r#"{"type":"resume","room":"x","after":41}"#),
        Ok(ClientMsg::Resume { room: "x".into(), after: 41 })
    );
    for (bad, why) in [
        (r#"{"type":"join","room":"Caps"}"#, "only a-z"),
        (r#"{"type":"join","room":""}"#, "1-64"),
        (r#"{"type":"join"}"#, "missing \"room\""),
        (r#"{"type":"message","text":"x","ref":-1}"#, "\"ref\""),
        (r#"{"type":"resume","room":"x"}"#, "missing \"after\""),
    ] {
        assert!(parse_client(bad).unwrap_err().contains(why), "{bad}");
    }
    assert!(validate_room(&"a".repeat(64)).is_ok());
    assert!(validate_room(&"a".repeat(65)).is_err());
}

#[test]
fn explains_every_rejection() {
    let cases = [
        ("{", "invalid JSON"),
        ("[1,2]", "message must be a JSON object"),
        (r#"{"text":"x"}"#, "missing \"type\""),
        (r#"{"type":5}"#, "\"type\" must be a string"),
        (r#"{"type":"dance"}"#, "unknown type \"dance\""),
        (r#"{"type":"message"}"#, "missing \"text\""),
        (r#"{"type":"message","text":7}"#, "\"text\" must be a string"),
        (r#"{"type":"message","text":"  "}"#, "\"text\" must not be empty"),
        (
            r#"{"type":"message","text":"a\u0000b"}"#,
            "\"text\" must not contain control characters other than tab and newline",
        ),
        (r#"{"type":"name","name":""}"#, "\"name\" must not be empty"),
        (r#"{"type":"name","name":"a\nb"}"#, "\"name\" must not contain control characters"),
        (r#"{"type":"name","name":"a\u202eb"}"#, "\"name\" must not contain invisible or format characters (U+202E)"),
    ];
    for (input, want) in cases {
        assert_eq!(parse_client(input), Err(want.to_string()), "input {input}");
    }
    let long = format!(r#"{{"type":"message","text":"{}"}}"#, "x".repeat(MAX_TEXT_CHARS + 1));
    assert!(parse_client(&long).unwrap_err().contains("longer than"));
    let long_name = format!(r#"{{"type":"name","name":"{}"}}"#, "é".repeat(MAX_NAME_CHARS + 1));
    assert!(parse_client(&long_name).unwrap_err().contains("longer than"));
    assert!(parse_client(&format!(r#"{{"type":"name","name":"{}"}}"#, "é".repeat(32))).is_ok());
}

#[test]
fn deeply_nested_json_is_an_error_not_a_crash() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    assert_eq!(parse_client(&deep), Err("invalid JSON".into()));
}

#[test]
fn names_that_hide_or_disguise_are_refused_and_names_are_nfc() {
    for bad in [
        "ad\u{200B}min",
        "\u{FEFF}admin",
        "ad\u{061C}min",
        "admin\u{202E}",
        "ad\u{2060}min",
        "\u{3164}",
        "ad\u{00A0}min",
        "ad\u{3000}min",
        "a\u{034F}dmin",
        "a\u{FE0F}",
        "a\u{E0041}",
        " admin",
        "admin ",
    ] {
        let e = normalize_name(bad).unwrap_err();
        assert!(e.contains("invisible") || e.contains("space") || e.contains("empty"), "{bad:?}: {e}");
    }
    // Two spellings of one name are one name.
    assert_eq!(normalize_name("Jos\u{0065}\u{0301}").unwrap(), "Jos\u{00E9}");
    assert_eq!(normalize_name("José").unwrap(), "Jos\u{00E9}");
    assert_eq!(normalize_name("Zoë Quinn").unwrap(), "Zoë Quinn");
    assert_eq!(normalize_name("李小龍").unwrap(), "李小龍");
    // Names that look the same compare the same.
    assert_eq!(name_key("BOB"), name_key("bob"));
    assert_eq!(name_key("ｂｏｂ"), "bob");
    assert_ne!(name_key("bob"), name_key("bobby"));
}

#[test]
fn direct_messages_name_their_peer_by_name_or_user_id() {
    assert_eq!(
        parse_client(r#"{"type":"dm","to":"Ada","text":"hi"}"#),
        Ok(ClientMsg::Dm { to: Peer::Name("Ada".into()), text: "hi".into(), r#ref: None })
    );
    assert_eq!(
        parse_client(r#"{"type":"dm","to_user":"u-1","text":"hi","ref":3}"#),
        Ok(ClientMsg::Dm { to: Peer::User("u-1".into()), text: "hi".into(), r#ref: Some(3) })
    );
    assert_eq!(
        parse_client(r#"{"type":"resume","with_user":"u:1","after":2}"#),
        Ok(ClientMsg::ResumeDm { with: Peer::User("u:1".into()), after: 2 })
    );
    assert!(parse_client(r#"{"type":"dm","to":"a","to_user":"b","text":"x"}"#).unwrap_err().contains("not both"));
    assert!(parse_client(r#"{"type":"dm","to_user":"","text":"x"}"#).unwrap_err().contains("1-128"));
    assert!(parse_client(r#"{"type":"dm","text":"x"}"#).unwrap_err().contains("missing \"to\""));
    // Keys: sorted, length-prefixed, so ids holding ':' cannot be confused.
    assert_eq!(dm_key("b", "a:1"), "dm:u:3:a:1:b");
    assert_eq!(dm_parties(&dm_key("x:y", "z")), Some(("x:y", "z")));
    assert_ne!(dm_key("a:b", "c"), dm_key("a", "b:c"));
    // A conversation keyed by names before user ids: a conversation, but nobody's.
    assert!(is_conversation("dm:3:bob:alice") && dm_parties("dm:3:bob:alice").is_none());
}
