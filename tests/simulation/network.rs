//! The simulated network: delays, drops, duplicates, reordering and
//! partitions, all decided by the run's seeded generator.

use crate::rng::SplitMix64;
use embraft::core::{Message, MessageBody, NodeId};
use embraft::metrics::MESSAGE_KINDS;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::rc::Rc;

/// How badly the network behaves. Delays are in virtual time units (see
/// [`crate::cluster::TICK`]).
#[derive(Clone, Copy, Debug)]
pub struct NetFaults {
    /// Probability that a message is lost.
    pub drop: f64,
    /// Probability that a message is delivered twice.
    pub duplicate: f64,
    /// Every delivery takes a delay drawn from `[min_delay, max_delay]`;
    /// different draws reorder messages on one link.
    pub min_delay: u64,
    pub max_delay: u64,
    /// Probability that a message is instead held back for up to
    /// `max_long_delay`, arriving long after its successors.
    pub long_delay: f64,
    pub max_long_delay: u64,
    /// Deliver the messages of each link in the order they were sent, as a
    /// stream transport (TCP) does; otherwise delays reorder them.
    pub fifo: bool,
}

impl NetFaults {
    /// A healthy stream transport: nothing lost, duplicated or reordered on
    /// a link; delays still vary so that runs differ between seeds.
    pub const RELIABLE: NetFaults = NetFaults {
        drop: 0.0,
        duplicate: 0.0,
        min_delay: 1,
        max_delay: 5,
        long_delay: 0.0,
        max_long_delay: 0,
        fifo: true,
    };

    /// Lossy and reordering, as in the "unreliable" lab tests: about one
    /// message in ten lost, some duplicated, some delayed by many ticks.
    pub const UNRELIABLE: NetFaults = NetFaults {
        drop: 0.1,
        duplicate: 0.05,
        min_delay: 1,
        max_delay: 15,
        long_delay: 0.05,
        max_long_delay: 150,
        fifo: false,
    };
}

/// Counters of what the nodes sent, for message-count assertions.
#[derive(Clone, Debug, Default)]
pub struct MessageStats {
    /// Messages handed to the network, by kind (see [`kind_index`]).
    pub sent: [u64; KINDS],
    /// `AppendResponse { reject: true }` messages handed to the network.
    pub rejected_appends: u64,
}

const KINDS: usize = MESSAGE_KINDS.len();

impl MessageStats {
    pub fn count(&self, kinds: &[&str]) -> u64 {
        MESSAGE_KINDS
            .iter()
            .zip(self.sent.iter())
            .filter(|(name, _)| kinds.contains(name))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total(&self) -> u64 {
        self.sent.iter().sum()
    }
}

fn kind_index(body: &MessageBody) -> usize {
    let index = body.kind_index();
    // The library's metrics name kinds by this index: every kind the
    // simulation sends checks that the two agree.
    assert_eq!(MESSAGE_KINDS[index], body.name(), "kind {index}");
    index
}

/// A message on the wire, as bytes: every message goes through the real
/// codec, so the core only ever steps what a decoder produced.
struct InFlight {
    deliver_at: u64,
    /// Breaks ties between equal delivery times in send order, so the heap
    /// order never depends on anything but the seed.
    seq: u64,
    bytes: Vec<u8>,
}

impl PartialEq for InFlight {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for InFlight {}
impl PartialOrd for InFlight {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for InFlight {
    // Reversed: BinaryHeap is a max-heap and the earliest delivery must pop
    // first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.deliver_at, other.seq).cmp(&(self.deliver_at, self.seq))
    }
}

/// Who can talk to whom: partitions and cut links between the hosts of
/// nodes (a node is its own host, except in `groups.rs`, where the nodes of
/// every group on one process share the process's links, so a partition or
/// a cut cuts all groups between two processes together).
pub struct Links {
    /// Partition group of each host (index `host - 1`); two hosts can talk
    /// iff they share a group.
    group: Vec<u32>,
    next_group: u32,
    /// Links cut one by one (`a * hosts + b`, both directions), for shapes
    /// that groups cannot express, such as A and B both reaching C but not
    /// each other.
    cut_links: Vec<bool>,
    hosts: usize,
}

impl Links {
    pub fn new(hosts: usize) -> Links {
        Links {
            group: vec![0; hosts],
            next_group: 1,
            cut_links: vec![false; hosts * hosts],
            hosts,
        }
    }

    /// Splits the hosts: the hosts of each listed group can talk among
    /// themselves; a host listed nowhere is cut off from everyone.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        for g in self.group.iter_mut() {
            *g = self.next_group;
            self.next_group += 1;
        }
        for members in groups {
            for &id in members.iter() {
                self.group[index(id)] = self.next_group;
            }
            self.next_group += 1;
        }
    }

    /// Cuts `id` off from every other host; the others keep their links.
    pub fn isolate(&mut self, id: NodeId) {
        self.group[index(id)] = self.next_group;
        self.next_group += 1;
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        self.cut_links[index(a) * self.hosts + index(b)] = true;
        self.cut_links[index(b) * self.hosts + index(a)] = true;
    }

    /// Puts every host back into one group and restores every cut link.
    pub fn heal(&mut self) {
        self.group.fill(0);
        self.cut_links.fill(false);
    }

    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.group[index(a)] == self.group[index(b)]
            && !self.cut_links[index(a) * self.hosts + index(b)]
    }
}

pub struct Network {
    faults: NetFaults,
    links: Rc<RefCell<Links>>,
    /// The host of each node (index `id - 1`), when the links are shared
    /// by many groups' networks; otherwise each node is its own host.
    hosts: Option<Vec<NodeId>>,
    queue: BinaryHeap<InFlight>,
    next_seq: u64,
    /// The latest delivery time scheduled on each link (`from`, `to`), which
    /// FIFO delivery never undercuts.
    link_clock: Vec<u64>,
    nodes: usize,
    pub stats: MessageStats,
}

impl Network {
    pub fn new(nodes: usize, faults: NetFaults) -> Network {
        Network::over(
            Rc::new(RefCell::new(Links::new(nodes))),
            None,
            nodes,
            faults,
        )
    }

    /// The network of one group whose node `id` runs on host
    /// `hosts[id - 1]`, over `links` between the hosts, which other groups
    /// share.
    pub fn over(
        links: Rc<RefCell<Links>>,
        hosts: Option<Vec<NodeId>>,
        nodes: usize,
        faults: NetFaults,
    ) -> Network {
        Network {
            faults,
            links,
            hosts,
            queue: BinaryHeap::new(),
            next_seq: 0,
            link_clock: vec![0; nodes * nodes],
            nodes,
            stats: MessageStats::default(),
        }
    }

    pub fn set_faults(&mut self, faults: NetFaults) {
        self.faults = faults;
    }

    /// The host node `id` runs on.
    fn host(&self, id: NodeId) -> NodeId {
        self.hosts.as_ref().map_or(id, |hosts| hosts[index(id)])
    }

    /// Splits the cluster: the nodes of each listed group can talk among
    /// themselves; a node listed nowhere is cut off from everyone.
    pub fn partition(&mut self, groups: &[&[NodeId]]) {
        let groups: Vec<Vec<NodeId>> = groups
            .iter()
            .map(|g| g.iter().map(|&id| self.host(id)).collect())
            .collect();
        let groups: Vec<&[NodeId]> = groups.iter().map(Vec::as_slice).collect();
        self.links.borrow_mut().partition(&groups);
    }

    /// Cuts `id` off from every other node; the others keep their links.
    pub fn isolate(&mut self, id: NodeId) {
        let host = self.host(id);
        self.links.borrow_mut().isolate(host);
    }

    /// Cuts the link between `a` and `b` in both directions.
    pub fn cut(&mut self, a: NodeId, b: NodeId) {
        let (a, b) = (self.host(a), self.host(b));
        self.links.borrow_mut().cut(a, b);
    }

    /// Puts every node back into one group and restores every cut link.
    pub fn heal(&mut self) {
        self.links.borrow_mut().heal();
    }

    pub fn connected(&self, a: NodeId, b: NodeId) -> bool {
        self.links.borrow().connected(self.host(a), self.host(b))
    }

    /// Hands a message to the network at time `now`.
    pub fn send(&mut self, now: u64, rng: &mut SplitMix64, msg: &Message) {
        self.stats.sent[kind_index(&msg.body)] += 1;
        if let MessageBody::AppendResponse { reject: true, .. } = msg.body {
            self.stats.rejected_appends += 1;
        }
        // A partition drops at send time as well as at delivery time, so a
        // message sent across a cut never arrives even if the cut heals
        // before its delivery.
        if !self.connected(msg.from, msg.to) || rng.chance(self.faults.drop) {
            return;
        }
        let copies = if rng.chance(self.faults.duplicate) {
            2
        } else {
            1
        };
        let bytes = encode(msg);
        for _ in 0..copies {
            let delay = if rng.chance(self.faults.long_delay) {
                rng.between(self.faults.max_delay, self.faults.max_long_delay)
            } else {
                rng.between(self.faults.min_delay, self.faults.max_delay)
            };
            let mut deliver_at = now + delay;
            if self.faults.fifo {
                // Ties keep send order through `seq`.
                let link = &mut self.link_clock[index(msg.from) * self.nodes + index(msg.to)];
                deliver_at = deliver_at.max(*link);
                *link = deliver_at;
            }
            self.queue.push(InFlight {
                deliver_at,
                seq: self.next_seq,
                bytes: bytes.clone(),
            });
            self.next_seq += 1;
        }
    }

    /// When the next message is due, if any is in flight.
    pub fn next_delivery_at(&self) -> Option<u64> {
        self.queue.peek().map(|m| m.deliver_at)
    }

    /// Takes the next message off the wire. `None` when it was lost to a
    /// partition that formed while it was in flight.
    pub fn deliver_next(&mut self) -> Option<Message> {
        let inflight = self.queue.pop()?;
        let msg = decode(&inflight.bytes);
        self.connected(msg.from, msg.to).then_some(msg)
    }
}

fn index(id: NodeId) -> usize {
    (id - 1) as usize
}

fn encode(msg: &Message) -> Vec<u8> {
    let mut out = Vec::with_capacity(embraft::codec::encoded_message_len(msg));
    embraft::codec::encode_message(msg, &mut out);
    out
}

fn decode(bytes: &[u8]) -> Message {
    embraft::codec::decode_message(bytes)
        .unwrap_or_else(|e| panic!("the codec refused a message it encoded: {e}"))
}
