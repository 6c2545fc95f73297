//! Many groups on three runtimes in one process, wired by an in-memory
//! transport, each runtime with its own synced WAL: every group elects a
//! leader and commits, a runtime is stopped and reopened from its WAL
//! (every group recovered from the one log), and nothing committed is
//! lost. `EMBRAFT_RUNTIME_GROUPS` sets the number of groups (default
//! 1,000).

#[path = "common/temp_dir.rs"]
mod temp_dir;

use embraft::core::Role;
use embraft::node::{LogLevel, NodeError, ProposalResult};
use embraft::runtime::{frames_per_peer, GroupId, GroupStart, Runtime, RuntimeConfig};
use embraft::wal::WalOptions;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};
use temp_dir::TempDir;

const RUNTIMES: u64 = 3;

/// What a runtime's host applied, per group: the data of every normal
/// entry, by index.
type Applied = HashMap<GroupId, BTreeMap<u64, Vec<u8>>>;

/// What the host of each runtime saw.
#[derive(Default)]
struct Host {
    applied: Applied,
    /// Proposal outcomes by (group, proposal id): the index committed at,
    /// or `None` when dropped.
    outcomes: HashMap<(GroupId, u64), Option<u64>>,
}

struct Cluster {
    runtimes: Arc<RwLock<Vec<Option<Arc<Runtime>>>>>,
    hosts: Vec<Arc<Mutex<Host>>>,
    dirs: Vec<TempDir>,
    groups: u64,
    /// The runtimes' entry cache budget.
    cache_bytes: u64,
    /// Inline runtimes: the poller and ticker threads step the groups.
    inline: bool,
    /// Idle ticks before a group goes quiet (0: never).
    quiesce_tick: u32,
    stop: Arc<AtomicBool>,
    /// Per runtime: its poller; stopping one stops it.
    pollers: Vec<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
    ticker: Option<JoinHandle<()>>,
}

fn runtime_config(id: u64, dir: &TempDir) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(id, dir.path());
    config.workers = 2;
    config.wal = WalOptions {
        segment_size: 8 << 20,
        ..WalOptions::default()
    };
    // The runtime's raft defaults (commit broadcasts skipped), not the
    // core's.
    config.raft.election_tick = 10;
    config.raft.heartbeat_tick = 2;
    config.log_level = LogLevel::Off;
    config
}

impl Cluster {
    fn new(groups: u64) -> Cluster {
        Cluster::with_cache(groups, embraft::runtime::DEFAULT_CACHE_BYTES)
    }

    fn with_cache(groups: u64, cache_bytes: u64) -> Cluster {
        Cluster::with_options(groups, cache_bytes, false, 0)
    }

    fn with_options(groups: u64, cache_bytes: u64, inline: bool, quiesce_tick: u32) -> Cluster {
        let dirs: Vec<TempDir> = (1..=RUNTIMES)
            .map(|id| TempDir::new(&format!("runtime-{id}")))
            .collect();
        let mut cluster = Cluster {
            runtimes: Arc::new(RwLock::new(vec![None, None, None])),
            hosts: (0..RUNTIMES).map(|_| Arc::default()).collect(),
            dirs,
            groups,
            cache_bytes,
            inline,
            quiesce_tick,
            stop: Arc::new(AtomicBool::new(false)),
            pollers: vec![None, None, None],
            ticker: None,
        };
        for id in 1..=RUNTIMES {
            cluster.open(id, true);
        }
        let runtimes = cluster.runtimes.clone();
        let stop = cluster.stop.clone();
        cluster.ticker = Some(thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                thread::sleep(Duration::from_millis(10));
                for runtime in runtimes.read().iter().flatten() {
                    runtime.tick().unwrap();
                }
            }
        }));
        cluster
    }

    /// Opens runtime `id` and starts every group on it: founded when
    /// `found`, else restarted from its WAL.
    fn open(&mut self, id: u64, found: bool) {
        let index = (id - 1) as usize;
        let mut config = runtime_config(id, &self.dirs[index]);
        config.cache_bytes = self.cache_bytes;
        config.inline = self.inline;
        config.raft.quiesce_tick = self.quiesce_tick;
        let runtime = Arc::new(Runtime::open(config).unwrap());
        if !found {
            let stored = runtime.stored_groups();
            assert_eq!(
                stored,
                (1..=self.groups).collect::<Vec<_>>(),
                "the WAL holds every group"
            );
        }
        // A restarted host starts from scratch: every committed entry is
        // delivered again from the log.
        self.hosts[index].lock().applied.clear();
        for group in 1..=self.groups {
            let peers = if found {
                (1..=RUNTIMES).collect()
            } else {
                Vec::new()
            };
            runtime
                .start_group(group, GroupStart { peers, applied: 0 })
                .unwrap();
        }
        self.runtimes.write()[index] = Some(runtime.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let poller_stop = stop.clone();
        let runtimes = self.runtimes.clone();
        let host = self.hosts[index].clone();
        let poller = thread::spawn(move || {
            while !poller_stop.load(Ordering::Relaxed) {
                let readies = runtime.poll(Duration::from_millis(10)).unwrap();
                // One frame per peer, as a stream transport sends them.
                {
                    let targets = runtimes.read();
                    for (peer, frame) in frames_per_peer(&readies) {
                        if let Some(target) = &targets[(peer - 1) as usize] {
                            let report = target.step_frame(&frame).unwrap();
                            assert_eq!(report.refused, 0, "{report:?}");
                        }
                    }
                }
                for ready in readies {
                    let group = ready.group;
                    let batch = ready.batch;
                    let mut host = host.lock();
                    for c in &batch.committed {
                        if c.entry.kind == embraft::core::EntryKind::Normal
                            && !c.entry.data.is_empty()
                        {
                            let previous = host
                                .applied
                                .entry(group)
                                .or_default()
                                .insert(c.entry.index, c.entry.data.to_vec());
                            assert!(previous.is_none(), "index applied twice");
                        }
                    }
                    for outcome in &batch.outcomes {
                        let index = match outcome.result {
                            ProposalResult::Committed { index } => Some(index),
                            _ => None,
                        };
                        host.outcomes.insert((group, outcome.proposal_id), index);
                    }
                    drop(host);
                    if let Some(last) = batch.committed.last() {
                        runtime.ack_applied(group, last.entry.index).unwrap();
                    }
                }
            }
        });
        self.pollers[index] = Some((stop, poller));
    }

    /// Reopens runtime `id` with no transport and no ticks: every entry it
    /// committed before it stopped must come back from its own WAL.
    fn recovers_alone(&self, id: u64, tag: &str, at: &HashMap<GroupId, u64>) {
        let index = (id - 1) as usize;
        let runtime = Runtime::open(runtime_config(id, &self.dirs[index])).unwrap();
        for group in 1..=self.groups {
            runtime.start_group(group, GroupStart::default()).unwrap();
        }
        let mut found: HashMap<GroupId, HashMap<u64, Vec<u8>>> = HashMap::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        let complete = |found: &HashMap<GroupId, HashMap<u64, Vec<u8>>>| {
            at.iter().all(|(group, index)| {
                found.get(group).and_then(|log| log.get(index))
                    == Some(&format!("{tag}-{group}").into_bytes())
            })
        };
        while !complete(&found) {
            assert!(
                Instant::now() < deadline,
                "runtime {id} did not recover every committed entry from its WAL"
            );
            for ready in runtime.poll(Duration::from_millis(50)).unwrap() {
                for c in &ready.batch.committed {
                    found
                        .entry(ready.group)
                        .or_default()
                        .insert(c.entry.index, c.entry.data.to_vec());
                }
            }
        }
    }

    /// Stops runtime `id` (its poller first, then the runtime itself).
    fn close(&mut self, id: u64) {
        let index = (id - 1) as usize;
        if let Some((stop, poller)) = self.pollers[index].take() {
            stop.store(true, Ordering::Relaxed);
            poller.join().unwrap();
        }
        let runtime = self.runtimes.write()[index].take().unwrap();
        // The ticker may hold a clone for a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut runtime = runtime;
        loop {
            match Arc::try_unwrap(runtime) {
                Ok(runtime) => {
                    drop(runtime);
                    return;
                }
                Err(back) => {
                    assert!(Instant::now() < deadline, "runtime still referenced");
                    runtime = back;
                    thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    /// The runtime whose replica of `group` leads, if any.
    fn leader(&self, group: GroupId) -> Option<Arc<Runtime>> {
        self.runtimes
            .read()
            .iter()
            .flatten()
            .find(|r| r.status(group).is_ok_and(|s| s.role == Role::Leader))
            .cloned()
    }

    fn wait_until(&self, what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> Duration {
        let start = Instant::now();
        while !done() {
            assert!(start.elapsed() < limit, "timed out waiting until {what}");
            thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }

    /// Proposes `tag` to every group through its leader (retrying where
    /// the proposal is dropped) and waits until all are committed;
    /// returns the index each landed at.
    fn commit_everywhere(&self, tag: &str) -> HashMap<GroupId, u64> {
        let mut committed = HashMap::new();
        let start = Instant::now();
        while (committed.len() as u64) < self.groups {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{} of {} groups committed {tag}",
                committed.len(),
                self.groups
            );
            let mut waiting = Vec::new();
            for group in 1..=self.groups {
                if committed.contains_key(&group) {
                    continue;
                }
                let Some(leader) = self.leader(group) else {
                    continue;
                };
                let data = format!("{tag}-{group}");
                if let Ok(id) = leader.propose(group, data.as_bytes()) {
                    waiting.push((leader.id(), group, id));
                }
            }
            thread::sleep(Duration::from_millis(200));
            for (runtime, group, id) in waiting {
                let host = self.hosts[(runtime - 1) as usize].lock();
                if let Some(Some(index)) = host.outcomes.get(&(group, id)) {
                    committed.insert(group, *index);
                }
            }
        }
        committed
    }

    /// Whether runtime `id`'s host applied `tag` at the index it was
    /// committed at, in every group.
    fn applied_everywhere(&self, id: u64, tag: &str, at: &HashMap<GroupId, u64>) -> bool {
        let host = self.hosts[(id - 1) as usize].lock();
        at.iter().all(|(group, index)| {
            host.applied
                .get(group)
                .and_then(|log| log.get(index))
                .is_some_and(|data| data == format!("{tag}-{group}").as_bytes())
        })
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(ticker) = self.ticker.take() {
            let _ = ticker.join();
        }
        for id in 1..=RUNTIMES {
            if self.pollers[(id - 1) as usize].is_some() {
                self.close(id);
            }
        }
    }
}

#[test]
fn a_thousand_groups_commit_and_survive_a_runtime_restart() {
    let groups = std::env::var("EMBRAFT_RUNTIME_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000);
    commit_and_survive_a_restart(Cluster::new(groups));
}

/// The same on inline runtimes (`RuntimeConfig::inline`): no workers; the
/// hosts' ticker and transport threads step the groups, and a sync thread
/// per runtime waits for the WAL.
#[test]
fn inline_runtimes_commit_and_survive_a_restart() {
    let cluster = Cluster::with_options(100, embraft::runtime::DEFAULT_CACHE_BYTES, true, 0);
    commit_and_survive_a_restart(cluster);
}

fn commit_and_survive_a_restart(mut cluster: Cluster) {
    let groups = cluster.groups;
    let limit = Duration::from_secs(120);
    let elected = cluster.wait_until("every group has a leader", limit, || {
        (1..=groups).all(|g| cluster.leader(g).is_some())
    });
    eprintln!("{groups} groups elected in {elected:?}");

    let first = cluster.commit_everywhere("a");
    for id in 1..=RUNTIMES {
        cluster.wait_until("every runtime applied the first round", limit, || {
            cluster.applied_everywhere(id, "a", &first)
        });
    }

    // Runtime 3 stops; the others keep committing without it.
    cluster.close(3);
    let second = cluster.commit_everywhere("b");
    cluster.recovers_alone(3, "a", &first);
    cluster.open(3, false);
    let recovered = cluster.wait_until("the reopened runtime caught up", limit, || {
        cluster.applied_everywhere(3, "a", &first) && cluster.applied_everywhere(3, "b", &second)
    });
    eprintln!("runtime 3 reopened and caught up in {recovered:?}");

    let third = cluster.commit_everywhere("c");
    for id in 1..=RUNTIMES {
        cluster.wait_until("every runtime applied every round", limit, || {
            cluster.applied_everywhere(id, "a", &first)
                && cluster.applied_everywhere(id, "b", &second)
                && cluster.applied_everywhere(id, "c", &third)
        });
    }
}

#[test]
fn bad_calls_get_clear_errors() {
    let dir = TempDir::new("runtime-errors");
    let runtime = Runtime::open(runtime_config(1, &dir)).unwrap();
    runtime
        .start_group(
            7,
            GroupStart {
                peers: vec![1],
                applied: 0,
            },
        )
        .unwrap();
    // Started from many threads at once, a group starts once.
    let started: Vec<bool> = thread::scope(|scope| {
        let starts: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(|| {
                    let start = GroupStart {
                        peers: vec![1],
                        applied: 0,
                    };
                    match runtime.start_group(42, start) {
                        Ok(()) => true,
                        Err(embraft::node::NodeError::GroupExists(42)) => false,
                        Err(err) => panic!("{err}"),
                    }
                })
            })
            .collect();
        starts.into_iter().map(|s| s.join().unwrap()).collect()
    });
    assert_eq!(started.iter().filter(|&&s| s).count(), 1);
    runtime.remove_group(42).unwrap();
    let again = runtime.start_group(7, GroupStart::default()).unwrap_err();
    assert!(
        matches!(again, embraft::node::NodeError::GroupExists(7)),
        "{again}"
    );
    let unknown = runtime.propose(8, b"x").unwrap_err();
    assert!(
        matches!(unknown, embraft::node::NodeError::UnknownGroup(8)),
        "{unknown}"
    );
    assert_eq!(unknown.to_string(), "no group 8 runs here");
    let garbage = runtime.step(7, &[0xff, 0x00, 0x13]).unwrap_err();
    assert!(
        matches!(garbage, embraft::node::NodeError::MalformedMessage(_)),
        "{garbage}"
    );
    // A group frame is refused whole when malformed; its messages one by
    // one when they cannot be taken.
    let mut frame = Vec::new();
    embraft::codec::encode_group_frame([(7u64, &b"junk"[..])].into_iter(), &mut frame);
    assert!(matches!(
        runtime.step_frame(&frame[..frame.len() - 1]),
        Err(embraft::node::NodeError::MalformedMessage(_))
    ));
    let report = runtime.step_frame(&frame).unwrap();
    assert_eq!((report.stepped, report.refused), (0, 1));
    let mut vote = Vec::new();
    let message = embraft::core::Message {
        from: 2,
        to: 1,
        term: 1,
        body: embraft::core::MessageBody::Heartbeat {
            commit: 0,
            context: 0,
        },
    };
    embraft::codec::encode_message(&message, &mut vote);
    let mut frame = Vec::new();
    embraft::codec::encode_group_frame([(99u64, &vote[..])].into_iter(), &mut frame);
    let report = runtime.step_frame(&frame).unwrap();
    assert_eq!((report.stepped, report.unknown_group), (0, 1));
    let locked = Runtime::open(runtime_config(1, &dir)).err().unwrap();
    assert!(
        matches!(locked, embraft::node::NodeError::DirectoryLocked(_)),
        "{locked}"
    );
    assert!(
        Runtime::open(runtime_config(0, &dir)).is_err(),
        "id 0 is reserved"
    );
    // A one-voter group elects itself and commits.
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        runtime.tick().unwrap();
        if let Ok(id) = runtime.propose(7, b"solo") {
            if runtime.status(7).unwrap().role == Role::Leader {
                break id;
            }
        }
        assert!(Instant::now() < deadline, "the group never led");
        thread::sleep(Duration::from_millis(5));
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let readies = runtime.poll(Duration::from_millis(20)).unwrap();
        let committed = readies
            .iter()
            .flat_map(|r| &r.batch.outcomes)
            .any(|o| o.proposal_id == id && matches!(o.result, ProposalResult::Committed { .. }));
        if committed {
            break;
        }
        assert!(Instant::now() < deadline, "the proposal never committed");
        runtime.tick().unwrap();
    }
    runtime.remove_group(7).unwrap();
    assert!(runtime.stored_groups().is_empty(), "removed from the WAL");
    assert!(matches!(
        runtime.status(7),
        Err(embraft::node::NodeError::UnknownGroup(7))
    ));
}

/// Founds `groups` with this runtime as their one voter and waits until
/// `leader` leads.
fn start_solo_groups(runtime: &Runtime, groups: &[GroupId], leader: GroupId) {
    for &group in groups {
        let start = GroupStart {
            peers: vec![runtime.id()],
            applied: 0,
        };
        runtime.start_group(group, start).unwrap();
    }
    poll_until(runtime, "the group leads", |_| {
        runtime.status(leader).unwrap().role == Role::Leader
    });
}

/// Polls `runtime` until `done` says the outputs seen so far suffice.
fn poll_until(runtime: &Runtime, what: &str, mut done: impl FnMut(&[GroupReadyView]) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !done(&seen) {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        runtime.tick().unwrap();
        for ready in runtime.poll(Duration::from_millis(10)).unwrap() {
            if let Some(last) = ready.batch.committed.last() {
                runtime.ack_applied(ready.group, last.entry.index).unwrap();
            }
            seen.push(GroupReadyView {
                group: ready.group,
                restore: ready.batch.restore.map(|r| (r.meta.index, r.path)),
                snapshot_wanted: ready.batch.snapshot_wanted,
            });
        }
    }
}

struct GroupReadyView {
    group: GroupId,
    restore: Option<(u64, std::path::PathBuf)>,
    snapshot_wanted: Option<u64>,
}

#[test]
fn a_group_snapshots_compacts_and_restores_after_a_restart() {
    let dir = TempDir::new("runtime-snapshot");
    let mut config = runtime_config(1, &dir);
    config.snapshot.entries_threshold = 20;
    config.raft.compact_keep_entries = 0;
    let runtime = Runtime::open(config.clone()).unwrap();
    start_solo_groups(&runtime, &[5, 6], 5);
    let groups = dir.path().join("groups");
    assert!(
        !groups.exists(),
        "a group makes its snapshot folder only with its first snapshot"
    );
    for n in 0..30 {
        runtime.propose(5, format!("v{n}").as_bytes()).unwrap();
    }
    let mut wanted = None;
    poll_until(&runtime, "a snapshot is wanted", |seen| {
        wanted = seen
            .iter()
            .filter(|r| r.group == 5)
            .find_map(|r| r.snapshot_wanted);
        wanted.is_some()
    });
    let index = wanted.unwrap();
    let mut writer = runtime.begin_snapshot(5, index).unwrap();
    writer.write(b"state machine at the snapshot").unwrap();
    writer.finish().unwrap();
    poll_until(&runtime, "the snapshot is recorded", |_| {
        runtime.status(5).unwrap().snapshot_index == index
    });
    assert!(groups.join("5").join("snapshots").is_dir());
    assert!(!groups.join("6").exists());
    // An index at or below the snapshot is refused, for this group only.
    let stale = runtime.begin_snapshot(5, index).err().unwrap();
    assert!(
        matches!(stale, embraft::node::NodeError::StaleSnapshot { .. }),
        "{stale}"
    );
    assert!(matches!(
        runtime.begin_snapshot(9, 1),
        Err(embraft::node::NodeError::UnknownGroup(9))
    ));
    drop(runtime);

    // Restarted with nothing applied: the host restores from the snapshot
    // file, then applies what follows it.
    let runtime = Runtime::open(config.clone()).unwrap();
    runtime.start_group(5, GroupStart::default()).unwrap();
    runtime.start_group(6, GroupStart::default()).unwrap();
    let mut restored = None;
    poll_until(&runtime, "the restore is handed out", |seen| {
        restored = seen
            .iter()
            .filter(|r| r.group == 5)
            .find_map(|r| r.restore.clone());
        restored.is_some()
    });
    let (at, path) = restored.unwrap();
    assert_eq!(at, index);
    assert_eq!(
        runtime.status(5).unwrap().first_index,
        index + 1,
        "the log before the snapshot is compacted away"
    );
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"state machine at the snapshot"
    );
    assert!(path.starts_with(groups.join("5")), "{}", path.display());
    assert!(
        !groups.join("6").exists(),
        "a restart makes no folder either"
    );
    drop(runtime);
    let runtime = Runtime::open(config).unwrap();
    runtime.start_group(5, GroupStart::default()).unwrap();
    runtime.remove_group(5).unwrap();
    assert!(
        !groups.join("5").exists(),
        "removing a group deletes its folder"
    );
}

#[test]
fn a_follower_far_behind_catches_up_within_the_cache_budget() {
    const BUDGET: u64 = 256 << 10;
    let mut cluster = Cluster::with_cache(2, BUDGET);
    let limit = Duration::from_secs(60);
    cluster.wait_until("both groups have leaders", limit, || {
        (1..=2).all(|g| cluster.leader(g).is_some())
    });
    cluster.close(3);
    // 8 MiB into group 1 while runtime 3 is away: 32 times the budget.
    let payload = vec![9u8; 1024];
    let mut proposed = 0;
    let deadline = Instant::now() + limit;
    while proposed < 8192 {
        assert!(Instant::now() < deadline, "proposals did not go in");
        let Some(leader) = cluster.leader(1) else {
            thread::sleep(Duration::from_millis(10));
            continue;
        };
        match leader.propose(1, &payload) {
            Ok(_) => proposed += 1,
            Err(_) => thread::sleep(Duration::from_millis(5)),
        }
    }
    let leader = cluster.leader(1).unwrap();
    cluster.wait_until("runtime 3's peers commit everything", limit, || {
        let status = leader.status(1).unwrap();
        status.commit >= 8192 && status.applied >= 8192
    });
    let target = leader.status(1).unwrap().commit;
    cluster.open(3, false);
    let reopened = cluster.runtimes.read()[2].clone().unwrap();
    let mut peak = 0;
    cluster.wait_until("runtime 3 catches up", limit, || {
        peak = peak.max(leader.cached_entry_bytes());
        reopened.status(1).unwrap().applied >= target
    });
    eprintln!("leader cache peak during catch-up: {peak} bytes (budget {BUDGET})");
    // Entries stay cached while they wait to be durable or applied, so a
    // round may end a message or two above the budget, never far.
    assert!(
        peak <= BUDGET + (2 << 20),
        "the leader cached {peak} bytes while a follower caught up"
    );
    assert!(leader.status(1).unwrap().log_read_failures == 0);
}

/// The host's part in the purge feedback: it snapshots each group asked,
/// once per ask. An ask may be stale by the time it is seen (a snapshot at
/// that index was recorded meanwhile); it is then left.
fn snapshot_when_asked(
    runtime: &Runtime,
    seen: &[GroupReadyView],
    asked: &mut std::collections::BTreeSet<(GroupId, u64)>,
) {
    for ready in seen {
        let Some(index) = ready.snapshot_wanted else {
            continue;
        };
        if !asked.insert((ready.group, index)) {
            continue;
        }
        match runtime.begin_snapshot(ready.group, index) {
            Ok(mut writer) => {
                writer.write(b"state").unwrap();
                writer.finish().unwrap();
            }
            Err(NodeError::StaleSnapshot { .. }) => {}
            Err(err) => panic!("snapshot of group {}: {err}", ready.group),
        }
    }
}

/// A runtime whose WAL is past its soft limit after a few hundred
/// kilobytes of entries, running solo groups 1 and 2 (1 leading),
/// compactions keeping `keep` entries behind each snapshot.
fn purge_runtime(dir: &TempDir, keep: u64) -> Runtime {
    let mut config = runtime_config(1, dir);
    config.raft.max_entry_bytes = 4096;
    config.raft.compact_keep_entries = keep;
    config.wal.segment_size = 64 << 10;
    config.wal_segments_soft_limit = 2;
    let runtime = Runtime::open(config).unwrap();
    start_solo_groups(&runtime, &[1, 2], 1);
    runtime
}

/// Proposes `count` entries of 1 KiB to `group`.
fn propose_kib_entries(runtime: &Runtime, group: GroupId, count: usize) {
    for n in 0..count {
        runtime.propose(group, &[n as u8; 1024]).unwrap();
    }
}

/// Polls, taking every snapshot the groups ask for, until the WAL grew
/// past its soft limit of two segments and is back within it, and `also`
/// holds; returns the snapshots asked for, as (group, index).
fn snapshot_until_the_old_segments_go(
    runtime: &Runtime,
    also: impl Fn() -> bool,
) -> std::collections::BTreeSet<(GroupId, u64)> {
    let mut asked = std::collections::BTreeSet::new();
    let mut grown = 0;
    poll_until(runtime, "the old segments go", |seen| {
        grown = grown.max(runtime.stats().wal_segments);
        snapshot_when_asked(runtime, seen, &mut asked);
        grown > 2 && runtime.stats().wal_segments <= 2 && also()
    });
    asked
}

#[test]
fn a_wal_past_its_soft_limit_asks_the_group_pinning_it_for_a_snapshot() {
    let dir = TempDir::new("runtime-purge");
    let runtime = purge_runtime(&dir, 0);
    // About five segments of group 1's entries; no snapshot threshold is
    // set, so only the WAL's size can prompt one.
    propose_kib_entries(&runtime, 1, 300);
    // The host snapshots every group it is asked to, as it should: group
    // 1 for its entries, group 2 for its founding entries, which sit in
    // the oldest segment too.
    let asked = snapshot_until_the_old_segments_go(&runtime, || true);
    assert!(
        asked.iter().any(|&(group, _)| group == 1),
        "group 1 was not asked: {asked:?}"
    );
}

/// A host whose snapshot failed (or that missed the ask) is asked again,
/// after ten election timeouts, not before: otherwise the group would pin
/// the shared WAL for good.
#[test]
fn a_snapshot_asked_for_and_not_taken_is_asked_for_again() {
    let dir = TempDir::new("runtime-reask");
    let runtime = purge_runtime(&dir, 0);
    propose_kib_entries(&runtime, 1, 300);
    // Ticks until group 1 is asked for a snapshot; the host does not take
    // it.
    let ticks_until_asked = |runtime: &Runtime| {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut ticks = 0u64;
        loop {
            assert!(Instant::now() < deadline, "group 1 was not asked in time");
            runtime.tick().unwrap();
            ticks += 1;
            for ready in runtime.poll(Duration::from_millis(5)).unwrap() {
                if let Some(last) = ready.batch.committed.last() {
                    runtime.ack_applied(ready.group, last.entry.index).unwrap();
                }
                if ready.group == 1 && ready.batch.snapshot_wanted.is_some() {
                    return ticks;
                }
            }
        }
    };
    ticks_until_asked(&runtime);
    // A hundred ticks (ten election timeouts of ten), less the tick or
    // two by which the host may have seen the first ask late.
    let again = ticks_until_asked(&runtime);
    assert!(again >= 95, "asked again after {again} ticks");
    // Taken this time: the old segments go.
    snapshot_until_the_old_segments_go(&runtime, || true);
}

/// Entries kept behind a snapshot for lagging followers
/// (`compact_keep_entries`) must not pin the shared WAL's oldest segment
/// for good: a group asked to free the WAL keeps none behind the snapshot
/// it takes, and a group whose snapshot already covers everything it
/// applied drops the entries it kept.
#[test]
fn entries_kept_behind_a_snapshot_do_not_pin_the_shared_wal() {
    let dir = TempDir::new("runtime-purge-kept");
    let runtime = purge_runtime(&dir, 1000);
    poll_until(&runtime, "group 2 leads", |_| {
        runtime.status(2).unwrap().role == Role::Leader
    });
    // Group 1 writes about a segment and a half, and its host snapshots
    // it unasked: the snapshot keeps all of those entries behind it.
    propose_kib_entries(&runtime, 1, 100);
    poll_until(&runtime, "group 1 applies its entries", |_| {
        runtime.status(1).unwrap().applied >= 100
    });
    let applied = runtime.status(1).unwrap().applied;
    let mut writer = runtime.begin_snapshot(1, applied).unwrap();
    writer.write(b"state").unwrap();
    writer.finish().unwrap();
    // Then group 2 fills the WAL; group 1 stays idle, so nothing it
    // applies ever prompts another snapshot.
    propose_kib_entries(&runtime, 2, 300);
    snapshot_until_the_old_segments_go(&runtime, || {
        runtime.status(1).unwrap().first_index > applied
    });
}

/// Whether groups 1..=`groups` are quiet on every running runtime.
fn every_replica_quiet(cluster: &Cluster, groups: GroupId) -> bool {
    cluster
        .runtimes
        .read()
        .iter()
        .flatten()
        .all(|r| (1..=groups).all(|g| r.status(g).is_ok_and(|s| s.quiescent)))
}

/// A runtime running solo groups 1..=`count` (quiescing after three idle
/// ticks), once every one of them leads and is quiet.
fn quiet_solo_groups(dir: &TempDir, count: GroupId) -> (Runtime, Vec<GroupId>) {
    let mut config = runtime_config(1, dir);
    config.raft.quiesce_tick = 3;
    let runtime = Runtime::open(config).unwrap();
    let groups: Vec<GroupId> = (1..=count).collect();
    start_solo_groups(&runtime, &groups, 1);
    poll_until(&runtime, "every group is quiet", |_| {
        groups.iter().all(|&g| quiet_leader(&runtime, g))
    });
    (runtime, groups)
}

fn quiet_leader(runtime: &Runtime, group: GroupId) -> bool {
    runtime
        .status(group)
        .is_ok_and(|s| s.quiescent && s.role == Role::Leader)
}

/// Quiet groups are ticked in bulk, once per check-in period (ten
/// election timeouts when this was written, more since), not once per
/// election timeout: a thousand ticks cost each of fifty quiet groups a
/// handful of rounds.
#[test]
fn quiet_groups_take_their_ticks_in_bulk() {
    let dir = TempDir::new("runtime-quiet");
    let (runtime, groups) = quiet_solo_groups(&dir, 50);
    let before = runtime.stats().group_steps;
    let ticks = 1000;
    for _ in 0..ticks {
        runtime.tick().unwrap();
        runtime.poll(Duration::ZERO).unwrap();
    }
    runtime.poll(Duration::from_millis(50)).unwrap();
    let steps = runtime.stats().group_steps - before;
    // Once per election timeout would be 50 × 100 rounds. The bound takes
    // a check-in period of ten election timeouts of ten ticks; the one of
    // QUIESCENT_CHECK_TIMEOUTS is longer, so the groups need fewer.
    let check_in_period = 10 * 10;
    let bound = groups.len() as u64 * (ticks / check_in_period + 1);
    assert!(
        steps <= bound,
        "{steps} group rounds in {ticks} ticks (bound {bound})"
    );
    assert!(groups.iter().all(|&g| runtime.status(g).unwrap().quiescent));
}

/// A tick reaches only the groups it concerns: the awake ones and the
/// quiet ones whose ticks are due (once per check-in period), not every
/// group, and no stopped one; a group started again is ticked again.
#[test]
fn ticks_reach_only_the_groups_due() {
    let dir = TempDir::new("runtime-tick-reach");
    let (runtime, groups) = quiet_solo_groups(&dir, 200);
    let quiet = |group: GroupId| quiet_leader(&runtime, group);
    let (running, stopped) = groups.split_at(groups.len() / 2);
    for &group in stopped {
        runtime.stop_group(group).unwrap();
    }
    // A quiet leader is due once per check-in period: its randomized
    // election timeout (10 to 19 ticks) times QUIESCENT_CHECK_TIMEOUTS.
    let check_ins = u64::from(embraft::core::QUIESCENT_CHECK_TIMEOUTS);
    let (shortest, longest) = (10 * check_ins, 20 * check_ins);
    let before = runtime.stats().tick_visits;
    let ticks = 3 * longest;
    for _ in 0..ticks {
        runtime.tick().unwrap();
        runtime.poll(Duration::ZERO).unwrap();
        // Time for the rounds of the groups reached, which place them
        // for the ticks to come.
        thread::sleep(Duration::from_millis(1));
    }
    let visits = runtime.stats().tick_visits - before;
    // A walk of every running group would be 100 visits per tick.
    let most = running.len() as u64 * (ticks / shortest + 1);
    // Each still reached once per period: none is lost by the ticker.
    let fewest = running.len() as u64 * (ticks / longest - 1);
    assert!(
        (fewest..=most).contains(&visits),
        "{visits} groups reached in {ticks} ticks (between {fewest} and {most})"
    );
    assert!(running.iter().all(|&g| quiet(g)));
    // Restarted from the WAL, a stopped group elects itself again, which
    // takes ticks, and goes quiet.
    runtime
        .start_group(stopped[0], GroupStart::default())
        .unwrap();
    poll_until(&runtime, "the restarted group leads, quiet", |_| {
        quiet(stopped[0])
    });
}

/// A quiet leader woken by a proposal keeps leading: the ticks that
/// gathered while it was quiet are given to it quiet, not in one burst
/// after it woke (a burst of several election timeouts with no answer
/// in between failed its check-quorum and deposed it).
#[test]
fn a_quiet_leader_woken_by_a_proposal_keeps_leading() {
    let groups = 20;
    let cluster = Cluster::with_options(groups, embraft::runtime::DEFAULT_CACHE_BYTES, false, 5);
    let limit = Duration::from_secs(60);
    cluster.wait_until("every group has a leader", limit, || {
        (1..=groups).all(|g| cluster.leader(g).is_some())
    });
    cluster.commit_everywhere("first");
    cluster.wait_until("every replica is quiet", limit, || {
        every_replica_quiet(&cluster, groups)
    });
    let before: Vec<(u64, u64)> = (1..=groups)
        .map(|g| {
            let leader = cluster.leader(g).unwrap();
            (leader.id(), leader.status(g).unwrap().term)
        })
        .collect();
    // About six election timeouts of 10 ms ticks, short of the followers'
    // check-ins (ten or more).
    thread::sleep(Duration::from_millis(600));
    cluster.commit_everywhere("woken");
    for (g, (id, term)) in (1..=groups).zip(before) {
        let leader = cluster.leader(g).unwrap();
        let now = (leader.id(), leader.status(g).unwrap().term);
        assert_eq!(
            now,
            (id, term),
            "group {g}: leader and term before and after"
        );
    }
}

/// Quiet groups whose leaders' runtime stops elect new leaders among the
/// other runtimes: their followers, ticked in bulk until their check-ins,
/// still check in, find the leader gone and campaign.
#[test]
fn quiet_groups_fail_over_when_their_leaders_runtime_stops() {
    let groups = 20;
    let mut cluster =
        Cluster::with_options(groups, embraft::runtime::DEFAULT_CACHE_BYTES, false, 5);
    let limit = Duration::from_secs(60);
    cluster.wait_until("every group has a leader", limit, || {
        (1..=groups).all(|g| cluster.leader(g).is_some())
    });
    let before = cluster.commit_everywhere("before");
    let quiet = |cluster: &Cluster| every_replica_quiet(cluster, groups);
    cluster.wait_until("every replica is quiet", limit, || quiet(&cluster));
    let stopped = cluster.leader(1).unwrap().id();
    cluster.close(stopped);
    let took = cluster.wait_until("every group is led by a running runtime", limit, || {
        (1..=groups).all(|g| cluster.leader(g).is_some_and(|r| r.id() != stopped))
    });
    eprintln!("quiet groups failed over in {took:?}");
    let after = cluster.commit_everywhere("after");
    for id in (1..=RUNTIMES).filter(|&id| id != stopped) {
        cluster.wait_until("the survivors apply every entry", limit, || {
            cluster.applied_everywhere(id, "before", &before)
                && cluster.applied_everywhere(id, "after", &after)
        });
    }
}

/// Ticks are owed to a group and merged until its next round, so no
/// number of them fills a mailbox, and the group still gets every one;
/// host inputs do fill it, and are refused as busy.
#[test]
fn ticks_are_never_refused_but_a_flood_of_proposals_is() {
    let dir = TempDir::new("runtime-ticks");
    let mut config = runtime_config(1, &dir);
    config.mailbox_capacity = 1;
    config.workers = 1;
    let runtime = Runtime::open(config).unwrap();
    let start = GroupStart {
        peers: vec![1],
        applied: 0,
    };
    runtime.start_group(1, start).unwrap();
    for _ in 0..20_000 {
        runtime.tick().unwrap();
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while runtime.status(1).unwrap().role != Role::Leader {
        assert!(Instant::now() < deadline, "the merged ticks never elected");
        runtime.tick().unwrap();
        thread::sleep(Duration::from_millis(1));
    }
    let busy = (0..200_000).any(|_| {
        matches!(
            runtime.propose(1, b"x"),
            Err(embraft::node::NodeError::Busy)
        )
    });
    assert!(busy, "a flood of proposals never filled the mailbox");
}

/// The measures move with the work: proposals committed and their
/// latencies, elections, messages by kind, WAL syncs and bytes.
#[test]
fn metrics_count_what_the_groups_did() {
    use embraft::metrics::MESSAGE_KINDS;
    let groups = 4;
    let cluster = Cluster::new(groups);
    let limit = Duration::from_secs(60);
    cluster.wait_until("every group has a leader", limit, || {
        (1..=groups).all(|g| cluster.leader(g).is_some())
    });
    let committed = cluster.commit_everywhere("m");
    let append = MESSAGE_KINDS.iter().position(|&k| k == "Append").unwrap();
    for group in 1..=groups {
        let leader = cluster.leader(group).unwrap();
        let metrics = leader.metrics(group).unwrap();
        let g = metrics.group;
        assert!(g.proposals_committed >= 1, "group {group}: {g:?}");
        assert_eq!(
            g.proposal_commit_latency.count, g.proposals_committed,
            "one latency per commit"
        );
        assert_eq!(
            g.proposal_commit_latency.buckets.iter().sum::<u64>(),
            g.proposal_commit_latency.count
        );
        assert!(g.elections_started >= 1 && g.leader_changes >= 1, "{g:?}");
        assert!(g.messages_sent[append] >= 2, "appends to both followers");
        assert!(g.cache_hit_entries >= 1, "appends read the cache");
        assert!(metrics.wal.sync_duration.count >= 1 && metrics.wal.bytes_written > 0);
        assert!(metrics.wal.batches_written >= 1);
        let follower = (1..=RUNTIMES)
            .find(|&id| id != leader.id())
            .and_then(|id| cluster.runtimes.read()[(id - 1) as usize].clone())
            .unwrap();
        let received = follower.metrics(group).unwrap().group.messages_received[append];
        assert!(received >= 1, "group {group}: the follower counted appends");
    }
    assert_eq!(committed.len() as u64, groups);
}
