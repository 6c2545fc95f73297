//! A snapshot larger than 256 MiB sent from a leader to a new follower, each
//! node in its own process (this test binary, re-executed), connected by
//! TCP with length-prefixed frames as in docs/WIRE.md.
//!
//! The leader's host writes the snapshot through the node's writer by
//! streaming pseudo-random bytes (never the whole of it in memory); the
//! node compacts, and adding the follower makes it send the snapshot. Mid
//! transfer the leader's transport "loses the connection" for a while:
//! messages both ways are dropped and the host reports the follower
//! unreachable. The transfer must resume from the follower's offset (bytes
//! sent stay under 1.2 times the snapshot), the follower must restore a
//! file identical to what the leader wrote, and each process's peak extra
//! heap (a counting global allocator in this binary) must stay under
//! 64 MiB. Figures are printed: run with `-- --nocapture`.

use embraft::codec::decode_message;
use embraft::core::{ConfChange, MessageBody, NodeId};
use embraft::node::{LogLevel, Node, NodeConfig, NodeError, ReadyBatch};
use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{BufRead, BufReader, BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[path = "common/temp_dir.rs"]
mod temp_dir;
use temp_dir::TempDir;

/// Counts the heap in use and its peak, for the whole process.
struct CountingAlloc;

static HEAP_NOW: AtomicUsize = AtomicUsize::new(0);
static HEAP_PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(bytes: usize) {
    let now = HEAP_NOW.fetch_add(bytes, Ordering::Relaxed) + bytes;
    HEAP_PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: forwards every call to the system allocator unchanged; only
// counts sizes.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded.
        unsafe { System.dealloc(ptr, layout) };
        HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            HEAP_NOW.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: CountingAlloc = CountingAlloc;

/// The snapshot's size: over 256 MiB.
const SNAPSHOT_BYTES: u64 = (256 << 20) + (3 << 20) + 12_345;
/// Extra heap each side may use for the transfer.
const HEAP_LIMIT: usize = 64 << 20;
const TICK: Duration = Duration::from_millis(10);
/// How long the leader's transport stays "disconnected", and when.
const OUTAGE: Duration = Duration::from_millis(400);
const OUTAGE_AT_FRACTION: f64 = 0.4;
const DEADLINE: Duration = Duration::from_secs(120);

const ROLE_ENV: &str = "EMBRAFT_TRANSFER_ROLE";
const DIR_ENV: &str = "EMBRAFT_TRANSFER_DIR";
const PORT_ENV: &str = "EMBRAFT_TRANSFER_PORT";
const TEST_NAME: &str =
    "a_snapshot_over_256_mib_is_resumed_after_a_lost_connection_with_bounded_memory";

/// The snapshot's bytes: a deterministic pseudo-random stream, produced a
/// block at a time.
struct Content {
    state: u64,
    left: u64,
}

impl Content {
    fn new() -> Content {
        Content {
            state: 0x9e37_79b9_7f4a_7c15,
            left: SNAPSHOT_BYTES,
        }
    }

    /// The next `buf.len()` bytes at most; returns how many.
    fn fill(&mut self, buf: &mut [u8]) -> usize {
        let n = (buf.len() as u64).min(self.left) as usize;
        for word in buf[..n].chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            word.copy_from_slice(&self.state.to_le_bytes()[..word.len()]);
        }
        self.left -= n as u64;
        n
    }

    fn crc() -> u32 {
        let mut content = Content::new();
        let mut hasher = crc32fast::Hasher::new();
        let mut buf = vec![0; 1 << 20];
        loop {
            let n = content.fill(&mut buf);
            if n == 0 {
                return hasher.finalize();
            }
            hasher.update(&buf[..n]);
        }
    }
}

/// Peak resident memory of this process (VmHWM), in bytes.
fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// A baseline for the peaks: the heap now, and the resident peak reset
/// (`clear_refs` 5) when the kernel allows it.
struct Baseline {
    heap: usize,
    hwm: u64,
}

impl Baseline {
    fn now() -> Baseline {
        let _ = std::fs::write("/proc/self/clear_refs", "5");
        let heap = HEAP_NOW.load(Ordering::Relaxed);
        HEAP_PEAK.store(heap, Ordering::Relaxed);
        Baseline {
            heap,
            hwm: vm_hwm(),
        }
    }

    fn report(&self, side: &str) -> usize {
        let extra = HEAP_PEAK.load(Ordering::Relaxed) - self.heap;
        let hwm = vm_hwm().saturating_sub(self.hwm);
        println!(
            "{side}: peak extra heap {:.1} MiB; VmHWM grew by {:.1} MiB (resident, page cache of \
             mapped WAL segments included, for information)",
            mib(extra as u64),
            mib(hwm)
        );
        extra
    }
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn config(id: NodeId, dir: &Path, peers: Vec<NodeId>) -> NodeConfig {
    let mut config = NodeConfig::new(id, dir);
    config.peers = peers;
    config.raft.election_tick = 10;
    config.raft.heartbeat_tick = 2;
    // The leader keeps nothing before its snapshot: the new follower
    // cannot be caught up from the log.
    config.raft.compact_keep_entries = 0;
    config.wal.segment_size = 1 << 20;
    // A segment must hold the largest entry (`Node::new` checks).
    config.raft.max_entry_bytes = 1 << 19;
    config.log_level = LogLevel::Info;
    config
}

/// One side's connection: frames in on a thread that steps them into the
/// node (unless `down`), frames out from the host loop.
struct Link {
    out: BufWriter<TcpStream>,
    down: Arc<AtomicBool>,
    closed: Arc<AtomicBool>,
}

impl Link {
    fn new(stream: TcpStream, node: Arc<Node>) -> Link {
        stream.set_nodelay(true).unwrap();
        let down = Arc::new(AtomicBool::new(false));
        let closed = Arc::new(AtomicBool::new(false));
        let mut input = BufReader::new(stream.try_clone().unwrap());
        let (reader_down, reader_closed) = (down.clone(), closed.clone());
        std::thread::spawn(move || {
            let mut frame = Vec::new();
            loop {
                let mut len = [0u8; 4];
                if input.read_exact(&mut len).is_err() {
                    break;
                }
                frame.resize(u32::from_le_bytes(len) as usize, 0);
                if input.read_exact(&mut frame).is_err() {
                    break;
                }
                if reader_down.load(Ordering::Relaxed) {
                    continue;
                }
                // A full queue is back-pressure here, not loss.
                while let Err(NodeError::Busy) = node.step(&frame) {
                    std::thread::sleep(Duration::from_micros(200));
                }
            }
            reader_closed.store(true, Ordering::Relaxed);
        });
        Link {
            out: BufWriter::new(stream),
            down,
            closed,
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        if self.down.load(Ordering::Relaxed) {
            return;
        }
        // A closed peer is the end of the run, seen by the reader.
        let _ = self.out.write_all(&(bytes.len() as u32).to_le_bytes());
        let _ = self.out.write_all(bytes);
    }

    fn flush(&mut self) {
        let _ = self.out.flush();
    }
}

/// Ticks when due and returns the next batch, if any.
fn next_batch(node: &Node, last_tick: &mut Instant) -> Option<ReadyBatch> {
    if last_tick.elapsed() >= TICK {
        *last_tick = Instant::now();
        let _ = node.tick();
    }
    node.poll_ready(Duration::from_millis(2))
        .expect("node runs")
}

fn print_logs(side: &str, batch: &ReadyBatch) {
    for line in &batch.logs {
        println!("{side} log: {}", line.text);
    }
}

fn leader(dir: &Path, port: u16) {
    let node = Arc::new(Node::new(config(1, dir, vec![1])).unwrap());
    let mut last_tick = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    let mut applied = 0;
    let mut elected = false;
    let mut proposed = false;
    while applied < 4 {
        assert!(
            Instant::now() < deadline,
            "leader: no progress before the snapshot"
        );
        let Some(batch) = next_batch(&node, &mut last_tick) else {
            continue;
        };
        print_logs("leader", &batch);
        elected |= batch.state.role == embraft::core::Role::Leader;
        if elected && !proposed {
            for i in 0..3 {
                node.propose(format!("entry {i}").as_bytes()).unwrap();
            }
            proposed = true;
        }
        if let Some(last) = batch.committed.last() {
            applied = last.entry.index;
            node.ack_applied(applied).unwrap();
        }
    }

    let baseline = Baseline::now();
    // Take the snapshot: streamed into the writer, 1 MiB at a time.
    let started = Instant::now();
    let mut writer = node.begin_snapshot(applied).unwrap();
    let mut content = Content::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = content.fill(&mut buf);
        if n == 0 {
            break;
        }
        writer.write(&buf[..n]).unwrap();
    }
    drop(buf);
    writer.finish().unwrap();
    let took = started.elapsed();
    println!(
        "leader: snapshot of {:.1} MiB written, synced and checksummed in {:.2} s ({:.0} MiB/s)",
        mib(SNAPSHOT_BYTES),
        took.as_secs_f64(),
        mib(SNAPSHOT_BYTES) / took.as_secs_f64()
    );
    while node.status().snapshot_index < applied {
        assert!(Instant::now() < deadline, "leader: snapshot recorded");
        if let Some(batch) = next_batch(&node, &mut last_tick) {
            print_logs("leader", &batch);
        }
    }
    node.propose_conf_change(ConfChange::AddLearner(2)).unwrap();

    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut link = Link::new(stream, node.clone());
    let mut sent = 0u64;
    let mut transfer_start = None;
    let mut outage: Option<Instant> = None;
    let mut outage_over = false;
    let mut resumed_at = None;
    let mut installed = None;
    while !link.closed.load(Ordering::Relaxed) {
        assert!(
            Instant::now() < deadline,
            "leader: the follower finished in time"
        );
        if let Some(at) = outage {
            if !outage_over && at.elapsed() >= OUTAGE {
                outage_over = true;
                link.down.store(false, Ordering::Relaxed);
                println!("leader: connection back after {} ms", OUTAGE.as_millis());
            }
        }
        let Some(batch) = next_batch(&node, &mut last_tick) else {
            continue;
        };
        print_logs("leader", &batch);
        if let Some(last) = batch.committed.last() {
            node.ack_applied(last.entry.index).unwrap();
        }
        let mut reported = false;
        for msg in &batch.messages {
            let decoded = decode_message(&msg.bytes).unwrap();
            // Every chunk the node produced counts, delivered or lost.
            if let MessageBody::InstallSnapshot { offset, data, .. } = &decoded.body {
                if !data.is_empty() {
                    transfer_start.get_or_insert_with(Instant::now);
                    sent += data.len() as u64;
                    if outage_over && resumed_at.is_none() {
                        resumed_at = Some(*offset);
                    }
                }
                // The connection breaks in the middle of a batch: this chunk
                // and the rest of the window are lost on the way.
                if outage.is_none() && sent as f64 >= OUTAGE_AT_FRACTION * SNAPSHOT_BYTES as f64 {
                    println!(
                        "leader: connection lost at offset {:.1} MiB, {:.1} MiB sent",
                        mib(*offset),
                        mib(sent)
                    );
                    link.down.store(true, Ordering::Relaxed);
                    outage = Some(Instant::now());
                }
            }
            if link.down.load(Ordering::Relaxed) && !reported {
                // The transport cannot deliver: it tells the node.
                node.report_unreachable(2).unwrap();
                reported = true;
            }
            link.send(&msg.bytes);
        }
        link.flush();
        let caught_up = node
            .status()
            .peers
            .iter()
            .any(|p| p.id == 2 && p.match_index >= applied);
        if caught_up && installed.is_none() {
            installed = transfer_start.map(|t| t.elapsed());
        }
    }
    let took = installed.expect("the follower installed the snapshot");
    println!(
        "leader: {:.1} MiB of chunk data sent for a {:.1} MiB snapshot ({:.3}x); resumed at \
         offset {:.1} MiB after the outage; transfer and install in {:.2} s ({:.0} MiB/s)",
        mib(sent),
        mib(SNAPSHOT_BYTES),
        sent as f64 / SNAPSHOT_BYTES as f64,
        mib(resumed_at.unwrap_or(0)),
        took.as_secs_f64(),
        mib(SNAPSHOT_BYTES) / took.as_secs_f64()
    );
    let extra = baseline.report("leader");
    let resumed_at = resumed_at.expect("chunks were sent after the outage");
    assert!(
        resumed_at > 0,
        "resumed from the follower's offset, not from 0"
    );
    assert!(
        (sent as f64) < 1.2 * SNAPSHOT_BYTES as f64,
        "{sent} bytes sent for {SNAPSHOT_BYTES}"
    );
    assert!(extra < HEAP_LIMIT, "leader peak extra heap {extra}");
}

fn follower(dir: &Path, listener: TcpListener) {
    let node = Arc::new(Node::new(config(2, dir, Vec::new())).unwrap());
    let baseline = Baseline::now();
    let (stream, _) = listener.accept().unwrap();
    let started = Instant::now();
    let mut link = Link::new(stream, node.clone());
    let mut last_tick = Instant::now();
    let deadline = Instant::now() + DEADLINE;
    let mut restored: Option<(u64, PathBuf)> = None;
    let mut applied = 0;
    loop {
        assert!(Instant::now() < deadline, "follower: restored in time");
        let Some(batch) = next_batch(&node, &mut last_tick) else {
            continue;
        };
        print_logs("follower", &batch);
        for msg in &batch.messages {
            link.send(&msg.bytes);
        }
        link.flush();
        if let Some(restore) = &batch.restore {
            // The host's restore: read the file the node names, as a
            // stream, and check it is what the leader's host wrote.
            let took = started.elapsed();
            let mut file = std::fs::File::open(&restore.path).unwrap();
            let mut hasher = crc32fast::Hasher::new();
            let mut buf = vec![0; 1 << 20];
            let mut len = 0u64;
            loop {
                let n = file.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                len += n as u64;
            }
            assert_eq!(len, SNAPSHOT_BYTES);
            assert_eq!(hasher.finalize(), Content::crc(), "the restored file");
            println!(
                "follower: restore of the snapshot at {} handed out {:.2} s after connecting; \
                 file identical to the leader's",
                restore.meta.index,
                took.as_secs_f64()
            );
            applied = restore.meta.index;
            restored = Some((restore.meta.index, restore.path.clone()));
        }
        if let Some(last) = batch.committed.last() {
            applied = last.entry.index;
        }
        if applied > 0 {
            let _ = node.ack_applied(applied);
        }
        // Done once the entries after the snapshot (the membership change)
        // arrived too.
        if matches!(&restored, Some((index, _)) if applied > *index) {
            break;
        }
    }
    let extra = baseline.report("follower");
    let (_, path) = restored.unwrap();
    let folder: Vec<_> = std::fs::read_dir(path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(
        folder.len(),
        1,
        "one snapshot file, no leftovers: {folder:?}"
    );
    println!(
        "follower: disk: snapshot folder {:.1} MiB in {} file",
        mib(std::fs::metadata(&path).unwrap().len()),
        folder.len()
    );
    assert!(extra < HEAP_LIMIT, "follower peak extra heap {extra}");
}

fn spawn(role: &str, dir: &Path, port: Option<u16>) -> Child {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(ROLE_ENV, role)
        .env(DIR_ENV, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(port) = port {
        command.env(PORT_ENV, port.to_string());
    }
    command.spawn().unwrap()
}

/// Echoes a child's output with a prefix; returns the port it announced.
fn echo(child: &mut Child, until_port: bool) -> Option<u16> {
    let out = child.stdout.as_mut().unwrap();
    let mut lines = BufReader::new(out).lines();
    // The child's first line follows the harness's "test ... " on the
    // same line.
    while let Some(Ok(line)) = lines.next() {
        if let Some(at) = line.find("port ") {
            if until_port {
                return line[at + 5..].trim().parse().ok();
            }
        }
        if let Some(at) = line.find("leader").or_else(|| line.find("follower")) {
            println!("  {}", &line[at..]);
        }
    }
    None
}

#[test]
fn a_snapshot_over_256_mib_is_resumed_after_a_lost_connection_with_bounded_memory() {
    if let Some(role) = std::env::var_os(ROLE_ENV) {
        let dir = PathBuf::from(std::env::var_os(DIR_ENV).unwrap());
        if role == "follower" {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            println!("port {}", listener.local_addr().unwrap().port());
            std::io::stdout().flush().unwrap();
            follower(&dir, listener);
        } else {
            let port: u16 = std::env::var(PORT_ENV).unwrap().parse().unwrap();
            leader(&dir, port);
        }
        return;
    }
    let temp = TempDir::new("transfer");
    let root = temp.path();
    let started = Instant::now();
    let mut follower = spawn("follower", &root.join("follower"), None);
    let port = echo(&mut follower, true).expect("the follower listens");
    let mut leader = spawn("leader", &root.join("leader"), Some(port));
    // Each child's output is echoed on its own thread so neither blocks.
    let follower_out = {
        let mut out = follower.stdout.take();
        std::thread::spawn(move || {
            if let Some(out) = out.as_mut() {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    if let Some(at) = line.find("follower") {
                        println!("  {}", &line[at..]);
                    }
                }
            }
        })
    };
    echo(&mut leader, false);
    let leader_ok = leader.wait().unwrap().success();
    let follower_ok = follower.wait().unwrap().success();
    let _ = follower_out.join();
    drop(temp);
    println!("whole run: {:.1} s", started.elapsed().as_secs_f64());
    assert!(leader_ok, "the leader's process failed (see its output)");
    assert!(
        follower_ok,
        "the follower's process failed (see its output)"
    );
}
