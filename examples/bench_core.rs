//! Throughput of the embraft Raft core against tikv/raft-rs.
//!
//! Both libraries run the same 3-node cluster in one thread: no disk, no
//! network, messages handed from node to node in memory, every committed
//! entry applied on every node. One driver loop and one measurement serve
//! both; only the handling of each library's `Ready` differs, as their APIs
//! require. See docs/BENCHMARKS.md for what is measured and the figures.
//!
//! Usage: `cargo run --release --example bench_core -- [--json] [--runs N]
//! [--run-millis MS] [--filter TEXT] [--proposals N] [--profile LIBRARY]`.
//! With `--json`, standard output is exactly one JSON object; otherwise a
//! table. `--filter` keeps only the workloads whose name contains TEXT (e.g.
//! "1 KiB, one"); `--proposals` fixes the proposals per run instead of
//! calibrating; `--profile embraft|raft-rs` times that library alone (for
//! perf or callgrind).

use std::env;
use std::process;
use std::time::{Duration, Instant};

/// The voters of every benchmarked cluster. Node 1 is made leader.
const VOTERS: [u64; 3] = [1, 2, 3];
const LEADER: u64 = 1;

/// Limits given to both libraries alike.
const ELECTION_TICK: usize = 10;
const HEARTBEAT_TICK: usize = 1;
const MAX_INFLIGHT_MSGS: usize = 256;
const MAX_MSG_BYTES: u64 = 1 << 20;
const MAX_APPLY_BYTES: u64 = 16 << 20;

/// A run shorter than this is too short to time; calibration grows the run
/// until it is at least this long.
const MIN_CALIBRATION_RUN: Duration = Duration::from_millis(100);

// ---------------------------------------------------------------------------
// The shared harness
// ---------------------------------------------------------------------------

/// What a node's host does with committed entries: folds every payload, in
/// log order, into a checksum, so that applying can't be skipped and every
/// node can be checked to have applied the same thing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct StateMachine {
    applied_index: u64,
    applied_payloads: u64,
    checksum: u64,
}

impl StateMachine {
    /// Applies the entry at `index`: `payload` is what the host proposed,
    /// `None` for the library's own entries (a new leader's empty entry,
    /// membership), which only advance the applied index.
    fn apply(&mut self, index: u64, payload: Option<&[u8]>) {
        assert!(index > self.applied_index, "entry {index} applied twice");
        self.applied_index = index;
        if let Some(payload) = payload {
            self.applied_payloads += 1;
            self.checksum = fold_checksum(self.checksum, payload);
        }
    }
}

/// Folds one payload into a running checksum. Every byte is read (summed
/// as 64-bit words, which the compiler vectorizes, so applying costs both
/// libraries little and alike); mixing once per payload makes the checksum
/// depend on the order of payloads, and each payload starts with its own
/// sequence number.
fn fold_checksum(checksum: u64, payload: &[u8]) -> u64 {
    const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut words = payload.chunks_exact(8);
    let mut sum = payload.len() as u64;
    for word in &mut words {
        sum = sum.wrapping_add(u64::from_le_bytes(word.try_into().unwrap()));
    }
    for &byte in words.remainder() {
        sum = sum.wrapping_add(u64::from(byte));
    }
    (checksum.rotate_left(23) ^ sum).wrapping_mul(MULTIPLIER)
}

/// The payload of the `sequence`-th proposal of a run: `size` bytes that
/// differ from one proposal to the next.
fn payload(sequence: u64, size: usize) -> Vec<u8> {
    let mut data = vec![0xa5; size];
    data[..8].copy_from_slice(&sequence.to_le_bytes());
    data
}

/// One node of a library under test, as the shared driver sees it. An
/// implementation is the host of its library's core: it persists (in
/// memory), sends and applies what each `Ready` asks for.
trait BenchNode: Sized {
    type Message;
    /// The library's name in output.
    const LIBRARY: &'static str;

    /// A node of a new cluster whose voters are [`VOTERS`].
    fn new(id: u64) -> Self;
    fn campaign(&mut self);
    fn is_leader(&self) -> bool;
    /// Proposes `data` on this node (the leader); returns its log index.
    fn propose(&mut self, data: Vec<u8>) -> u64;
    /// Hands this node a message from a peer.
    fn receive(&mut self, message: Self::Message);
    fn recipient(message: &Self::Message) -> u64;
    /// Handles one pending `Ready`, if there is one: persists it, queues
    /// its messages on `outbox`, applies its committed entries and reports
    /// all of it back to the core. Returns false when nothing was pending.
    fn handle_ready(&mut self, outbox: &mut Vec<Self::Message>) -> bool;
    fn state_machine(&self) -> &StateMachine;
}

/// A cluster of [`VOTERS`] whose messages travel through one queue.
struct Cluster<N: BenchNode> {
    nodes: Vec<N>,
    in_flight: Vec<N::Message>,
    /// Rounds run and messages delivered so far.
    rounds: u64,
    messages: u64,
}

impl<N: BenchNode> Cluster<N> {
    /// A new cluster with [`LEADER`] elected and every entry so far (the
    /// new leader's own) applied on every node.
    fn with_leader() -> Self {
        let mut cluster = Cluster {
            nodes: VOTERS.iter().map(|&id| N::new(id)).collect(),
            in_flight: Vec::new(),
            rounds: 0,
            messages: 0,
        };
        cluster.leader_mut().campaign();
        cluster.run_until("an elected leader", |cluster| cluster.leader().is_leader());
        cluster.settle();
        cluster
    }

    fn node_mut(&mut self, id: u64) -> &mut N {
        &mut self.nodes[slot_of(id)]
    }

    fn leader(&self) -> &N {
        &self.nodes[slot_of(LEADER)]
    }

    fn leader_mut(&mut self) -> &mut N {
        self.node_mut(LEADER)
    }

    /// One round: every node handles its ready, then every message sent in
    /// it is delivered. Returns false when there was nothing to do.
    fn round(&mut self) -> bool {
        let mut progressed = false;
        for node in &mut self.nodes {
            progressed |= node.handle_ready(&mut self.in_flight);
        }
        progressed |= !self.in_flight.is_empty();
        self.rounds += 1;
        self.messages += self.in_flight.len() as u64;
        // Receiving sends nothing (replies come out of the next ready), so
        // the queue can be drained while nodes receive, and then reused.
        let mut delivering = std::mem::take(&mut self.in_flight);
        for message in delivering.drain(..) {
            self.node_mut(N::recipient(&message)).receive(message);
        }
        self.in_flight = delivering;
        progressed
    }

    /// Runs rounds until `reached` holds; a cluster with nothing left to do
    /// before that is a bug in the library or its host.
    fn run_until(&mut self, goal: &str, reached: impl Fn(&Self) -> bool) {
        while !reached(self) {
            assert!(self.round(), "{} cluster stalled before {goal}", N::LIBRARY);
        }
    }

    fn run_until_leader_applied(&mut self, index: u64) {
        self.run_until("the leader applied its proposals", |cluster| {
            cluster.leader().state_machine().applied_index >= index
        });
    }

    /// Runs until no node has anything left to do.
    fn settle(&mut self) {
        while self.round() {}
    }
}

/// Where node `id` sits in [`Cluster::nodes`].
fn slot_of(id: u64) -> usize {
    VOTERS
        .iter()
        .position(|&voter| voter == id)
        .expect("message to a node outside the cluster")
}

/// What one configuration proposes.
#[derive(Clone, Copy, Debug)]
struct Workload {
    payload_bytes: usize,
    /// Proposals made before running the cluster until all are applied on
    /// the leader; 1 means one at a time.
    batch: usize,
}

impl Workload {
    fn name(&self) -> String {
        let size = match self.payload_bytes {
            bytes if bytes % 1024 == 0 => format!("{} KiB", bytes / 1024),
            bytes => format!("{bytes} B"),
        };
        match self.batch {
            1 => format!("{size}, one at a time"),
            batch => format!("{size}, batches of {batch}"),
        }
    }

    /// The checksum every node must hold after applying `proposals`.
    fn expected_checksum(&self, proposals: usize) -> u64 {
        (0..proposals as u64).fold(0, |checksum, sequence| {
            fold_checksum(checksum, &payload(sequence, self.payload_bytes))
        })
    }
}

/// How long a run took, and how much the cluster did in it.
#[derive(Clone, Copy, Debug)]
struct RunStats {
    wall: Duration,
    /// CPU time of this thread, user and system: what the run cost, without
    /// the time other processes on a shared machine held the CPU.
    cpu: Duration,
    rounds: u64,
    messages: u64,
}

/// CPU time consumed so far by the calling thread.
fn thread_cpu_time() -> Duration {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `now` is a valid timespec for clock_gettime to fill.
    let status = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut now) };
    assert_eq!(status, 0, "the thread CPU clock is unavailable");
    Duration::new(now.tv_sec as u64, now.tv_nsec as u32)
}

/// Commits `proposals` proposals of `workload` on a fresh cluster and
/// returns how long it took: from the first proposal until every node has
/// applied the last. Election happens before the clock starts.
fn timed_run<N: BenchNode>(workload: Workload, proposals: usize) -> RunStats {
    let mut cluster = Cluster::<N>::with_leader();
    let first_index = cluster.leader().state_machine().applied_index + 1;
    let (rounds_before, messages_before) = (cluster.rounds, cluster.messages);
    let started = Instant::now();
    let cpu_started = thread_cpu_time();
    let mut sequence = 0;
    while sequence < proposals as u64 {
        let batch_end = (sequence + workload.batch as u64).min(proposals as u64);
        let mut last_index = 0;
        while sequence < batch_end {
            last_index = cluster
                .leader_mut()
                .propose(payload(sequence, workload.payload_bytes));
            sequence += 1;
        }
        cluster.run_until_leader_applied(last_index);
    }
    cluster.settle();
    let stats = RunStats {
        wall: started.elapsed(),
        cpu: thread_cpu_time() - cpu_started,
        rounds: cluster.rounds - rounds_before,
        messages: cluster.messages - messages_before,
    };

    let expected = StateMachine {
        applied_index: first_index + proposals as u64 - 1,
        applied_payloads: proposals as u64,
        checksum: workload.expected_checksum(proposals),
    };
    for node in &cluster.nodes {
        assert_eq!(
            *node.state_machine(),
            expected,
            "{} node applied something else than was proposed",
            N::LIBRARY
        );
    }
    stats
}

/// The number of proposals (a multiple of the batch) that takes about
/// `target` for `N`, found by timing runs of growing length.
fn calibrate<N: BenchNode>(workload: Workload, target: Duration) -> usize {
    let mut proposals = workload.batch.max(64);
    loop {
        let elapsed = timed_run::<N>(workload, proposals).wall;
        if elapsed >= MIN_CALIBRATION_RUN || elapsed >= target {
            let scaled = proposals as f64 * target.as_secs_f64() / elapsed.as_secs_f64();
            let batches = (scaled / workload.batch as f64).round().max(1.0) as usize;
            return batches * workload.batch;
        }
        proposals *= 2;
    }
}

/// The runs of one library on one workload.
struct Measurement {
    proposals_per_run: usize,
    /// Proposals committed per second of the thread's CPU time, one per run.
    cpu_rates: Vec<f64>,
    /// Proposals committed per second of wall time, one per run.
    wall_rates: Vec<f64>,
}

impl Measurement {
    fn new(proposals_per_run: usize, runs: usize) -> Self {
        Measurement {
            proposals_per_run,
            cpu_rates: Vec::with_capacity(runs),
            wall_rates: Vec::with_capacity(runs),
        }
    }

    /// The figure reported: median proposals per second of CPU time.
    fn median(&self) -> f64 {
        median(&self.cpu_rates)
    }

    fn wall_median(&self) -> f64 {
        median(&self.wall_rates)
    }

    fn record<N: BenchNode>(&mut self, workload: Workload) {
        let elapsed = timed_run::<N>(workload, self.proposals_per_run);
        let proposals = self.proposals_per_run as f64;
        self.cpu_rates.push(proposals / elapsed.cpu.as_secs_f64());
        self.wall_rates.push(proposals / elapsed.wall.as_secs_f64());
    }
}

fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

struct Comparison {
    workload: Workload,
    embraft: Measurement,
    raft_rs: Measurement,
}

impl Comparison {
    fn ratio(&self) -> f64 {
        self.embraft.median() / self.raft_rs.median()
    }

    fn wall_ratio(&self) -> f64 {
        self.embraft.wall_median() / self.raft_rs.wall_median()
    }
}

/// Measures both libraries on `workload`, alternating their runs so that
/// load from elsewhere on the machine falls on both alike.
fn compare(workload: Workload, options: &Options) -> Comparison {
    // Both libraries commit the same number of proposals, so their logs
    // (and the memory they hold) grow alike; the slower one's runs last
    // about `run_length`.
    let proposals_per_run = options.proposals.unwrap_or_else(|| {
        let embraft = calibrate::<embraft_host::Node>(workload, options.run_length);
        let raft_rs = calibrate::<raft_rs_host::Node>(workload, options.run_length);
        embraft.min(raft_rs)
    });
    // One untimed run each at full length first: the heap reaches the size
    // the timed runs need, so none of them pays for growing it.
    timed_run::<embraft_host::Node>(workload, proposals_per_run);
    timed_run::<raft_rs_host::Node>(workload, proposals_per_run);
    let mut embraft = Measurement::new(proposals_per_run, options.runs);
    let mut raft_rs = Measurement::new(proposals_per_run, options.runs);
    for _ in 0..options.runs {
        embraft.record::<embraft_host::Node>(workload);
        raft_rs.record::<raft_rs_host::Node>(workload);
    }
    Comparison {
        workload,
        embraft,
        raft_rs,
    }
}

// ---------------------------------------------------------------------------
// embraft's host
// ---------------------------------------------------------------------------

mod embraft_host {
    use super::*;
    use embraft::core::{Config, EntryKind, InitialState, Message, Raft, Role};

    pub struct Node {
        raft: Raft,
        state_machine: StateMachine,
    }

    impl BenchNode for Node {
        type Message = Message;
        const LIBRARY: &'static str = "embraft";

        fn new(id: u64) -> Self {
            let config = Config {
                id,
                election_tick: ELECTION_TICK as u32,
                heartbeat_tick: HEARTBEAT_TICK as u32,
                pre_vote: true,
                check_quorum: true,
                max_inflight_msgs: MAX_INFLIGHT_MSGS,
                max_msg_bytes: MAX_MSG_BYTES,
                max_apply_bytes: MAX_APPLY_BYTES,
                seed: id,
                ..Config::default()
            };
            let raft = Raft::new(config, InitialState::bootstrap(&VOTERS))
                .expect("embraft refused the benchmark's configuration");
            Node {
                raft,
                state_machine: StateMachine::default(),
            }
        }

        fn campaign(&mut self) {
            self.raft.campaign();
        }

        fn is_leader(&self) -> bool {
            self.raft.role() == Role::Leader
        }

        fn propose(&mut self, data: Vec<u8>) -> u64 {
            let (index, _term) = self.raft.propose(data).expect("embraft refused a proposal");
            index
        }

        fn receive(&mut self, message: Message) {
            self.raft.step(message).expect("embraft refused a message");
        }

        fn recipient(message: &Message) -> u64 {
            message.to
        }

        fn handle_ready(&mut self, outbox: &mut Vec<Message>) -> bool {
            if !self.raft.has_ready() {
                return false;
            }
            let ready = self.raft.ready();
            assert!(
                ready.snapshot.is_none()
                    && ready.snapshots_to_send.is_empty()
                    && ready.snapshot_chunks.is_empty(),
                "unexpected snapshot: nothing compacts the log here"
            );
            outbox.extend(ready.messages);
            // The log lives in the core's memory: persisting the batch is
            // only reporting it done.
            outbox.extend(ready.persisted_messages);
            self.raft.on_persisted(ready.number);
            for entry in &ready.committed_entries {
                let payload = (entry.kind == EntryKind::Normal).then_some(&entry.data[..]);
                self.state_machine.apply(entry.index, payload);
            }
            if !ready.committed_entries.is_empty() {
                self.raft.on_applied(self.state_machine.applied_index);
            }
            true
        }

        fn state_machine(&self) -> &StateMachine {
            &self.state_machine
        }
    }
}

// ---------------------------------------------------------------------------
// raft-rs's host
// ---------------------------------------------------------------------------

mod raft_rs_host {
    use super::*;
    use raft::eraftpb::{Entry, EntryType, Message};
    use raft::storage::MemStorage;
    use raft::{Config, RawNode, StateRole};

    pub struct Node {
        raw_node: RawNode<MemStorage>,
        state_machine: StateMachine,
    }

    impl Node {
        fn apply(&mut self, entries: &[Entry]) {
            for entry in entries {
                // A new leader's entry is an empty normal entry.
                let is_payload = entry.get_entry_type() == EntryType::EntryNormal
                    && !entry.get_data().is_empty();
                let payload = is_payload.then_some(entry.get_data());
                self.state_machine.apply(entry.get_index(), payload);
            }
        }
    }

    impl BenchNode for Node {
        type Message = Message;
        const LIBRARY: &'static str = "raft-rs";

        fn new(id: u64) -> Self {
            let config = Config {
                id,
                election_tick: ELECTION_TICK,
                heartbeat_tick: HEARTBEAT_TICK,
                pre_vote: true,
                check_quorum: true,
                max_inflight_msgs: MAX_INFLIGHT_MSGS,
                max_size_per_msg: MAX_MSG_BYTES,
                max_committed_size_per_ready: MAX_APPLY_BYTES,
                batch_append: true,
                ..Config::default()
            };
            let storage = MemStorage::new_with_conf_state((VOTERS.to_vec(), vec![]));
            let discard_logs = slog::Logger::root(slog::Discard, slog::o!());
            let raw_node = RawNode::new(&config, storage, &discard_logs)
                .expect("raft-rs refused the benchmark's configuration");
            Node {
                raw_node,
                state_machine: StateMachine::default(),
            }
        }

        fn campaign(&mut self) {
            self.raw_node
                .campaign()
                .expect("raft-rs refused to campaign");
        }

        fn is_leader(&self) -> bool {
            self.raw_node.raft.state == StateRole::Leader
        }

        fn propose(&mut self, data: Vec<u8>) -> u64 {
            self.raw_node
                .propose(Vec::new(), data)
                .expect("raft-rs refused a proposal");
            self.raw_node.raft.raft_log.last_index()
        }

        fn receive(&mut self, message: Message) {
            self.raw_node
                .step(message)
                .expect("raft-rs refused a message");
        }

        fn recipient(message: &Message) -> u64 {
            message.get_to()
        }

        fn handle_ready(&mut self, outbox: &mut Vec<Message>) -> bool {
            if !self.raw_node.has_ready() {
                return false;
            }
            let mut ready = self.raw_node.ready();
            assert!(
                ready.snapshot().get_metadata().index == 0,
                "unexpected snapshot"
            );
            outbox.extend(ready.take_messages());
            self.apply(&ready.take_committed_entries());
            {
                let storage = self.raw_node.store();
                let mut storage = storage.wl();
                storage
                    .append(ready.entries())
                    .expect("MemStorage refused entries");
                if let Some(hard_state) = ready.hs() {
                    storage.set_hardstate(hard_state.clone());
                }
            }
            outbox.extend(ready.take_persisted_messages());
            let mut light_ready = self.raw_node.advance(ready);
            if let Some(commit) = light_ready.commit_index() {
                self.raw_node.store().wl().mut_hard_state().commit = commit;
            }
            outbox.extend(light_ready.take_messages());
            self.apply(&light_ready.take_committed_entries());
            self.raw_node.advance_apply();
            true
        }

        fn state_machine(&self) -> &StateMachine {
            &self.state_machine
        }
    }
}

// ---------------------------------------------------------------------------
// Command line and output
// ---------------------------------------------------------------------------

struct Options {
    json: bool,
    runs: usize,
    run_length: Duration,
    /// Only the workloads whose name contains this (for profiling).
    filter: Option<String>,
    /// Proposals per run, instead of calibrating to `run_length`.
    proposals: Option<usize>,
    /// Run only this library, printing only the time of each run (for
    /// profiling one library).
    profile: Option<Library>,
}

#[derive(Clone, Copy)]
enum Library {
    Embraft,
    RaftRs,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        json: false,
        runs: 5,
        run_length: Duration::from_millis(700),
        filter: None,
        proposals: None,
        profile: None,
    };
    let mut args = env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> Result<u64, String> {
            let value = args.next().ok_or(format!("{name} needs a value"))?;
            match value.parse() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(format!("{name} takes a positive integer, not {value:?}")),
            }
        };
        match arg.as_str() {
            "--json" => options.json = true,
            "--runs" => options.runs = number("--runs")? as usize,
            "--run-millis" => options.run_length = Duration::from_millis(number("--run-millis")?),
            "--filter" => options.filter = Some(args.next().ok_or("--filter needs a value")?),
            "--proposals" => options.proposals = Some(number("--proposals")? as usize),
            "--profile" => {
                options.profile = match args.next().as_deref() {
                    Some("embraft") => Some(Library::Embraft),
                    Some("raft-rs") => Some(Library::RaftRs),
                    _ => return Err("--profile takes embraft or raft-rs".into()),
                }
            }
            _ => return Err(format!("unknown argument {arg:?}")),
        }
    }
    Ok(options)
}

const WORKLOADS: [Workload; 6] = [
    Workload {
        payload_bytes: 16,
        batch: 1,
    },
    Workload {
        payload_bytes: 128,
        batch: 1,
    },
    Workload {
        payload_bytes: 1024,
        batch: 1,
    },
    Workload {
        payload_bytes: 16,
        batch: 64,
    },
    Workload {
        payload_bytes: 128,
        batch: 64,
    },
    Workload {
        payload_bytes: 1024,
        batch: 64,
    },
];

fn json_rates(rates: &[f64]) -> String {
    let rates: Vec<String> = rates.iter().map(|rate| format!("{rate:.0}")).collect();
    format!("[{}]", rates.join(","))
}

fn json_measurement(measurement: &Measurement) -> String {
    format!(
        "{{\"proposals_per_sec\":{:.0},\"wall_proposals_per_sec\":{:.0},\"proposals_per_run\":{},\"runs_proposals_per_sec\":{},\"runs_wall_proposals_per_sec\":{}}}",
        measurement.median(),
        measurement.wall_median(),
        measurement.proposals_per_run,
        json_rates(&measurement.cpu_rates),
        json_rates(&measurement.wall_rates)
    )
}

fn json_report(options: &Options, comparisons: &[Comparison]) -> String {
    let configs: Vec<String> = comparisons
        .iter()
        .map(|comparison| {
            format!(
                "{{\"name\":\"{}\",\"payload_bytes\":{},\"batch\":{},\"embraft\":{},\"raft_rs\":{},\"ratio\":{:.3},\"wall_ratio\":{:.3}}}",
                comparison.workload.name(),
                comparison.workload.payload_bytes,
                comparison.workload.batch,
                json_measurement(&comparison.embraft),
                json_measurement(&comparison.raft_rs),
                comparison.ratio(),
                comparison.wall_ratio()
            )
        })
        .collect();
    format!(
        "{{\"benchmark\":\"core\",\"cluster_size\":{},\"statistic\":\"median\",\"clock\":\"thread_cpu_time\",\"runs\":{},\"configs\":[{}]}}",
        VOTERS.len(),
        options.runs,
        configs.join(",")
    )
}

fn print_table(comparisons: &[Comparison]) {
    println!(
        "{:<26} {:>12} {:>12} {:>7} {:>12}",
        "proposals committed/s", "embraft", "raft-rs", "ratio", "wall ratio"
    );
    for comparison in comparisons {
        println!(
            "{:<26} {:>12.0} {:>12.0} {:>6.2}x {:>11.2}x",
            comparison.workload.name(),
            comparison.embraft.median(),
            comparison.raft_rs.median(),
            comparison.ratio(),
            comparison.wall_ratio()
        );
    }
}

/// Times `--runs` runs of one library on each selected workload, for a
/// profiler to watch: no calibration, no comparison.
fn profile(library: Library, workloads: &[Workload], options: &Options) {
    let proposals = options.proposals.unwrap_or(100_000);
    for &workload in workloads {
        for _ in 0..options.runs {
            let stats = match library {
                Library::Embraft => timed_run::<embraft_host::Node>(workload, proposals),
                Library::RaftRs => timed_run::<raft_rs_host::Node>(workload, proposals),
            };
            println!(
                "{}: {proposals} proposals in {:.3} s ({:.3} s of CPU), \
                 {:.2} rounds and {:.2} messages per proposal",
                workload.name(),
                stats.wall.as_secs_f64(),
                stats.cpu.as_secs_f64(),
                stats.rounds as f64 / proposals as f64,
                stats.messages as f64 / proposals as f64
            );
        }
    }
}

/// Keeps memory freed at the end of a run in the process instead of giving
/// it back to the system, so that every timed run after the first reuses
/// warm pages: otherwise a run's speed depends on how much memory the
/// previous run (of either library) happened to return, and page faults
/// from growing the heap swamp what the libraries themselves cost.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes a tunable of glibc's allocator; it is
    // called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}

fn main() {
    keep_freed_memory();
    let options = parse_options().unwrap_or_else(|error| {
        eprintln!("bench_core: {error}");
        eprintln!(
            "usage: bench_core [--json] [--runs N] [--run-millis MS] [--filter TEXT] \
             [--proposals N] [--profile embraft|raft-rs]"
        );
        process::exit(2);
    });
    let workloads: Vec<Workload> = WORKLOADS
        .into_iter()
        .filter(|workload| {
            let name = workload.name();
            options
                .filter
                .as_ref()
                .map_or(true, |filter| name.contains(filter.as_str()))
        })
        .collect();
    if let Some(library) = options.profile {
        profile(library, &workloads, &options);
        return;
    }
    if !options.json {
        println!(
            "3-node cluster, one thread, in memory; median of {} runs of ~{} ms each, \
             per second of CPU time (wall ratio: per second of wall time)",
            options.runs,
            options.run_length.as_millis()
        );
    }
    let comparisons: Vec<Comparison> = workloads
        .iter()
        .map(|&workload| compare(workload, &options))
        .collect();
    if options.json {
        println!("{}", json_report(&options, &comparisons));
    } else {
        print_table(&comparisons);
    }
}
