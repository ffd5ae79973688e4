//! Unit tests of `names.rs`.
use super::*;
use crate::store::sqlite::SqliteStore;
use parking_lot::Mutex;

fn store() -> (tempfile_dir::Dir, SqliteStore) {
    let dir = tempfile_dir::Dir::new();
    let store = SqliteStore::open(&dir.0, false).unwrap();
    (dir, store)
}

/// A directory removed on drop (std only).
mod tempfile_dir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
            let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let p = std::env::temp_dir().join(format!("threadchat-names-{}-{n}", std::process::id()));
            let _ = std::fs::remove_dir_all(&p);
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn a(s: &str) -> Arc<str> {
    Arc::from(s)
}

#[test]
fn one_user_per_name_whatever_its_case() {
    let (_d, store) = store();
    let names = Names::default();
    names.hold(&a("g~1"), &a("Bob"), &store).unwrap();
    assert_eq!(names.hold(&a("g~2"), &a("BOB"), &store), Err(NAME_TAKEN.into()));
    assert_eq!(names.hold(&a("g~2"), &a("ｂｏｂ"), &store), Err(NAME_TAKEN.into()));
    // The same user in a second tab may.
    names.hold(&a("g~1"), &a("bob"), &store).unwrap();
    names.release("g~1", "Bob");
    assert!(names.hold(&a("g~2"), &a("bob"), &store).is_err(), "one tab still holds it");
    names.release("g~1", "bob");
    names.hold(&a("g~2"), &a("bob"), &store).unwrap();
    assert_eq!(names.user_of("BOB", &store).as_deref(), Some("g~2"));
}

#[test]
fn a_jwt_name_is_reserved_for_good_and_a_second_claim_gets_a_suffix() {
    let (d, store) = store();
    let names = Names::default();
    names.hold(&a("g~1"), &a("sam"), &store).unwrap();
    let (name, taken) = names.reserve(&a("u-1"), "Sam", &store).unwrap();
    assert_eq!((&*name, taken), ("Sam", true), "a guest holds it: the caller renames it");
    names.release("g~1", "sam");
    assert!(names.hold(&a("g~2"), &a("sam"), &store).is_err());
    let (other, _) = names.reserve(&a("u-2"), "sam", &store).unwrap();
    assert_eq!(&*other, "sam-2");
    assert_eq!(&*names.reserve(&a("u-2"), "sam", &store).unwrap().0, "sam-2", "the same every time");
    assert_eq!(&*names.reserve(&a("u-1"), "sam", &store).unwrap().0, "sam");
    // After a restart (a fresh registry on the same store): still reserved.
    drop(names);
    let store = SqliteStore::open(&d.0, false).unwrap();
    let names = Names::default();
    names.load(&store);
    assert!(names.hold(&a("g~3"), &a("SAM"), &store).is_err());
    assert!(names.hold(&a("g~3"), &a("sam-2"), &store).is_err());
    assert_eq!(names.user_of("sam", &store).as_deref(), Some("u-1"));
    assert_eq!(names.name_of("u-2").as_deref(), Some("sam-2"));
    // Without the cache (past MAX_CACHED), the store still answers.
    let uncached = Names::default();
    assert!(uncached.hold(&a("g~3"), &a("Sam"), &store).is_err());
}

#[test]
fn guests_get_the_first_free_name_and_suffixes_fit() {
    let (_d, store) = store();
    let names = Names::default();
    names.reserve(&a("u-1"), "guest-abc", &store).unwrap();
    assert_eq!(&*names.hold_first_free(&a("g~abc1"), "guest-abc", &store), "guest-abc-2");
    assert_eq!(candidate(&"x".repeat(40), 12).chars().count(), MAX_NAME_CHARS);
    assert_eq!(candidate("abc d", 2), "abc d-2");
    assert_eq!(short("guest~0123456789"), "012345");
}

/// Past `max_cached` reservations the store is the record: load says the cache is not
/// complete, and a claim of a reservation not in memory is still refused.
#[test]
fn past_the_cache_the_store_answers() {
    let (d, store) = store();
    let writer = Names { max_cached: 3, ..Names::default() };
    for i in 0..5 {
        writer.reserve(&a(&format!("u-{i}")), &format!("name{i}"), &store).unwrap();
    }
    assert_eq!(writer.state.lock().reserved.len(), 3, "the cache stops at its cap");
    drop(store);
    let store = SqliteStore::open(&d.0, false).unwrap();
    let names = Names { max_cached: 3, ..Names::default() };
    names.load(&store);
    assert!(!names.state.lock().complete);
    assert_eq!(names.state.lock().reserved.len(), 3);
    for i in 0..5 {
        assert!(names.hold(&a("g~x"), &a(&format!("NAME{i}")), &store).is_err(), "name{i}");
    }
    let full = Names { max_cached: 5, ..Names::default() };
    full.load(&store);
    assert!(full.state.lock().complete, "5 reservations fit a cache of 5");
}

/// Two registries on one store (two processes on one history, or a reservation made
/// after this one loaded): the store's answer wins, and the later claimant gets a suffix.
#[test]
fn the_store_decides_between_two_registries() {
    let (_d, store) = store();
    let first = Names::default();
    let second = Names::default();
    second.load(&store); // empty and complete: it will not ask the store before reserving
    assert_eq!(&*first.reserve(&a("u-1"), "sam", &store).unwrap().0, "sam");
    assert_eq!(&*second.reserve(&a("u-2"), "sam", &store).unwrap().0, "sam-2");
}

/// (name key, user) pairs, as a renewal is given them.
type Pairs = Vec<(String, String)>;

/// A ledger that grants everything and records what each renewal was given.
#[derive(Default)]
struct Recorder {
    renewals: Mutex<Vec<(Pairs, Pairs)>>,
}

impl Ledger for Recorder {
    fn claim(&self, _: &str, _: &str, _: bool) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn reserve(&self, _: &str, user: &str) -> Result<String, String> {
        Ok(user.to_string())
    }
    fn owner(&self, _: &str) -> Result<Option<String>, String> {
        Ok(None)
    }
    fn renew(&self, held: &[(String, String)], released: &[(String, String)]) -> Result<Vec<(String, String)>, String> {
        self.renewals.lock().push((held.to_vec(), released.to_vec()));
        Ok(vec![])
    }
}

/// In a cluster a name let go is handed back at the next renewal, unless its user holds it
/// again by then (a reconnect): handing it back would free a name still in use.
#[test]
fn a_released_name_is_handed_back_unless_held_again() {
    let (_d, store) = store();
    let names = Names::default();
    let ledger = Arc::new(Recorder::default());
    names.set_ledger(ledger.clone());
    names.hold(&a("g~1"), &a("ann"), &store).unwrap();
    names.hold(&a("g~2"), &a("bob"), &store).unwrap();
    names.release("g~1", "ann");
    names.release("g~2", "bob");
    names.hold(&a("g~2"), &a("bob"), &store).unwrap(); // bob reconnected meanwhile
    names.renew();
    let (held, released) = ledger.renewals.lock()[0].clone();
    assert_eq!(held, [("bob".to_string(), "g~2".to_string())]);
    assert_eq!(released, [("ann".to_string(), "g~1".to_string())], "bob's is still his");
    names.renew();
    assert!(ledger.renewals.lock()[1].1.is_empty(), "handed back once");
}
