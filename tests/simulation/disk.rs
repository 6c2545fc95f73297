//! The simulated disk of one node: durable state changes only when a write
//! completes, writes complete in the order they were submitted, and a crash
//! loses every write still in progress.
//!
//! Batches are written as the node's persistence thread writes them:
//! those queued while a write is in progress form one group, written
//! together once it completes, and a group with more entries than one
//! append of the node's WAL carries goes in prefixes first, each durable on
//! its own and carrying the hard state as the node writes it
//! (`embraft::node::oversized_prefixes`), then the rest. A crash between
//! them keeps the prefixes.
//!
//! Many groups of one process share one write-ahead log (`groups.rs`):
//! their writes go through the process's [`SharedWal`], which gathers the
//! writes of every group submitted while a write is in progress into one
//! round, durable all at once, as the runtime's worker round writes every
//! stepped group's batches with one write and one sync. Each group's part
//! of the log is still a `Disk`, holding that group's durable state.
//!
//! Besides the write-ahead log (hard state and entries) the disk holds the
//! host's snapshot files: the snapshot the log starts after, recorded in the
//! log like the product's WAL records snapshot metadata, and a snapshot
//! received from a leader whose file is complete but not recorded yet. Only
//! a recorded snapshot counts at recovery; an unrecorded file is deleted.

use crate::rng::SplitMix64;
use embraft::core::{
    Entry, HardState, Index, InitialState, LogReadError, LogStorage, Message, NodeId, SnapshotMeta,
    Term,
};
use embraft::node::oversized_prefixes;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes of entries (as the node estimates them) one append of the node's
/// WAL carries: half a segment there. Small here, about three entries of
/// the simulator's, so that a follower catching up or a leader with a few
/// proposals queued writes in several appends.
const MAX_APPEND_BYTES: u64 = 256;

/// How long a write takes, in virtual time units.
#[derive(Clone, Copy, Debug)]
pub struct DiskTiming {
    pub min_delay: u64,
    pub max_delay: u64,
}

/// A snapshot file: the metadata the core gave it and the host's bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub meta: SnapshotMeta,
    pub data: Vec<u8>,
}

/// The part of one ready batch that waits for durability.
pub struct Batch {
    pub ready_number: u64,
    pub hard_state: Option<HardState>,
    pub entries: Vec<Entry>,
    /// Messages that may leave only once this batch is durable.
    pub persisted_messages: Vec<Message>,
    /// A snapshot installed from the leader: recorded with this batch, it
    /// replaces the whole log (its file is the received one on disk).
    pub installs: Option<SnapshotMeta>,
}

/// One write submitted to the disk.
pub enum Write {
    Batch(Batch),
    /// The host took a snapshot of its state machine: the file and its
    /// record, then the log before `keep_from` goes.
    Compaction {
        file: SnapshotFile,
        keep_from: Index,
    },
    /// A snapshot received from the leader, complete and verified: its
    /// file, not recorded in the log yet.
    ReceivedFile(SnapshotFile),
}

/// The batches of consecutive readies written together, as the node's
/// persistence thread takes every job queued while the previous sync ran:
/// their entries (a later batch's replace an earlier one's from its first
/// index on) and the newest hard state, written with one append after any
/// prefixes.
struct Group {
    /// Each batch's ready number and the messages that wait for it.
    readies: Vec<(u64, Vec<Message>)>,
    entries: Vec<Entry>,
    hard_state: Option<HardState>,
    installs: Option<SnapshotMeta>,
    /// When the write ahead of it completes and it starts being written:
    /// batches submitted before then join it.
    starts_at: u64,
}

/// One write in the disk's queue.
enum Queued {
    Group(Group),
    /// A prefix of a group's entries, written and synced ahead of the rest.
    Prefix {
        entries: Vec<Entry>,
        hard_state: Option<HardState>,
    },
    Compaction {
        file: SnapshotFile,
        keep_from: Index,
    },
    ReceivedFile(SnapshotFile),
}

struct PendingWrite {
    write: Queued,
    done_at: u64,
}

impl Write {
    /// A batch with nothing to write: it completes as soon as the writes
    /// ahead of it have.
    fn is_empty(&self) -> bool {
        matches!(self, Write::Batch(b)
            if b.hard_state.is_none() && b.entries.is_empty() && b.installs.is_none())
    }
}

/// The write-ahead log one process's groups share: writes submitted while a
/// round is in progress form the next round, which starts when that one is
/// durable and becomes durable as a whole, one write and one sync for every
/// group in it; a crash loses the round in progress and the one gathering,
/// for every group at once.
#[derive(Default)]
pub struct SharedWal {
    /// The rounds not yet durable (and the one last made durable), oldest
    /// first. Writes submitted before the latest starts join it.
    rounds: VecDeque<Round>,
    /// Rounds that carried the writes of more than one group, counted for
    /// the scenarios to check that rounds are shared.
    pub shared_rounds: u64,
}

struct Round {
    starts_at: u64,
    done_at: u64,
    /// The groups with a write in it (bit `g`).
    groups: u64,
}

impl SharedWal {
    /// Queues group `group`'s `write` on `disk`, the group's part of this
    /// log, in the round it joins.
    pub fn submit(
        &mut self,
        group: usize,
        disk: &mut Disk,
        now: u64,
        rng: &mut SplitMix64,
        timing: DiskTiming,
        write: Write,
    ) {
        // The round writes each group's part whole: nothing of it is
        // durable before the round's sync.
        disk.split_oversized = false;
        while self.rounds.len() > 1 && self.rounds[0].done_at <= now {
            self.rounds.pop_front();
        }
        let latest = self.rounds.back_mut();
        let (starts_at, done_at) = match latest {
            Some(round) if now < round.starts_at => {
                if round.groups & 1 << group == 0 && round.groups.count_ones() == 1 {
                    // A second group joins: the round is shared.
                    self.shared_rounds += 1;
                }
                round.groups |= 1 << group;
                (round.starts_at, round.done_at)
            }
            // Nothing to write waits only for what was written before it
            // (the runtime's write skips empty parts and waits for the
            // latest round), and gathers no round.
            latest if write.is_empty() => {
                let done_at = latest.map_or(now, |r| r.done_at.max(now));
                (done_at, done_at)
            }
            latest => {
                let starts_at = latest.map_or(now, |r| r.done_at.max(now));
                let done_at = starts_at + rng.between(timing.min_delay.max(1), timing.max_delay);
                self.rounds.push_back(Round {
                    starts_at,
                    done_at,
                    groups: 1 << group,
                });
                (starts_at, done_at)
            }
        };
        disk.submit_at(now, starts_at, done_at, write);
    }

    /// Power loss at `now`, once every group's disk dropped its pending
    /// writes (see [`Disk::crash`]): the rounds not yet durable are gone.
    /// Checks that they are gone for every group in them, none keeping its
    /// part (`durable_at(g)` is when group `g`'s latest durable write was
    /// made durable).
    pub fn crash(&mut self, now: u64, durable_at: impl Fn(usize) -> u64) {
        for round in self.rounds.iter().filter(|r| r.done_at > now) {
            for g in (0..64).filter(|g| round.groups & 1 << g != 0) {
                assert!(
                    durable_at(g) < round.done_at,
                    "a crash at {now} kept group {g}'s part of the round due at {}, which it \
                     lost for the other groups in it",
                    round.done_at
                );
            }
        }
        self.rounds.clear();
    }
}

/// What a completed write means for the host.
pub enum Completed {
    Batch {
        /// Each batch's ready number and the messages that waited for it,
        /// in the order the batches were submitted.
        readies: Vec<(u64, Vec<Message>)>,
        /// The first durable index this write replaced, when it overwrote
        /// part of the durable log rather than only extending it.
        replaced_from: Option<Index>,
        /// The snapshot this batch recorded, now the node's.
        installed: Option<SnapshotFile>,
    },
    Compaction,
    ReceivedFile(SnapshotFile),
    /// A prefix of a group: nothing waits for it.
    Prefix {
        replaced_from: Option<Index>,
    },
}

pub struct Disk {
    hard_state: HardState,
    /// The recorded snapshot, if any; the log continues it.
    snapshot: Option<SnapshotFile>,
    /// A received snapshot file not recorded in the log.
    received: Option<SnapshotFile>,
    /// The durable log, shared with the running core's view of it.
    log: Arc<Mutex<DurableLog>>,
    pending: VecDeque<PendingWrite>,
    /// Whether big groups go in prefixes, each synced on its own, as the
    /// node writes them; a process's shared WAL writes a round whole.
    split_oversized: bool,
    /// When the latest write completed.
    durable_at: u64,
}

/// The entries of the write-ahead log that are durable.
#[derive(Default)]
struct DurableLog {
    /// From index `start` on.
    entries: VecDeque<Entry>,
    start: Index,
}

impl DurableLog {
    fn get(&self, index: Index) -> Option<&Entry> {
        let offset = usize::try_from(index.checked_sub(self.start)?).ok()?;
        self.entries.get(offset)
    }
}

/// What the core reads evicted entries back from: the node's durable log,
/// as the product's runtime reads its WAL. A seeded share of reads fails,
/// so that the core's retries run under every checker.
pub struct LogView {
    log: Arc<Mutex<DurableLog>>,
    rng: Mutex<SplitMix64>,
    /// Reads in a thousand that fail.
    failures_per_mille: u64,
    /// Reads asked for, failed or not, counted for the scenarios to check.
    reads: Arc<AtomicU64>,
}

impl LogStorage for LogView {
    fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, LogReadError> {
        self.reads.fetch_add(1, Ordering::Relaxed);
        if self.rng.lock().unwrap().below(1000) < self.failures_per_mille {
            return Err(LogReadError::Failed("simulated read error".into()));
        }
        let log = self.log.lock().unwrap();
        let mut out = Vec::new();
        let mut size = 0;
        for index in lo..hi {
            let Some(e) = log.get(index) else { break };
            size += e.size();
            if !out.is_empty() && size > max_bytes {
                break;
            }
            out.push(e.clone());
        }
        if out.is_empty() {
            return Err(LogReadError::Unavailable(lo));
        }
        Ok(out)
    }
}

impl Default for Disk {
    fn default() -> Disk {
        Disk {
            hard_state: HardState::default(),
            snapshot: None,
            received: None,
            log: Arc::new(Mutex::new(DurableLog {
                entries: VecDeque::new(),
                start: 1,
            })),
            pending: VecDeque::new(),
            split_oversized: true,
            durable_at: 0,
        }
    }
}

impl Disk {
    /// The disk of a founding member: the founding entry, which puts the
    /// voters `voters` in force, is durable and committed from the start.
    pub fn founding(voters: &[NodeId]) -> Disk {
        let founding = InitialState::bootstrap(voters);
        Disk {
            hard_state: founding.hard_state,
            log: Arc::new(Mutex::new(DurableLog {
                entries: founding.entries.into(),
                start: 1,
            })),
            ..Disk::default()
        }
    }

    /// Queues a write. It completes after a random delay, but never before
    /// the write queued ahead of it. A batch with nothing to write completes
    /// as soon as its predecessors have. A batch submitted while the write
    /// ahead of the last group is still in progress joins that group.
    pub fn submit(&mut self, now: u64, rng: &mut SplitMix64, timing: DiskTiming, write: Write) {
        let delay = if write.is_empty() {
            0
        } else {
            rng.between(timing.min_delay, timing.max_delay)
        };
        let after_previous = self.pending.back().map_or(0, |w| w.done_at);
        let done_at = (now + delay).max(after_previous);
        self.submit_at(now, after_previous.max(now), done_at, write);
    }

    /// Queues a write that completes at `done_at`, which the caller keeps
    /// at or after every pending write's. A batch submitted before
    /// `starts_at`, when the write it joins begins, joins it.
    fn submit_at(&mut self, now: u64, starts_at: u64, done_at: u64, write: Write) {
        let write = match write {
            Write::Batch(batch) => return self.submit_batch(now, starts_at, done_at, batch),
            Write::Compaction { file, keep_from } => Queued::Compaction { file, keep_from },
            Write::ReceivedFile(file) => Queued::ReceivedFile(file),
        };
        self.pending.push_back(PendingWrite { write, done_at });
    }

    /// Adds `batch` to the group not yet started, or starts one (which
    /// starts at `starts_at`), and queues the prefixes the node would write
    /// now: prefixes complete one after another before the group, without a
    /// draw of their own, so that only a crash can tell them apart.
    fn submit_batch(&mut self, now: u64, starts_at: u64, done_at: u64, batch: Batch) {
        let open = matches!(self.pending.back(), Some(PendingWrite { write: Queued::Group(g), .. })
            if now < g.starts_at && g.installs.is_none() && batch.installs.is_none());
        let mut group = match self.pending.pop_back() {
            Some(PendingWrite {
                write: Queued::Group(group),
                ..
            }) if open => group,
            back => {
                self.pending.extend(back);
                Group {
                    readies: Vec::new(),
                    entries: Vec::new(),
                    hard_state: None,
                    installs: None,
                    starts_at,
                }
            }
        };
        if let Some(first) = batch.entries.first() {
            group.entries.retain(|e| e.index < first.index);
        }
        group.entries.extend(batch.entries);
        group.hard_state = batch.hard_state.or(group.hard_state);
        group.installs = batch.installs;
        group
            .readies
            .push((batch.ready_number, batch.persisted_messages));
        // The node records an installed snapshot before the entries of its
        // batch; such batches, rare, are kept whole here.
        let prefixes = if group.installs.is_none() && self.split_oversized {
            oversized_prefixes(&group.entries, group.hard_state.as_ref(), MAX_APPEND_BYTES)
        } else {
            Vec::new()
        };
        let start = self.pending.back().map_or(now, |w| w.done_at.max(now));
        let parts = prefixes.len() as u64 + 1;
        for (number, (len, hard_state)) in (1..).zip(prefixes) {
            let rest = group.entries.split_off(len);
            let entries = std::mem::replace(&mut group.entries, rest);
            self.pending.push_back(PendingWrite {
                write: Queued::Prefix {
                    entries,
                    hard_state,
                },
                done_at: start + (done_at - start) * number / parts,
            });
        }
        self.pending.push_back(PendingWrite {
            write: Queued::Group(group),
            done_at,
        });
    }

    pub fn next_completion_at(&self) -> Option<u64> {
        self.pending.front().map(|w| w.done_at)
    }

    /// Makes the oldest pending write durable.
    pub fn complete_next(&mut self) -> Completed {
        let PendingWrite { write, done_at } = self
            .pending
            .pop_front()
            .expect("complete_next is only called when a write is pending");
        self.durable_at = done_at;
        match write {
            Queued::Group(group) => self.complete_group(group),
            Queued::Compaction { file, keep_from } => {
                assert!(
                    keep_from <= file.meta.index + 1 && file.meta.index <= self.last_index(),
                    "compaction through {} keeping from {keep_from} on a log ending at {}",
                    file.meta.index,
                    self.last_index()
                );
                assert_eq!(
                    self.term_at(file.meta.index),
                    Some(file.meta.term),
                    "a snapshot's last entry differs from the log's"
                );
                let mut log = self.durable();
                while log.start < keep_from && !log.entries.is_empty() {
                    log.entries.pop_front();
                    log.start += 1;
                }
                drop(log);
                self.snapshot = Some(file);
                Completed::Compaction
            }
            Queued::ReceivedFile(file) => {
                self.received = Some(file.clone());
                Completed::ReceivedFile(file)
            }
            Queued::Prefix {
                entries,
                hard_state,
            } => {
                if let Some(hs) = hard_state {
                    self.hard_state = hs;
                }
                Completed::Prefix {
                    replaced_from: self.write_entries(entries),
                }
            }
        }
    }

    fn complete_group(&mut self, group: Group) -> Completed {
        let installed = group.installs.map(|meta| {
            let file = self
                .received
                .take()
                .filter(|f| f.meta == meta)
                .expect("a snapshot is recorded only once its file is on disk");
            let mut log = self.durable();
            log.entries.clear();
            log.start = meta.index + 1;
            drop(log);
            self.snapshot = Some(file.clone());
            file
        });
        if let Some(hs) = group.hard_state {
            self.hard_state = hs;
        }
        Completed::Batch {
            readies: group.readies,
            replaced_from: self.write_entries(group.entries),
            installed,
        }
    }

    /// Makes `entries` durable, replacing the log from the first one on.
    /// Returns the first durable index replaced, if any was.
    fn write_entries(&mut self, entries: Vec<Entry>) -> Option<Index> {
        let mut replaced_from = None;
        if let Some(first) = entries.first() {
            let durable_last = self.last_index();
            let mut log = self.durable();
            assert!(
                first.index >= log.start && first.index <= durable_last + 1,
                "the core handed out entries starting at {} while the durable log holds {}..={}",
                first.index,
                log.start,
                durable_last
            );
            if first.index <= durable_last {
                replaced_from = Some(first.index);
                let keep = (first.index - log.start) as usize;
                log.entries.truncate(keep);
            }
            for (offset, e) in entries.iter().enumerate() {
                assert_eq!(
                    e.index,
                    first.index + offset as Index,
                    "the core handed out a non-contiguous batch of entries"
                );
            }
            log.entries.extend(entries);
        }
        replaced_from
    }

    /// Deletes the received snapshot file (the core did not need it).
    pub fn delete_received(&mut self) {
        self.received = None;
    }

    /// Power loss: every write not yet durable is gone.
    pub fn crash(&mut self) {
        self.pending.clear();
    }

    /// When the latest completed write was made durable.
    pub fn durable_at(&self) -> u64 {
        self.durable_at
    }

    pub fn hard_state(&self) -> HardState {
        self.hard_state
    }

    fn durable(&self) -> MutexGuard<'_, DurableLog> {
        self.log.lock().unwrap()
    }

    /// The durable log.
    pub fn log(&self) -> Vec<Entry> {
        self.durable().entries.iter().cloned().collect()
    }

    /// A read-only view of the durable log for the core, failing
    /// `failures_per_mille` reads in a thousand, as drawn from `rng`, and
    /// counting every read in `reads`.
    pub fn log_view(
        &self,
        rng: SplitMix64,
        failures_per_mille: u64,
        reads: Arc<AtomicU64>,
    ) -> LogView {
        LogView {
            log: Arc::clone(&self.log),
            rng: Mutex::new(rng),
            failures_per_mille,
            reads,
        }
    }

    /// The recorded snapshot, if any.
    pub fn snapshot(&self) -> Option<&SnapshotFile> {
        self.snapshot.as_ref()
    }

    /// The index the recorded snapshot covers (0 without one).
    pub fn snapshot_index(&self) -> Index {
        self.snapshot.as_ref().map_or(0, |s| s.meta.index)
    }

    fn last_index(&self) -> Index {
        let log = self.durable();
        log.start + log.entries.len() as Index - 1
    }

    /// The durable entry at `index`, if there is one.
    pub fn entry(&self, index: Index) -> Option<Entry> {
        self.durable().get(index).cloned()
    }

    /// The term of the durable entry at `index`, if there is one.
    pub fn term_at(&self, index: Index) -> Option<Term> {
        self.durable().get(index).map(|e| e.term)
    }

    /// Whether the disk holds the committed entry `(index, term)`: in its
    /// log, or covered by its snapshot (which holds only committed
    /// entries; the checker verifies the snapshot's last one).
    pub fn holds_committed(&self, index: Index, term: Term) -> bool {
        self.term_at(index) == Some(term) || index <= self.snapshot_index()
    }

    /// What a node restarting from this disk recovers: the recorded
    /// snapshot, which the host restores its state machine from (so it
    /// counts as applied), and the log after it; the membership comes from
    /// the snapshot and the log (an empty disk is a node joining the
    /// cluster). A received file that was never recorded is deleted.
    pub fn recover(&mut self) -> InitialState {
        self.received = None;
        let snapshot = self.snapshot.as_ref().map(|s| s.meta.clone());
        if let Some(meta) = &snapshot {
            let start = self.durable().start;
            assert!(
                start <= meta.index + 1,
                "the log starts at {start} after a snapshot through {}",
                meta.index
            );
        }
        InitialState {
            hard_state: self.hard_state,
            applied: snapshot.as_ref().map_or(0, |m| m.index),
            snapshot,
            entries: self.log(),
            ..InitialState::default()
        }
    }

    /// Deletes everything, as a host does with a removed node's data.
    pub fn wipe(&mut self) {
        *self = Disk::default();
    }

    pub fn is_blank(&self) -> bool {
        self.durable().entries.is_empty()
            && self.snapshot.is_none()
            && self.hard_state == HardState::default()
    }
}
