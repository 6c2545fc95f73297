//! Many Raft groups on three runtimes in one process: an in-memory
//! transport between them, a real synced WAL each.
//!
//! Measured, in order:
//! The transport moves one group frame per peer per poll
//! (`frames_per_peer`, `Runtime::step_frame`; docs/WIRE.md).
//!
//! 1. `--groups` groups (default 10,000) start on every runtime; the time
//!    until every group has a leader.
//! 2. Idle: with quiescence on, the groups go quiet; then the CPU time of
//!    each runtime's threads over `--idle-seconds` (default 30), and the
//!    resident memory the groups added, per group replica.
//! 3. Load: `--proposers` proposals (default 256) kept in flight, spread
//!    over `--active-groups` groups (default 1,000), for `--load-seconds`;
//!    then the same with all proposers on one group: committed proposals
//!    per second of each, their ratio, and WAL syncs per second per
//!    runtime.
//! 4. Restart: runtime 1 is filled to `--restart-wal-mib` of WAL (default
//!    1,024) across the groups, stopped (after 2 s, or once its host
//!    stops applying, up to `--settle-seconds`), and reopened with every
//!    group started; the time that takes, its CPU time, and the entries
//!    not yet applied that the groups load.
//!
//! Usage: `cargo run --release --example bench_groups -- [--json]
//! [--groups N] [--active-groups N] [--proposers N] [--idle-seconds S]
//! [--load-seconds S] [--restart-wal-mib M] [--payload BYTES] [--workers N]
//! [--start-threads N] [--settle-seconds S] [--commit-broadcast]
//! [--wal-segments-soft-limit N]`.
//! `--commit-broadcast` runs the groups with the core's default of
//! broadcasting each new commit index instead of the runtime's
//! (`skip_commit_broadcast`). With
//! `--json`, standard output is exactly one JSON object; progress goes to
//! standard error. See docs/BENCHMARKS.md.

use embraft::core::Role;
use embraft::node::{LogLevel, ProposalResult};
use embraft::runtime::{frames_per_peer, GroupId, GroupStart, Runtime, RuntimeConfig};
use embraft::wal::WalOptions;
use parking_lot::RwLock;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

const RUNTIMES: u64 = 3;
/// Logical time: a tick every 100 ms, an election timeout of 1-2 s.
const TICK: Duration = Duration::from_millis(100);
const ELECTION_TICK: u32 = 10;
/// Idle ticks before a caught-up leader quiets its group.
const QUIESCE_TICK: u32 = 20;

struct Options {
    json: bool,
    groups: u64,
    active_groups: u64,
    proposers: u64,
    idle_seconds: u64,
    load_seconds: u64,
    restart_wal_mib: u64,
    payload: usize,
    /// Worker threads per runtime (0: one per core).
    workers: usize,
    /// Seconds to wait, at most, after the fill for runtime 1's host to
    /// stop applying before the restart (0: a fixed 2 s).
    settle_seconds: u64,
    /// The shared WAL's segment soft limit (see
    /// `RuntimeConfig::wal_segments_soft_limit`; 0: no purge feedback).
    wal_segments_soft_limit: usize,
    /// Broadcast each new commit index (the core's default) rather than
    /// skip it (the runtime's).
    commit_broadcast: bool,
}

fn parse_options() -> Options {
    let mut options = Options {
        json: false,
        groups: 10_000,
        active_groups: 1_000,
        proposers: 256,
        idle_seconds: 30,
        load_seconds: 10,
        restart_wal_mib: 1024,
        payload: 16,
        workers: 0,
        settle_seconds: 0,
        wal_segments_soft_limit: embraft::runtime::DEFAULT_WAL_SEGMENTS_SOFT_LIMIT,
        commit_broadcast: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || -> u64 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| usage(&format!("{arg} needs a number")))
        };
        match arg.as_str() {
            "--json" => options.json = true,
            "--commit-broadcast" => options.commit_broadcast = true,
            "--groups" => options.groups = value(),
            "--active-groups" => options.active_groups = value(),
            "--proposers" => options.proposers = value(),
            "--idle-seconds" => options.idle_seconds = value(),
            "--load-seconds" => options.load_seconds = value(),
            "--restart-wal-mib" => options.restart_wal_mib = value(),
            "--payload" => options.payload = value() as usize,
            "--workers" => options.workers = value() as usize,
            "--start-threads" => START_THREADS.store(value(), Ordering::Relaxed),
            "--settle-seconds" => options.settle_seconds = value(),
            "--wal-segments-soft-limit" => options.wal_segments_soft_limit = value() as usize,
            other => usage(&format!("unknown argument {other}")),
        }
    }
    options.active_groups = options.active_groups.clamp(1, options.groups);
    options
}

fn usage(why: &str) -> ! {
    eprintln!(
        "{why}\nusage: bench_groups [--json] [--groups N] [--active-groups N] [--proposers N] \
         [--idle-seconds S] [--load-seconds S] [--restart-wal-mib M] [--payload BYTES] \
         [--workers N] [--start-threads N] [--settle-seconds S] [--commit-broadcast] \
         [--wal-segments-soft-limit N]"
    );
    std::process::exit(2)
}

/// A scratch directory removed when dropped.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let path = std::env::temp_dir().join(format!(
            "embraft-bench-groups-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        Scratch(path)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime_config(id: u64, dir: &Path, options: &Options) -> RuntimeConfig {
    let mut config = RuntimeConfig::new(id, dir);
    config.workers = options.workers;
    config.wal = WalOptions {
        segment_size: 64 << 20,
        ..WalOptions::default()
    };
    // The runtime's raft defaults, not the core's.
    config.raft.election_tick = ELECTION_TICK;
    config.raft.heartbeat_tick = 1;
    config.raft.quiesce_tick = QUIESCE_TICK;
    if options.commit_broadcast {
        config.raft.skip_commit_broadcast = false;
    }
    config.log_level = LogLevel::Off;
    config.wal_segments_soft_limit = options.wal_segments_soft_limit;
    config
}

/// What every poller does with a committed proposal of the load phase:
/// count it and put the next one in its place.
struct Load {
    on: AtomicBool,
    committed: AtomicU64,
    /// Groups proposals go to: `first..first + count`.
    first: AtomicU64,
    count: AtomicU64,
    next: AtomicU64,
    payload: Vec<u8>,
}

struct Cluster {
    runtimes: Arc<RwLock<Vec<Option<Arc<Runtime>>>>>,
    /// Each group's leader, as the pollers last saw it (runtime id, 0 when
    /// unknown).
    leaders: Arc<Vec<AtomicU64>>,
    /// What runtime 1's host applied of each group: given back at its
    /// restart, as a host with a durable state machine does.
    applied: Arc<Vec<AtomicU64>>,
    load: Arc<Load>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    pollers: Vec<Option<(Arc<AtomicBool>, JoinHandle<()>)>>,
}

impl Cluster {
    fn new(groups: u64, payload: usize) -> Cluster {
        Cluster {
            runtimes: Arc::new(RwLock::new(vec![None, None, None])),
            leaders: Arc::new((0..=groups).map(|_| AtomicU64::new(0)).collect()),
            applied: Arc::new((0..=groups).map(|_| AtomicU64::new(0)).collect()),
            load: Arc::new(Load {
                on: AtomicBool::new(false),
                committed: AtomicU64::new(0),
                first: AtomicU64::new(1),
                count: AtomicU64::new(1),
                next: AtomicU64::new(0),
                payload: vec![7; payload],
            }),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            pollers: vec![None, None, None],
        }
    }

    fn start_ticker(&mut self) {
        let runtimes = self.runtimes.clone();
        let stop = self.stop.clone();
        self.threads.push(thread::spawn(move || {
            let mut next = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                next += TICK;
                thread::sleep(next.saturating_duration_since(Instant::now()));
                for runtime in runtimes.read().iter().flatten() {
                    let _ = runtime.tick();
                }
            }
        }));
    }

    /// Puts `runtime` in place as id `id` and starts its poller: it
    /// delivers messages, acknowledges applies, tracks leaders and keeps
    /// the load going.
    fn attach(&mut self, runtime: Arc<Runtime>) {
        let index = (runtime.id() - 1) as usize;
        self.runtimes.write()[index] = Some(runtime.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let poller_stop = stop.clone();
        let runtimes = self.runtimes.clone();
        let leaders = self.leaders.clone();
        let applied = self.applied.clone();
        let load = self.load.clone();
        let handle = thread::spawn(move || {
            while !poller_stop.load(Ordering::Relaxed) {
                let Ok(readies) = runtime.poll(Duration::from_millis(20)) else {
                    return;
                };
                let mut committed = 0;
                // One group frame per peer, as a stream transport sends.
                {
                    let targets = runtimes.read();
                    for (peer, frame) in frames_per_peer(&readies) {
                        if let Some(target) = &targets[(peer - 1) as usize] {
                            let _ = target.step_frame(&frame);
                        }
                    }
                }
                for ready in readies {
                    let group = ready.group;
                    let batch = ready.batch;
                    if batch.state_changed && batch.state.role == Role::Leader {
                        leaders[group as usize].store(runtime.id(), Ordering::Relaxed);
                    }
                    committed += batch
                        .outcomes
                        .iter()
                        .filter(|o| matches!(o.result, ProposalResult::Committed { .. }))
                        .count() as u64;
                    // Dropped proposals (a leader change) are replaced too.
                    let replace = batch.outcomes.len() as u64;
                    if let Some(last) = batch.committed.last() {
                        let _ = runtime.ack_applied(group, last.entry.index);
                        if runtime.id() == 1 {
                            applied[group as usize].store(last.entry.index, Ordering::Relaxed);
                        }
                    }
                    if load.on.load(Ordering::Relaxed) {
                        for _ in 0..replace {
                            propose_next(&runtimes, &leaders, &load);
                        }
                    }
                }
                load.committed.fetch_add(committed, Ordering::Relaxed);
            }
        });
        self.pollers[index] = Some((stop, handle));
    }

    fn detach(&mut self, id: u64) -> Arc<Runtime> {
        let index = (id - 1) as usize;
        if let Some((stop, poller)) = self.pollers[index].take() {
            stop.store(true, Ordering::Relaxed);
            let _ = poller.join();
        }
        self.runtimes.write()[index].take().unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for id in 1..=RUNTIMES {
            if self.pollers[(id - 1) as usize].is_some() {
                drop(self.detach(id));
            }
        }
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Proposes the load's payload to the next group in turn, at its leader.
fn propose_next(runtimes: &RwLock<Vec<Option<Arc<Runtime>>>>, leaders: &[AtomicU64], load: &Load) {
    let count = load.count.load(Ordering::Relaxed);
    let n = load.next.fetch_add(1, Ordering::Relaxed);
    let group = load.first.load(Ordering::Relaxed) + n % count;
    let leader = leaders[group as usize].load(Ordering::Relaxed);
    let targets = runtimes.read();
    let runtime = match leader {
        0 => targets.iter().flatten().next(),
        id => targets[(id - 1) as usize].as_ref(),
    };
    if let Some(runtime) = runtime {
        if runtime.propose(group, &load.payload).is_err() {
            // Not placed: try again on the next group.
            drop(targets);
            load.next.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Resident memory of this process, in bytes.
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// CPU seconds of this process's threads whose name starts with `prefix`.
/// CPU time (user + system) of the whole process: the runtimes, the
/// pollers that carry their messages, and the proposers.
fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    cpu_seconds_of_stat(&stat)
}

/// utime + stime of a `/proc/.../stat` line, in seconds.
fn cpu_seconds_of_stat(stat: &str) -> f64 {
    let ticks_per_second = 100.0;
    // Fields after the parenthesised name: utime and stime are the 14th
    // and 15th of the line.
    let after = stat.rsplit(')').next().unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
    let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
    (utime + stime) as f64 / ticks_per_second
}

fn thread_cpu_seconds(prefix: &str) -> f64 {
    let mut total = 0.0;
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        if !name.trim_end().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("stat")).unwrap_or_default();
        total += cpu_seconds_of_stat(&stat);
    }
    total
}

fn progress(json: bool, text: String) {
    if json {
        eprintln!("{text}");
    } else {
        println!("{text}");
    }
}

/// CPU seconds the calling thread has run (user and system): what a step
/// of the restart costs, apart from the time it waits for a core.
fn this_thread_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// Threads starting the groups (`--start-threads`).
static START_THREADS: AtomicU64 = AtomicU64::new(1);

/// Starts every group: founded, or restarted with what the host applied;
/// from `--start-threads` threads at once. Returns the CPU seconds those
/// threads ran.
fn start_all(runtime: &Runtime, groups: u64, applied: Option<&[AtomicU64]>) -> f64 {
    let threads = START_THREADS.load(Ordering::Relaxed).max(1);
    thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    for group in (1..=groups).filter(|g| g % threads == t) {
                        let start = match applied {
                            None => GroupStart {
                                peers: (1..=RUNTIMES).collect(),
                                applied: 0,
                            },
                            Some(applied) => GroupStart {
                                peers: Vec::new(),
                                applied: applied[group as usize].load(Ordering::Relaxed),
                            },
                        };
                        runtime.start_group(group, start).unwrap();
                    }
                    this_thread_cpu_seconds()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    })
}

fn wait_for(what: &str, limit: Duration, mut done: impl FnMut() -> bool) -> f64 {
    let start = Instant::now();
    while !done() {
        if start.elapsed() > limit {
            eprintln!("timed out waiting for {what}");
            std::process::exit(1);
        }
        thread::sleep(Duration::from_millis(20));
    }
    start.elapsed().as_secs_f64()
}

fn all_led(cluster: &Cluster, groups: u64) -> bool {
    let runtimes = cluster.runtimes.read();
    (1..=groups).all(|g| {
        runtimes
            .iter()
            .flatten()
            .any(|r| r.status(g).is_ok_and(|s| s.role == Role::Leader))
    })
}

/// Committed proposals per second with the load spread over
/// `first..first + count`, WAL syncs per second per runtime, group steps
/// per committed proposal (all runtimes), and the process's CPU time per
/// committed proposal in microseconds (which other work on the machine
/// disturbs less than the rate).
fn measure_load(
    cluster: &Cluster,
    options: &Options,
    first: GroupId,
    count: u64,
) -> (f64, f64, f64, f64) {
    let load = &cluster.load;
    load.first.store(first, Ordering::Relaxed);
    load.count.store(count, Ordering::Relaxed);
    load.on.store(true, Ordering::Relaxed);
    for _ in 0..options.proposers {
        propose_next(&cluster.runtimes, &cluster.leaders, load);
    }
    // A second to reach a steady state, then the measurement.
    thread::sleep(Duration::from_secs(1));
    let totals = || -> (u64, u64) {
        cluster
            .runtimes
            .read()
            .iter()
            .flatten()
            .map(|r| r.stats())
            .fold((0, 0), |(syncs, steps), s| {
                (syncs + s.syncs, steps + s.group_steps)
            })
    };
    let (syncs_before, steps_before) = totals();
    let before = load.committed.load(Ordering::Relaxed);
    let cpu_before = process_cpu_seconds();
    let start = Instant::now();
    thread::sleep(Duration::from_secs(options.load_seconds));
    let committed = load.committed.load(Ordering::Relaxed) - before;
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = process_cpu_seconds() - cpu_before;
    let (syncs_after, steps_after) = totals();
    let syncs = syncs_after - syncs_before;
    let steps = steps_after - steps_before;
    load.on.store(false, Ordering::Relaxed);
    // Let the proposals in flight drain.
    thread::sleep(Duration::from_secs(1));
    (
        committed as f64 / elapsed,
        syncs as f64 / elapsed / RUNTIMES as f64,
        steps as f64 / committed.max(1) as f64,
        cpu * 1e6 / committed.max(1) as f64,
    )
}

fn main() {
    let options = parse_options();
    let json = options.json;
    let groups = options.groups;
    let dirs: Vec<Scratch> = (1..=RUNTIMES)
        .map(|id| Scratch::new(&id.to_string()))
        .collect();
    let mut cluster = Cluster::new(groups, options.payload);

    // 1. Start and elect.
    let rss_before = resident_bytes();
    let start = Instant::now();
    for id in 1..=RUNTIMES {
        let runtime = Arc::new(
            Runtime::open(runtime_config(id, &dirs[(id - 1) as usize].0, &options)).unwrap(),
        );
        start_all(&runtime, groups, None);
        cluster.attach(runtime);
    }
    cluster.start_ticker();
    wait_for("every group to elect", Duration::from_secs(600), || {
        all_led(&cluster, groups)
    });
    let elect_all_seconds = start.elapsed().as_secs_f64();
    progress(
        json,
        format!("{groups} groups on {RUNTIMES} runtimes elected in {elect_all_seconds:.2} s"),
    );

    // 2. Idle.
    let quiet_wait = wait_for("the groups to go quiet", Duration::from_secs(600), || {
        let runtimes = cluster.runtimes.read();
        (1..=groups).all(|g| {
            runtimes
                .iter()
                .flatten()
                .all(|r| r.status(g).is_ok_and(|s| s.quiescent))
        })
    });
    progress(json, format!("all quiet after {quiet_wait:.2} s more"));
    let resident_bytes_per_group =
        resident_bytes().saturating_sub(rss_before) as f64 / (groups * RUNTIMES) as f64;
    let cpu_before: Vec<f64> = (1..=RUNTIMES)
        .map(|id| thread_cpu_seconds(&format!("embraft-rt{id}-")))
        .collect();
    let idle_start = Instant::now();
    thread::sleep(Duration::from_secs(options.idle_seconds));
    let idle_elapsed = idle_start.elapsed().as_secs_f64();
    let idle_cpu_percent: Vec<f64> = (1..=RUNTIMES)
        .map(|id| {
            let used =
                thread_cpu_seconds(&format!("embraft-rt{id}-")) - cpu_before[(id - 1) as usize];
            100.0 * used / idle_elapsed
        })
        .collect();
    let idle_worst = idle_cpu_percent.iter().cloned().fold(0.0, f64::max);
    progress(
        json,
        format!(
            "idle over {idle_elapsed:.0} s: CPU per runtime {idle_cpu_percent:.2?} % of a core; \
             {resident_bytes_per_group:.0} resident bytes per group replica"
        ),
    );

    // 3. Load.
    let (aggregate, syncs_per_sec, steps, cpu_us) =
        measure_load(&cluster, &options, 1, options.active_groups);
    progress(
        json,
        format!(
            "{} proposers over {} groups: {aggregate:.0} committed proposals/s, \
             {syncs_per_sec:.0} WAL syncs/s per runtime, {steps:.2} group steps and \
             {cpu_us:.1} µs of CPU per proposal",
            options.proposers, options.active_groups
        ),
    );
    let (single, single_syncs, single_steps, single_cpu_us) =
        measure_load(&cluster, &options, 1, 1);
    progress(
        json,
        format!(
            "{} proposers on one group: {single:.0} committed proposals/s, \
             {single_syncs:.0} WAL syncs/s per runtime, {single_steps:.3} group steps and \
             {single_cpu_us:.1} µs of CPU per proposal",
            options.proposers
        ),
    );
    let ratio = aggregate / single.max(1.0);

    // 4. Restart of runtime 1 with a full WAL.
    let fill_payload = vec![3u8; 4096];
    let target = options.restart_wal_mib << 20;
    let wal_bytes = |dir: &Path| -> u64 {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0)
    };
    let filled = {
        let runtimes = cluster.runtimes.clone();
        let mut proposed: u64 = 0;
        let fill_start = Instant::now();
        while proposed * fill_payload.len() as u64 * 11 / 10 < target {
            let leaders = &cluster.leaders;
            let group = 1 + proposed % groups;
            let leader = leaders[group as usize].load(Ordering::Relaxed).max(1);
            let runtime = runtimes.read()[(leader - 1) as usize].clone();
            match runtime.map(|r| r.propose(group, &fill_payload)) {
                Some(Ok(_)) => proposed += 1,
                _ => thread::sleep(Duration::from_millis(1)),
            }
            if proposed % 4096 == 0 {
                // Let the pollers keep up.
                thread::sleep(Duration::from_millis(5));
            }
        }
        thread::sleep(Duration::from_secs(2));
        // The fill outruns what the cluster commits and runtime 1's host
        // applies; whatever is left unapplied at the restart is loaded
        // into memory by the groups' starts. Waiting until runtime 1's
        // host has applied every entry in its log measures the restart
        // of a host that has caught up.
        let behind = || -> u64 {
            let Some(runtime) = runtimes.read()[0].clone() else {
                return 0;
            };
            (1..=groups)
                .map(|g| {
                    let applied = cluster.applied[g as usize].load(Ordering::Relaxed);
                    runtime
                        .status(g)
                        .map_or(0, |s| s.last_index.saturating_sub(applied))
                })
                .sum()
        };
        let settle_until = Instant::now() + Duration::from_secs(options.settle_seconds);
        while Instant::now() < settle_until && behind() > 0 {
            thread::sleep(Duration::from_millis(500));
        }
        progress(
            json,
            format!(
                "filled the WAL with {proposed} entries of {} bytes in {:.1} s",
                fill_payload.len(),
                fill_start.elapsed().as_secs_f64()
            ),
        );
        proposed
    };
    let _ = filled;
    let runtime = cluster.detach(1);
    drop(runtime);
    let restart_wal_bytes = wal_bytes(&dirs[0].0);
    let restart_start = Instant::now();
    let open_cpu_before = this_thread_cpu_seconds();
    let runtime = Runtime::open(runtime_config(1, &dirs[0].0, &options)).unwrap();
    let open_seconds = restart_start.elapsed().as_secs_f64();
    let open_cpu = this_thread_cpu_seconds() - open_cpu_before;
    let start_cpu = start_all(&runtime, groups, Some(&cluster.applied));
    let restart_seconds = restart_start.elapsed().as_secs_f64();
    // On a machine shared with the two other runtimes, the restart waits
    // for a core much of the time: its own CPU time tells the code's cost
    // apart from that wait. The reopened runtime's workers run each
    // group's first round meanwhile.
    let restart_worker_cpu = thread_cpu_seconds("embraft-rt1-");
    // Entries the host had not applied are loaded into memory at start
    // (they are handed out next): part of the restart's work.
    let (mut restart_cached_bytes, mut uncommitted, mut unapplied) = (0u64, 0u64, 0u64);
    for g in 1..=groups {
        if let Ok(status) = runtime.status(g) {
            restart_cached_bytes += status.cached_entry_bytes;
            uncommitted += status.last_index - status.commit;
            unapplied += status.commit - status.applied;
        }
    }
    progress(
        json,
        format!(
            "runtime 1 reopened with {groups} groups and {:.0} MiB of WAL in {restart_seconds:.2} s \
             (WAL recovery {open_seconds:.2} s, starting the groups {:.2} s; CPU {open_cpu:.2} + \
             {start_cpu:.2} s, workers {restart_worker_cpu:.2} s; {:.0} MiB of entries not yet \
             applied loaded: {unapplied} entries committed, {uncommitted} not known committed)",
            restart_wal_bytes as f64 / (1 << 20) as f64,
            restart_seconds - open_seconds,
            restart_cached_bytes as f64 / (1 << 20) as f64,
        ),
    );
    cluster.attach(Arc::new(runtime));

    if json {
        println!(
            "{{\"groups\": {groups}, \"runtimes\": {RUNTIMES}, \"elect_all_seconds\": {elect_all_seconds:.3}, \
             \"idle_seconds\": {idle_elapsed:.1}, \"idle_cpu_percent_per_runtime\": {idle_worst:.3}, \
             \"idle_cpu_percent_each\": [{}], \"resident_bytes_per_group\": {resident_bytes_per_group:.0}, \
             \"active_groups\": {}, \"proposers\": {}, \"payload_bytes\": {}, \
             \"aggregate_proposals_per_sec\": {aggregate:.0}, \"single_group_proposals_per_sec\": {single:.0}, \
             \"aggregate_vs_single_ratio\": {ratio:.3}, \"wal_syncs_per_sec_per_runtime\": {syncs_per_sec:.1}, \
             \"single_group_wal_syncs_per_sec_per_runtime\": {single_syncs:.1}, \
             \"group_steps_per_proposal\": {steps:.3}, \"single_group_steps_per_proposal\": {single_steps:.4}, \
             \"cpu_us_per_proposal\": {cpu_us:.2}, \"single_group_cpu_us_per_proposal\": {single_cpu_us:.3}, \
             \"restart_seconds\": {restart_seconds:.3}, \"restart_wal_recovery_seconds\": {open_seconds:.3}, \
             \"restart_wal_recovery_cpu_seconds\": {open_cpu:.3}, \"restart_group_start_cpu_seconds\": {start_cpu:.3}, \
             \"restart_worker_cpu_seconds\": {restart_worker_cpu:.3}, \"restart_cached_entry_bytes\": {restart_cached_bytes}, \
             \"restart_wal_bytes\": {restart_wal_bytes}, \"commit_broadcast\": {}}}",
            idle_cpu_percent
                .iter()
                .map(|c| format!("{c:.3}"))
                .collect::<Vec<_>>()
                .join(", "),
            options.active_groups,
            options.proposers,
            options.payload,
            !runtime_config(1, &dirs[0].0, &options)
                .raft
                .skip_commit_broadcast,
        );
    } else {
        println!("aggregate / single-group ratio: {ratio:.2}");
    }
}
