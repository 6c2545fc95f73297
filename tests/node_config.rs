//! Configuration bounds `Node::new` enforces so that no later input can
//! stop the node: a WAL segment must hold the largest entry, and the input
//! queue capacity is bounded and costs nothing up front.

#[path = "common/temp_dir.rs"]
mod temp_dir;

use embraft::core::{ConfState, Entry, EntryKind, HardState, Role, SnapshotMeta};
use embraft::node::{
    LogLevel, Node, NodeConfig, NodeError, ProposalResult, MAX_INPUT_CAPACITY,
    SEGMENT_MEMBERSHIP_IDS,
};
use embraft::wal::{segment_bytes_for_entry, SyncMode, Wal, WalOptions};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use temp_dir::TempDir;

fn config(dir: &TempDir) -> NodeConfig {
    let mut config = NodeConfig::new(1, dir.path().join("node"));
    config.peers = vec![1];
    config.wal.sync = SyncMode::Never;
    config
}

fn refused(config: NodeConfig) -> String {
    match Node::new(config) {
        Err(err @ NodeError::InvalidConfig(_)) => err.to_string(),
        Err(err) => panic!("refused with another error: {err}"),
        Ok(_) => panic!("accepted"),
    }
}

/// Ticks `node` until it leads, then proposes `count` entries of `len`
/// bytes and waits for all of them to commit; any node failure panics.
fn commit_entries(node: &Node, count: usize, len: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut pending = HashSet::new();
    let mut proposed = false;
    while !proposed || !pending.is_empty() {
        assert!(Instant::now() < deadline, "{} entries left", pending.len());
        node.tick().unwrap();
        let batch = node.poll_ready(Duration::from_millis(10)).unwrap();
        if let Some(batch) = batch {
            for outcome in &batch.outcomes {
                assert!(
                    matches!(outcome.result, ProposalResult::Committed { .. }),
                    "{outcome:?}"
                );
                pending.remove(&outcome.proposal_id);
            }
            if let Some(last) = batch.committed.last() {
                node.ack_applied(last.entry.index).unwrap();
            }
            if !proposed && batch.state.role == Role::Leader {
                for n in 0..count {
                    pending.insert(node.propose(&vec![n as u8; len]).unwrap());
                }
                proposed = true;
            }
        }
    }
}

#[test]
fn a_segment_that_cannot_hold_the_largest_entry_is_refused_at_start() {
    let dir = TempDir::new("config-segment");
    for (segment, entry) in [(4096, 1 << 20), (1 << 20, 1 << 20), (64 << 20, 128 << 20)] {
        let mut c = config(&dir);
        c.wal.segment_size = segment;
        c.raft.max_entry_bytes = entry;
        let message = refused(c);
        assert!(
            message.contains(&format!("segment size {segment}"))
                && message.contains("max_entry_bytes"),
            "{message}"
        );
    }

    // The bound is exact: one byte of entry more than a segment of the
    // bound's size holds is refused, and entries of the limit fill
    // segments one each without stopping the node.
    // The figure docs/FFI.md gives for the default limit.
    assert_eq!(
        segment_bytes_for_entry(1 << 20, SEGMENT_MEMBERSHIP_IDS),
        (1 << 20) + 840
    );
    let entry = 3400;
    let segment = segment_bytes_for_entry(entry, SEGMENT_MEMBERSHIP_IDS);
    assert_eq!(segment % 8, 0);
    let mut c = config(&dir);
    c.wal.segment_size = segment;
    c.raft.max_entry_bytes = entry + 1;
    refused(c.clone());
    c.raft.max_entry_bytes = entry;
    let node = Node::new(c).unwrap();
    commit_entries(&node, 6, entry as usize);
    assert!(node.status().last_index >= 7);
}

#[test]
fn the_input_queue_capacity_is_bounded_and_costs_nothing_up_front() {
    let dir = TempDir::new("config-queue");
    for capacity in [0, MAX_INPUT_CAPACITY + 1, 1 << 40, usize::MAX] {
        let mut c = config(&dir);
        c.input_capacity = capacity;
        let message = refused(c);
        assert!(
            message.contains(&format!("input queue capacity {capacity}")),
            "{message}"
        );
    }

    let before = resident_bytes();
    let mut c = config(&dir);
    c.input_capacity = MAX_INPUT_CAPACITY;
    let node = Node::new(c).unwrap();
    let grown = resident_bytes().saturating_sub(before);
    assert!(
        grown < 16 << 20,
        "a node with the largest queue took {grown} bytes at start"
    );
    commit_entries(&node, 10, 100);
}

/// The process's resident set (VmRSS), in bytes.
fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/self/status");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("VmRSS value");
    kib * 1024
}

/// The bound `Node::new` applies is the WAL's real need: with a snapshot
/// naming as many ids as the bound assumes restated at each segment's
/// start, a segment of the bound's size takes entries of the limit with
/// their hard state, and one 8 bytes smaller refuses the first.
#[test]
fn the_segment_bound_is_exactly_what_the_wal_needs() {
    let entry_bytes = 3400;
    let bound = segment_bytes_for_entry(entry_bytes, SEGMENT_MEMBERSHIP_IDS);
    for (segment_size, fits) in [(bound, true), (bound - 8, false)] {
        let dir = TempDir::new("config-segment-wal");
        let options = WalOptions {
            segment_size,
            sync: SyncMode::Never,
            ..WalOptions::default()
        };
        let (wal, _) = Wal::open(dir.path(), options).unwrap();
        let hard_state = |commit| HardState {
            term: 1,
            vote: 1,
            commit,
        };
        let entry = |index, len| Entry {
            index,
            term: 1,
            kind: EntryKind::Normal,
            data: vec![7; len].into(),
        };
        wal.append(&[entry(1, 8)], Some(&hard_state(1))).unwrap();
        wal.save_snapshot(&SnapshotMeta {
            index: 1,
            term: 1,
            conf_state: ConfState {
                voters: (1..=SEGMENT_MEMBERSHIP_IDS as u64).collect(),
                ..ConfState::default()
            },
        })
        .unwrap();
        for index in 2..5 {
            let result = wal.append(
                &[entry(index, entry_bytes as usize)],
                Some(&hard_state(index)),
            );
            assert_eq!(result.is_ok(), fits, "segment {segment_size}: {result:?}");
            if !fits {
                break;
            }
        }
    }
}

/// What a node's start hands out (its start-up line, the entries its log
/// already commits) comes as one batch, and nothing more until something
/// happens: a host that polls once after the start is not surprised by a
/// second batch from the same start.
#[test]
fn a_start_hands_out_one_batch() {
    for round in 0..20 {
        let dir = TempDir::new(&format!("one-batch-{round}"));
        let mut config = config(&dir);
        config.peers = vec![1];
        config.log_level = LogLevel::Info;
        let node = Node::new(config).unwrap();
        let first = node
            .poll_ready(Duration::from_secs(5))
            .unwrap()
            .expect("a first batch");
        assert_eq!(first.logs.len(), 1, "the start-up line");
        assert_eq!(first.committed.len(), 1, "the founding membership");
        let second = node.poll_ready(Duration::from_millis(20)).unwrap();
        assert!(second.is_none(), "round {round}: a second batch {second:?}");
    }
}
