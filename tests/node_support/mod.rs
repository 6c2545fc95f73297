//! An in-process cluster of `embraft::node::Node`s for the node integration
//! tests: a host loop that ticks, polls, routes messages (each link can
//! deliver, hold or drop them), applies committed entries and records
//! proposal outcomes.
#![allow(dead_code)]

use embraft::codec::decode_message;
use embraft::core::{EntryKind, Index, Message, MessageBody, NodeId, Role, Term};
use embraft::node::{Node, NodeConfig, NodeError, ProposalResult, ReadyBatch, Threading};
use embraft::wal::WalOptions;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "../common/temp_dir.rs"]
mod temp_dir;
pub use temp_dir::TempDir;

/// What happens to messages on one link.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link {
    Deliver,
    /// Kept until the link delivers again.
    Hold,
    Drop,
}

/// A host's state machine: the normal entries it applied, in order, as
/// (index, term, data).
pub type AppliedState = Vec<(Index, Term, Vec<u8>)>;

/// One node and what its host knows.
pub struct Host {
    pub id: NodeId,
    pub dir: PathBuf,
    /// What the node was started with, for restarts.
    pub config: NodeConfig,
    pub node: Option<Node>,
    /// Normal entries applied, in order.
    pub applied: AppliedState,
    pub last_applied: Index,
    pub outcomes: HashMap<u64, ProposalResult>,
    pub role: Role,
    pub leader: NodeId,
    pub term: Term,
    /// Applied entries since the host last took a snapshot.
    pub since_compaction: u64,
    /// Snapshots this host took, and restores it was asked for: (index,
    /// term) of each.
    pub snapshots_taken: Vec<Index>,
    pub restores: Vec<(Index, Term)>,
    /// The node's log lines.
    pub logs: Vec<String>,
    /// Indexes the node asked to snapshot at (`snapshot_wanted`).
    pub wanted: Vec<Index>,
}

impl Host {
    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    /// Snapshots the host's state machine (its applied list) at what it
    /// applied, through the node's writer; the node then compacts its log.
    pub fn take_snapshot(&mut self) -> Result<(), NodeError> {
        let node = self.node.as_ref().expect("running");
        let mut writer = node.begin_snapshot(self.last_applied)?;
        writer.write(&encode_state(&self.applied))?;
        writer.finish()?;
        self.since_compaction = 0;
        self.snapshots_taken.push(self.last_applied);
        Ok(())
    }
}

/// The host's state machine as snapshot bytes: each applied entry as
/// index, term, length (little-endian) and data.
pub fn encode_state(applied: &[(Index, Term, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (index, term, data) in applied {
        out.extend_from_slice(&index.to_le_bytes());
        out.extend_from_slice(&term.to_le_bytes());
        out.extend_from_slice(&(data.len() as u32).to_le_bytes());
        out.extend_from_slice(data);
    }
    out
}

pub fn decode_state(mut bytes: &[u8]) -> AppliedState {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let index = u64::from_le_bytes(bytes[..8].try_into().unwrap());
        let term = u64::from_le_bytes(bytes[8..16].try_into().unwrap());
        let len = u32::from_le_bytes(bytes[16..20].try_into().unwrap()) as usize;
        out.push((index, term, bytes[20..20 + len].to_vec()));
        bytes = &bytes[20 + len..];
    }
    out
}

/// The threading the node tests run with: `EMBRAFT_TEST_THREADING=inline`
/// runs every cluster test with inline nodes (tests/node_inline.rs covers
/// the inline mode in the default run).
pub fn threading_from_env() -> Threading {
    match std::env::var("EMBRAFT_TEST_THREADING").as_deref() {
        Ok("inline") => Threading::Inline,
        _ => Threading::Node,
    }
}

pub struct Cluster {
    pub hosts: Vec<Host>,
    links: HashMap<(NodeId, NodeId), Link>,
    held: Vec<(NodeId, NodeId, Vec<u8>)>,
    /// Tick every node this often when `ticking`.
    pub tick_every: Duration,
    pub ticking: bool,
    last_tick: Instant,
    /// The host snapshots its state machine and compacts every this many
    /// applied entries (0: never).
    pub compact_every: u64,
    _dir: TempDir,
}

impl Cluster {
    /// Starts `count` founding nodes (ids 1..=count), each configured by
    /// `configure` after the defaults.
    pub fn start(name: &str, count: u64, configure: impl Fn(&mut NodeConfig)) -> Cluster {
        let dir = TempDir::new(name);
        let peers: Vec<NodeId> = (1..=count).collect();
        let hosts = peers
            .iter()
            .map(|&id| {
                let node_dir = dir.path().join(format!("node-{id}"));
                let mut config = NodeConfig::new(id, &node_dir);
                config.peers = peers.clone();
                config.raft.election_tick = 10;
                config.raft.heartbeat_tick = 2;
                config.wal = WalOptions::default();
                config.threading = threading_from_env();
                configure(&mut config);
                Host {
                    id,
                    dir: node_dir,
                    node: Some(Node::new(config.clone()).expect("node starts")),
                    config,
                    applied: Vec::new(),
                    last_applied: 0,
                    outcomes: HashMap::new(),
                    role: Role::Follower,
                    leader: 0,
                    term: 0,
                    since_compaction: 0,
                    snapshots_taken: Vec::new(),
                    restores: Vec::new(),
                    logs: Vec::new(),
                    wanted: Vec::new(),
                }
            })
            .collect();
        Cluster {
            hosts,
            links: HashMap::new(),
            held: Vec::new(),
            tick_every: Duration::from_millis(10),
            ticking: true,
            last_tick: Instant::now(),
            compact_every: 0,
            _dir: dir,
        }
    }

    pub fn host(&self, id: NodeId) -> &Host {
        &self.hosts[(id - 1) as usize]
    }

    pub fn host_mut(&mut self, id: NodeId) -> &mut Host {
        &mut self.hosts[(id - 1) as usize]
    }

    /// The directory every node's directory is in.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// Sets the link from `from` to `to`; delivering releases what it held.
    pub fn set_link(&mut self, from: NodeId, to: NodeId, link: Link) {
        self.links.insert((from, to), link);
        if link == Link::Deliver {
            let held = std::mem::take(&mut self.held);
            let (release, keep): (Vec<_>, Vec<_>) = held
                .into_iter()
                .partition(|(f, t, _)| (*f, *t) == (from, to));
            self.held = keep;
            for (_, to, bytes) in release {
                self.deliver(to, &bytes);
            }
        }
    }

    /// The highest index that messages held from `from` acknowledge (0 if
    /// none).
    pub fn held_ack_from(&self, from: NodeId) -> u64 {
        self.held
            .iter()
            .filter(|(f, _, _)| *f == from)
            .filter_map(|(_, _, bytes)| match decode_message(bytes) {
                Ok(Message {
                    body:
                        MessageBody::AppendResponse {
                            reject: false,
                            index,
                            ..
                        },
                    ..
                }) => Some(index),
                _ => None,
            })
            .max()
            .unwrap_or(0)
    }

    fn deliver(&self, to: NodeId, bytes: &[u8]) {
        if let Some(node) = &self.hosts[(to - 1) as usize].node {
            match node.step(bytes) {
                // A full queue loses the message, as a network may.
                Ok(()) | Err(embraft::node::NodeError::Busy) => {}
                Err(err) => panic!("node {to} refused a message: {err}"),
            }
        }
    }

    /// One round of the host loop; returns how many batches were handled.
    pub fn pump(&mut self) -> usize {
        if self.ticking && self.last_tick.elapsed() >= self.tick_every {
            self.last_tick = Instant::now();
            for host in &self.hosts {
                if let Some(node) = &host.node {
                    let _ = node.tick();
                }
            }
        }
        let mut handled = 0;
        for i in 0..self.hosts.len() {
            let Some(node) = &self.hosts[i].node else {
                continue;
            };
            let batch = match node.poll_ready(Duration::ZERO) {
                Ok(Some(batch)) => batch,
                Ok(None) => continue,
                Err(err) => panic!("node {} failed: {err}", self.hosts[i].id),
            };
            self.handle(i, batch);
            handled += 1;
        }
        handled
    }

    fn handle(&mut self, i: usize, batch: ReadyBatch) {
        let from = self.hosts[i].id;
        for msg in &batch.messages {
            match self
                .links
                .get(&(from, msg.to))
                .copied()
                .unwrap_or(Link::Deliver)
            {
                Link::Deliver => self.deliver(msg.to, &msg.bytes),
                Link::Hold => self.held.push((from, msg.to, msg.bytes.clone())),
                Link::Drop => {}
            }
        }
        let host = &mut self.hosts[i];
        host.role = batch.state.role;
        host.leader = batch.state.leader;
        host.term = batch.state.term;
        if let Some(restore) = &batch.restore {
            // Before the batch's entries, which follow the snapshot.
            host.applied = decode_state(&std::fs::read(&restore.path).expect("snapshot file"));
            host.last_applied = restore.meta.index;
            host.since_compaction = 0;
            host.restores.push((restore.meta.index, restore.meta.term));
        }
        host.wanted.extend(batch.snapshot_wanted);
        for committed in &batch.committed {
            let entry = &committed.entry;
            assert_eq!(entry.index, host.last_applied + 1, "node {from}: gap");
            if entry.kind == EntryKind::Normal && !entry.data.is_empty() {
                host.applied
                    .push((entry.index, entry.term, entry.data.to_vec()));
            }
            host.last_applied = entry.index;
            host.since_compaction += 1;
        }
        for outcome in &batch.outcomes {
            host.outcomes.insert(outcome.proposal_id, outcome.result);
        }
        host.logs
            .extend(batch.logs.into_iter().map(|line| line.text));
        if !batch.committed.is_empty() || batch.restore.is_some() {
            let node = host.node.as_ref().expect("running");
            let _ = node.ack_applied(host.last_applied);
            if self.compact_every > 0 && host.since_compaction >= self.compact_every {
                match host.take_snapshot() {
                    Ok(()) => {}
                    // The queue is full, or the node got a newer snapshot
                    // from the leader meanwhile: try after the next batch.
                    Err(NodeError::Busy | NodeError::StaleSnapshot { .. }) => {}
                    Err(err) => panic!("node {from}: snapshot: {err}"),
                }
            }
        }
    }

    /// Runs the host loop until `done` holds; false after `timeout`.
    pub fn run_until(&mut self, timeout: Duration, mut done: impl FnMut(&Cluster) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            if self.pump() == 0 {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    }

    /// The leader every running node knows, if there is one.
    pub fn agreed_leader(&self) -> Option<NodeId> {
        let running: Vec<&Host> = self.hosts.iter().filter(|h| h.node.is_some()).collect();
        let leader = running.iter().find(|h| h.role == Role::Leader)?.id;
        running.iter().all(|h| h.leader == leader).then_some(leader)
    }

    /// Pumps until no node has anything to hand out for a while (use with
    /// ticking off, or heartbeats keep it busy).
    pub fn settle(&mut self) {
        let mut quiet_rounds = 0;
        let deadline = Instant::now() + Duration::from_secs(10);
        while quiet_rounds < 20 && Instant::now() < deadline {
            if self.pump() == 0 {
                quiet_rounds += 1;
                std::thread::sleep(Duration::from_millis(1));
            } else {
                quiet_rounds = 0;
            }
        }
    }

    /// Frees node `id` (its writes are durable once this returns).
    pub fn stop(&mut self, id: NodeId) {
        self.hosts[(id - 1) as usize].node = None;
    }

    /// Starts node `id` again from its directory. Its host's state machine
    /// is not durable: it starts empty and the node hands it the snapshot
    /// to restore and the entries after it.
    pub fn restart(&mut self, id: NodeId) -> Result<(), NodeError> {
        let host = self.host_mut(id);
        host.node = None;
        host.applied.clear();
        host.last_applied = 0;
        host.since_compaction = 0;
        let mut config = host.config.clone();
        config.applied = 0;
        host.node = Some(Node::new(config)?);
        Ok(())
    }

    pub fn elect(&mut self) -> NodeId {
        assert!(
            self.run_until(Duration::from_secs(10), |c| c.agreed_leader().is_some()),
            "no leader elected"
        );
        self.agreed_leader().unwrap()
    }
}

/// Proposes entries numbered `numbers` on the leader and waits until the
/// nodes `on` applied all of them (each host's applied list then has at
/// least `numbers.end` entries).
pub fn commit(cluster: &mut Cluster, numbers: std::ops::Range<u32>, on: &[NodeId]) {
    let leader = cluster.elect();
    for number in numbers.clone() {
        let payload = format!("entry-{number:06}").into_bytes();
        cluster.host(leader).node().propose(&payload).unwrap();
    }
    let want = numbers.end as usize;
    assert!(
        cluster.run_until(Duration::from_secs(20), |c| on.iter().all(|&id| c
            .host(id)
            .applied
            .len()
            >= want)),
        "entries through {} applied on {on:?}",
        numbers.end
    );
}
