//! The node's disk use over a long run: snapshots taken through the node's
//! writer keep the WAL to a few segments and the snapshot folder to one
//! file.

mod node_support;

use embraft::core::NodeId;
use embraft::node::{NodeError, ProposalResult};
use embraft::wal::SyncMode;
use node_support::Cluster;
use std::collections::{HashMap, VecDeque};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const SEGMENT_SIZE: u64 = 1 << 20;
const PROPOSALS: u32 = 100_000;
const PAYLOAD_BYTES: usize = 100;
/// Proposals in flight at once: enough for group commit to batch many
/// entries per sync, few enough that followers never lag by more than
/// `KEEP_ENTRIES` (which would need a snapshot transfer).
const WINDOW: usize = 1_000;
/// The host compacts every this many applied entries...
const COMPACT_EVERY: u64 = 2_000;
/// ...and the node keeps this many entries before the compaction point.
const KEEP_ENTRIES: u64 = 500;
/// Segment files a node's WAL may hold at any time. Between two
/// compactions the log the WAL must keep runs from the last compaction
/// point minus `KEEP_ENTRIES` to the last entry: at most `KEEP_ENTRIES +
/// COMPACT_EVERY + WINDOW` = 3,500 entries of about 160 bytes each (the
/// payload, the record header and the hard-state records between batches:
/// 100,000 entries fill 15 or 16 segments), 0.55 MiB, less than one
/// segment, so it spans at most two segments (the active one and the one
/// before). One more is the next segment, prepared in advance.
const MAX_SEGMENTS: usize = 3;

fn payload(number: u32) -> Vec<u8> {
    let mut data = format!("proposal-{number:08}-").into_bytes();
    data.resize(PAYLOAD_BYTES, b'.');
    data
}

struct WalFiles {
    segments: usize,
    /// The highest segment sequence number: how many were ever created.
    highest_seq: u64,
    bytes: u64,
    allocated: u64,
    /// Files in the snapshot folder, and their bytes.
    snapshots: usize,
    snapshot_bytes: u64,
}

fn wal_files(dir: &Path) -> WalFiles {
    let mut files = WalFiles {
        segments: 0,
        highest_seq: 0,
        bytes: 0,
        allocated: 0,
        snapshots: 0,
        snapshot_bytes: 0,
    };
    for entry in walk(dir) {
        // The node's threads rename and delete files while it runs.
        let Ok(meta) = std::fs::metadata(&entry) else {
            continue;
        };
        files.bytes += meta.len();
        files.allocated += meta.blocks() * 512;
        let name = entry.file_name().unwrap().to_string_lossy().into_owned();
        if entry.parent().is_some_and(|p| p.ends_with("snapshots")) {
            files.snapshots += 1;
            files.snapshot_bytes += meta.len();
        }
        if let Some(seq) = name.strip_suffix(".seg") {
            files.segments += 1;
            files.highest_seq = files.highest_seq.max(u64::from_str_radix(seq, 16).unwrap());
        }
    }
    files
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// 100,000 proposals through a three-node cluster whose hosts snapshot (the
/// node's writer) as they apply: every node applies all of them in the
/// same order, each WAL ends with a few segments although it wrote many
/// more, and one snapshot file is left.
#[test]
fn a_hundred_thousand_proposals_with_compaction_leave_a_few_segments() {
    let started = Instant::now();
    // Every write synced (SyncMode::Always, the default): fast enough here.
    let mut cluster = Cluster::start("disk", 3, |config| {
        config.wal.segment_size = SEGMENT_SIZE;
        // A segment must hold the largest entry (`Node::new` checks).
        config.raft.max_entry_bytes = SEGMENT_SIZE / 2;
        config.wal.sync = SyncMode::Always;
        config.raft.compact_keep_entries = KEEP_ENTRIES;
    });
    cluster.compact_every = COMPACT_EVERY;
    cluster.elect();

    // Proposal id -> (proposing node, payload number); numbers dropped by a
    // leader change are proposed again.
    let mut in_flight: HashMap<(NodeId, u64), u32> = HashMap::new();
    let mut to_propose: VecDeque<u32> = (0..PROPOSALS).collect();
    let mut committed = 0u32;
    // The bound must hold all along, not only at the end: sampled.
    let mut most_segments = 0;
    let mut rounds = 0u64;
    let deadline = Instant::now() + Duration::from_secs(120);
    while committed < PROPOSALS {
        assert!(Instant::now() < deadline, "{committed} committed in time");
        in_flight.retain(
            |&(node, id), number| match cluster.host(node).outcomes.get(&id) {
                None => true,
                Some(ProposalResult::Committed { .. }) => {
                    committed += 1;
                    false
                }
                Some(_) => {
                    to_propose.push_front(*number);
                    false
                }
            },
        );
        if let Some(leader) = cluster.agreed_leader() {
            while in_flight.len() < WINDOW {
                let Some(number) = to_propose.pop_front() else {
                    break;
                };
                match cluster.host(leader).node().propose(&payload(number)) {
                    Ok(id) => {
                        in_flight.insert((leader, id), number);
                    }
                    Err(NodeError::Busy) => {
                        to_propose.push_front(number);
                        break;
                    }
                    Err(err) => panic!("propose: {err}"),
                }
            }
        }
        if cluster.pump() == 0 {
            std::thread::sleep(Duration::from_micros(200));
        }
        rounds += 1;
        if rounds % 64 == 0 {
            for host in &cluster.hosts {
                most_segments = most_segments.max(wal_files(&host.dir).segments);
            }
        }
    }
    let last = cluster.hosts.iter().map(|h| h.last_applied).max().unwrap();
    assert!(cluster.run_until(Duration::from_secs(30), |c| c
        .hosts
        .iter()
        .all(|h| h.last_applied >= last)));
    let elapsed = started.elapsed();

    let expected: Vec<&[u8]> = cluster.hosts[0]
        .applied
        .iter()
        .map(|(_, _, data)| data.as_slice())
        .collect();
    assert_eq!(expected.len(), PROPOSALS as usize, "each applied once");
    for host in &cluster.hosts {
        assert!(
            host.applied
                .iter()
                .map(|(_, _, d)| d.as_slice())
                .eq(expected.iter().copied()),
            "node {} applied another sequence",
            host.id
        );
    }

    println!("at most {most_segments} segment files in a WAL during the run");
    assert!(most_segments <= MAX_SEGMENTS);
    for id in 1..=3 {
        cluster.stop(id);
    }
    for host in &cluster.hosts {
        let files = wal_files(&host.dir);
        println!(
            "node {}: {} entries in {:.1} s, {} snapshots taken; WAL: {} segment files of {} \
             created; snapshots: {} file of {} bytes; data directory {} bytes ({} allocated)",
            host.id,
            host.last_applied,
            elapsed.as_secs_f64(),
            host.snapshots_taken.len(),
            files.segments,
            files.highest_seq,
            files.snapshots,
            files.snapshot_bytes,
            files.bytes,
            files.allocated
        );
        assert_eq!(files.snapshots, 1, "only the latest snapshot is kept");
        assert!(
            files.highest_seq as usize > 2 * MAX_SEGMENTS,
            "the run must write far more than the bound for it to mean anything"
        );
        assert!(
            files.segments <= MAX_SEGMENTS,
            "node {}: {} segments left, at most {MAX_SEGMENTS} expected",
            host.id,
            files.segments
        );
    }
}
