//! Admission on real loopback sockets: the per-address share, the total, the busy caps,
//! and shutdown.

use super::*;
use crate::conn::Outboxes;
use crate::conn::flusher::Flusher;
use crate::conn::unsent::QueueBudget;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

/// Real loopback connections, as the accept loop would register them.
struct Rig {
    listener: TcpListener,
    outboxes: Outboxes,
    admission: Arc<Admission>,
}

impl Rig {
    fn new(limits: Limits) -> Rig {
        let (flusher, _thread) = Flusher::start().unwrap();
        let (over, _) = crossbeam_channel::unbounded();
        let outboxes = Outboxes {
            max_queued: 1 << 20,
            budget: Arc::new(QueueBudget::new(1 << 30, over)),
            flusher,
            metrics: Default::default(),
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        Rig { listener, outboxes, admission: Arc::new(Admission::new(limits)) }
    }

    /// A connection from `from` (any 127/8 address): the server's end, and the client's.
    fn connect(&self, from: [u8; 4]) -> (Arc<Conn>, TcpStream) {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&std::net::SocketAddr::from((from, 0)).into()).unwrap();
        socket.connect(&self.listener.local_addr().unwrap().into()).unwrap();
        let client: TcpStream = socket.into();
        client.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let (server, peer) = self.listener.accept().unwrap();
        (Arc::new(Conn::new(0, peer, server, None, &self.outboxes)), client)
    }
}

fn limits(max_pending: usize, per_ip: usize, max_busy: usize) -> Limits {
    Limits {
        max_pending,
        max_pending_per_ip: per_ip,
        max_busy,
        max_busy_per_ip: per_ip,
        trusted_proxies: vec![[127, 0, 0, 9].into()],
    }
}

/// Whether the server has shut the client's socket (it reads EOF, not a timeout).
fn is_cut(client: &mut TcpStream) -> bool {
    client.read(&mut [0u8; 1]).is_ok_and(|n| n == 0)
}

const A: [u8; 4] = [127, 0, 0, 1];
const B: [u8; 4] = [127, 0, 0, 2];
const PROXY: [u8; 4] = [127, 0, 0, 9];

#[test]
fn an_address_past_its_share_is_refused_unless_it_has_an_idle_connection_to_give_up() {
    let rig = Rig::new(limits(100, 2, 100));
    let (a1, _c1) = rig.connect(A);
    let (a2, mut c2) = rig.connect(A);
    let s1 = rig.admission.accept(&a1).unwrap();
    let mut s2 = rig.admission.accept(&a2).unwrap();
    let (a3, _c3) = rig.connect(A);
    assert_eq!(rig.admission.accept(&a3).err(), Some(Refused::TooManyFromAddress));
    // Another address is not affected, nor is a trusted proxy.
    let (b, _cb) = rig.connect(B);
    let _sb = rig.admission.accept(&b).unwrap();
    let proxied: Vec<_> = (0..5).map(|_| rig.connect(PROXY)).collect();
    let _sp: Vec<_> = proxied.iter().map(|(c, _)| rig.admission.accept(c).unwrap()).collect();
    assert_eq!(rig.admission.pending(), 2 + 1 + 5);
    // s2 answers a request and idles between keep-alive requests: a newcomer from its
    // address takes its place, and the idle one is cut.
    assert!(s2.start_request(a2.peer.ip()));
    assert_eq!(rig.admission.busy(), 1);
    assert!(s2.wait_for_next());
    assert_eq!(rig.admission.busy(), 0);
    let (a4, _c4) = rig.connect(A);
    let _s4 = rig.admission.accept(&a4).unwrap();
    assert!(is_cut(&mut c2), "the idle keep-alive connection gave way");
    drop(s1);
    drop(s2);
    assert_eq!(rig.admission.pending(), 1 + 1 + 5);
}

#[test]
fn past_the_total_the_oldest_pending_connection_is_cut() {
    let rig = Rig::new(limits(3, 10, 100));
    let conns: Vec<_> = (0..3).map(|_| rig.connect(A)).collect();
    let _slots: Vec<_> = conns.iter().map(|(c, _)| rig.admission.accept(c).unwrap()).collect();
    let (newest, _c) = rig.connect(B);
    let _s = rig.admission.accept(&newest).unwrap();
    assert_eq!(rig.admission.pending(), 3);
    let mut clients: Vec<TcpStream> = conns.into_iter().map(|(_, c)| c).collect();
    assert!(is_cut(&mut clients[0]), "the oldest was cut");
    clients[1].set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    assert!(clients[1].read(&mut [0u8; 1]).is_err(), "the others still wait (read times out)");
}

#[test]
fn busy_requests_are_capped_in_all_and_per_address_and_released() {
    let rig = Rig::new(limits(100, 2, 3));
    let conns: Vec<_> = (0..4).map(|_| rig.connect(A)).collect();
    let mut slots: Vec<_> = conns.iter().take(2).map(|(c, _)| rig.admission.accept(c).unwrap()).collect();
    assert!(slots[0].start_request(A.into()) && slots[1].start_request(A.into()));
    slots.extend(conns.iter().skip(2).map(|(c, _)| rig.admission.accept(c).unwrap()));
    assert!(!slots[2].start_request(A.into()), "a third request from one address: 503");
    // Behind a trusted proxy the client is the X-Forwarded-For address.
    assert!(slots[3].start_request(B.into()));
    assert_eq!(rig.admission.busy(), 3);
    let (other, _c) = rig.connect(B);
    let mut s = rig.admission.accept(&other).unwrap();
    assert!(!s.start_request(B.into()), "three in all: 503");
    slots.truncate(1); // two of them end
    assert_eq!(rig.admission.busy(), 1);
    assert!(s.start_request(B.into()));
    drop(slots);
    drop(s);
    assert_eq!((rig.admission.pending(), rig.admission.busy()), (0, 0));
    assert!(rig.admission.state.lock().per_ip.is_empty(), "addresses with nothing open are forgotten");
}

#[test]
fn close_all_cuts_every_registered_connection_and_admits_nothing_more() {
    let rig = Rig::new(limits(100, 10, 100));
    let (a, mut ca) = rig.connect(A);
    let (b, mut cb) = rig.connect(B);
    let _sa = rig.admission.accept(&a).unwrap();
    let mut sb = rig.admission.accept(&b).unwrap();
    assert!(sb.start_request(B.into()));
    assert_eq!(rig.admission.close_all(), 2);
    assert!(is_cut(&mut ca) && is_cut(&mut cb));
    let (late, _c) = rig.connect(A);
    assert_eq!(rig.admission.accept(&late).err(), Some(Refused::ShuttingDown));
    assert!(!sb.wait_for_next(), "no keep-alive once closed");
}
