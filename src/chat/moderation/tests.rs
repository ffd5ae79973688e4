use super::request::{BanTarget, Request, Who, parse};
use super::*;

fn obj(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
    v.as_object().cloned().unwrap()
}

fn sanction(kind: &str, target_kind: &str, target: &str, room: &str, by_admin: bool, until: u64) -> Sanction {
    Sanction {
        id: crate::store::moderation::new_id(),
        kind: kind.into(),
        target_kind: target_kind.into(),
        target: target.into(),
        room: room.into(),
        reason: "spam".into(),
        by: "m".into(),
        by_admin,
        created: 0,
        until,
    }
}

fn empty() -> Moderation {
    Moderation {
        in_force: RwLock::new(vec![]),
        any: AtomicBool::new(false),
        admins: Mutex::new(HashSet::new()),
        counts: Default::default(),
    }
}

#[test]
fn requests_are_read_strictly() {
    let kick = parse("kick", &obj(serde_json::json!({"name": "bob", "reason": "spam"}))).unwrap();
    assert_eq!(kick, Request::Kick { who: Who::Name("bob".into()), reason: "spam".into() });
    let ban = parse("ban", &obj(serde_json::json!({"address": "10.0.0.1", "reason": "x"}))).unwrap();
    assert_eq!(
        ban,
        Request::Ban { target: BanTarget::Address([10, 0, 0, 1].into()), seconds: None, reason: "x".into() }
    );
    for (action, bad, says) in [
        ("kick", serde_json::json!({"user": "a", "name": "b", "reason": "x"}), "not both"),
        ("kick", serde_json::json!({"user": "a"}), "\"reason\""),
        ("kick", serde_json::json!({"user": "a", "reason": "   "}), "must not be empty"),
        ("kick", serde_json::json!({"user": "a", "reason": "a\u{1b}[2J"}), "control"),
        ("kick", serde_json::json!({"user": "", "reason": "x"}), "1-128"),
        ("ban", serde_json::json!({"address": "1.2.3", "reason": "x"}), "not an IP"),
        ("ban", serde_json::json!({"address": "1.2.3.4", "user": "a", "reason": "x"}), "one of"),
        ("ban", serde_json::json!({"user": "a", "seconds": -5, "reason": "x"}), "\"seconds\""),
        ("ban", serde_json::json!({"user": "a", "seconds": 1e12, "reason": "x"}), "\"seconds\""),
        ("mute", serde_json::json!({"user": "a", "reason": "x"}), "\"seconds\""),
        ("mute", serde_json::json!({"user": "a", "seconds": 0, "reason": "x"}), "\"seconds\""),
        ("mute", serde_json::json!({"user": "a", "seconds": 9, "room": "Bad Room", "reason": "x"}), "room"),
        ("delete", serde_json::json!({"room": "lobby", "seq": 0}), "\"seq\""),
        ("delete", serde_json::json!({"room": "lobby", "seq": "3"}), "\"seq\""),
        ("delete", serde_json::json!({"seq": 3}), "missing \"room\""),
        ("announce", serde_json::json!({"text": ""}), "empty"),
        ("unban", serde_json::json!({"id": "x"}), "\"id\""),
        ("explode", serde_json::json!({}), "unknown"),
    ] {
        let error = parse(action, &obj(bad.clone())).unwrap_err();
        assert!(error.contains(says), "{action} {bad}: {error}");
    }
    let huge = "r".repeat(request::MAX_REASON_CHARS + 1);
    assert!(parse("kick", &obj(serde_json::json!({"user": "a", "reason": huge}))).is_err());
}

#[test]
fn bans_and_mutes_hold_for_whom_they_name_until_they_end() {
    let m = empty();
    assert_eq!(m.ban_of(Some("u"), Some([10, 0, 0, 1].into()), false), None);
    let now = crate::clock::now_ms();
    m.add(sanction("ban", "user", "u", "", true, 0));
    m.add(sanction("ban", "address", "10.0.0.9", "", true, now + 60_000));
    m.add(sanction("mute", "user", "v", "lobby", false, now + 60_000));
    m.add(sanction("mute", "user", "w", "", true, now - 1)); // already over
    assert!(m.ban_of(Some("u"), None, false).unwrap().starts_with("banned: spam"));
    assert!(m.ban_of(Some("u"), None, true).is_some(), "an admin's ban holds against an admin");
    assert!(m.ban_of(None, Some([10, 0, 0, 9].into()), false).unwrap().starts_with("banned until 20"));
    assert_eq!(m.ban_of(Some("v"), Some([10, 0, 0, 8].into()), false), None);
    assert!(m.mute_of("v", "lobby").unwrap().starts_with("you are muted until"));
    assert_eq!(m.mute_of("v", "other"), None, "a room's mute is that room's");
    assert_eq!(m.mute_of("w", "lobby"), None, "an expired mute is over");
    assert_eq!(m.list("mute").len(), 1, "and gone from the list");
    m.saw_admin("v");
    assert_eq!(m.mute_of("v", "lobby"), None, "a moderator's mute does not hold against an admin");
    let id = m.list("ban")[0].id;
    assert!(m.remove(id).is_some());
    assert_eq!(m.ban_of(Some("u"), None, false), None);
}

#[test]
fn moderators_moderate_their_rooms_only() {
    let moderator = Actor::User { user: "m".into(), role: Role::Mod(vec!["team-*".into(), "lobby".into()]) };
    assert!(moderator.moderates("team-a") && moderator.moderates("lobby"));
    assert!(!moderator.moderates("lobby2") && !moderator.moderates("other"));
    assert!(!moderator.is_admin() && moderator.is_moderator());
    let member = Actor::User { user: "x".into(), role: Role::Member };
    assert!(!member.moderates("lobby") && !member.is_moderator());
    assert!(Actor::Token.moderates("anything") && Actor::Token.is_admin());
    assert_eq!(Actor::Token.label(), ADMIN_TOKEN_ACTOR);
}

#[test]
fn one_moderator_cannot_fill_the_list_every_message_is_checked_against() {
    let m = empty();
    let until = crate::clock::now_ms() + 60_000;
    for i in 0..MAX_PER_MODERATOR {
        assert_eq!(m.room_for("m", false), Ok(()));
        m.add(sanction("mute", "user", &format!("u{i}"), "lobby", false, until));
    }
    assert!(m.room_for("m", false).unwrap_err().contains("one moderator"));
    assert_eq!(m.room_for("other-mod", false), Ok(()), "another moderator still may");
    assert_eq!(m.room_for("m", true), Ok(()), "an admin is bounded by the total only");
    for i in MAX_PER_MODERATOR..MAX_IN_FORCE {
        m.add(sanction("ban", "user", &format!("u{i}"), "", true, 0));
    }
    assert!(m.room_for("admin token", true).unwrap_err().contains("the most this server keeps"));
}
