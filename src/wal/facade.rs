//! The [`Wal`] itself: opening (lock, recovery, first segment), the public
//! operations, and compaction.

use super::file::{try_lock_exclusive, FileLayer};
use super::group_commit::GroupCommit;
use super::groups::{fresh_log, Groups};
use super::log_state::LogState;
use super::prepare::{prepare_segment, PendingSegment};
use super::recovery::{recover, Contents};
use super::segment::{io_error, EntryLoc, Segment};
use super::writer::{Op, Writer};
use super::{
    AdvancedOptions, GroupWrite, Recovered, RecoveredGroups, RecoveryReport, SyncMode, WalError,
    WalOptions, WriteTicket, DEFAULT_GROUP,
};
use crate::core::{Entry, HardState, Index, SnapshotMeta, Term};
use crate::metrics::WalMetrics;
use parking_lot::{Mutex, RwLock};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Name of the lock file in the data directory.
const LOCK_FILE: &str = "LOCK";
/// Smallest segment accepted: room for the header and a few records.
pub const MIN_SEGMENT_SIZE: u64 = 4096;
/// Largest segment accepted: recovery reads a whole segment into memory,
/// and offsets within a segment are stored as 32-bit numbers.
pub const MAX_SEGMENT_SIZE: u64 = 1 << 30;

/// What readers share: every group's live entries and the segments
/// holding them.
pub(super) struct LogView {
    pub groups: Groups<EntryLoc>,
    pub segments: BTreeMap<u64, Arc<Segment>>,
}

/// An open write-ahead log. All methods take `&self` and are safe to call
/// from any number of threads.
pub struct Wal {
    pub(super) dir: PathBuf,
    pub(super) options: WalOptions,
    pub(super) files: Arc<dyn FileLayer>,
    pub(super) prepare_ahead: bool,
    /// Serializes writers, rotation and compaction.
    pub(super) writer: Mutex<Writer>,
    pub(super) log: RwLock<LogView>,
    pub(super) commit: GroupCommit,
    report: RecoveryReport,
    /// Holds the flock on the data directory for the WAL's lifetime.
    _lock: File,
}

impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, locks the directory and
    /// recovers what it holds; returns what [`DEFAULT_GROUP`] holds.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        Wal::open_with(dir, options, AdvancedOptions::default())
    }

    /// [`Wal::open`] with a chosen file layer, write method and
    /// preparation policy.
    pub fn open_with(
        dir: &Path,
        options: WalOptions,
        advanced: AdvancedOptions,
    ) -> Result<(Wal, Recovered), WalError> {
        let (wal, mut groups) = Wal::open_groups_with(dir, options, advanced)?;
        let recovered = groups.remove(&DEFAULT_GROUP).unwrap_or_default();
        Ok((wal, recovered))
    }

    /// [`Wal::open`] returning what every group holds.
    pub fn open_groups(
        dir: &Path,
        options: WalOptions,
    ) -> Result<(Wal, RecoveredGroups), WalError> {
        Wal::open_groups_with(dir, options, AdvancedOptions::default())
    }

    /// [`Wal::open_groups`] with a chosen file layer, write method and
    /// preparation policy.
    pub fn open_groups_with(
        dir: &Path,
        options: WalOptions,
        advanced: AdvancedOptions,
    ) -> Result<(Wal, RecoveredGroups), WalError> {
        Wal::open_recovering(dir, options, advanced, Contents::Entries)
    }

    /// [`Wal::open_groups_with`] that builds every group's index but
    /// copies out no entries: for owners that read entries through
    /// [`Wal::entries_of`] when they need them (a runtime's groups), so
    /// that a start costs a scan of the log, not a copy of it.
    pub fn open_index_only(
        dir: &Path,
        options: WalOptions,
        advanced: AdvancedOptions,
    ) -> Result<Wal, WalError> {
        Wal::open_recovering(dir, options, advanced, Contents::IndexOnly).map(|(wal, _)| wal)
    }

    fn open_recovering(
        dir: &Path,
        options: WalOptions,
        advanced: AdvancedOptions,
        contents: Contents,
    ) -> Result<(Wal, RecoveredGroups), WalError> {
        if options.segment_size < MIN_SEGMENT_SIZE
            || options.segment_size > MAX_SEGMENT_SIZE
            || options.segment_size % 8 != 0
        {
            return Err(WalError::Invalid(format!(
                "segment size {} must be a multiple of 8 between {MIN_SEGMENT_SIZE} and {MAX_SEGMENT_SIZE}",
                options.segment_size
            )));
        }
        std::fs::create_dir_all(dir).map_err(|e| io_error("mkdir", dir, e))?;
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| io_error("open", &lock_path, e))?;
        if !try_lock_exclusive(&lock).map_err(|e| io_error("flock", &lock_path, e))? {
            return Err(WalError::Locked(dir.to_path_buf()));
        }

        let files = advanced.files;
        let recovery = recover(dir, files.as_ref(), contents)?;
        let fresh = recovery.segments.is_empty();
        let (active, end) = match recovery.segments.last() {
            Some(tail) => (tail.clone(), recovery.tail_end),
            None => (
                Arc::new(prepare_segment(
                    files.as_ref(),
                    dir,
                    1,
                    options.segment_size,
                )?),
                0,
            ),
        };
        let pending = advanced.prepare_ahead.then(|| {
            PendingSegment::start(
                files.clone(),
                dir.to_path_buf(),
                active.seq + 1,
                options.segment_size,
            )
        });
        let mut segments: BTreeMap<u64, Arc<Segment>> = recovery
            .segments
            .iter()
            .map(|s| (s.seq, s.clone()))
            .collect();
        segments.insert(active.seq, active.clone());
        let write_method = options.write_method;
        let wal = Wal {
            dir: dir.to_path_buf(),
            options,
            files: files.clone(),
            prepare_ahead: advanced.prepare_ahead,
            writer: Mutex::new(Writer::new(active.clone(), end, pending)),
            log: RwLock::new(LogView {
                groups: recovery.groups,
                segments,
            }),
            commit: GroupCommit::new(files, write_method, active.clone(), end),
            report: recovery.report,
            _lock: lock,
        };
        wal.ready_for_appends(&active);
        if fresh {
            let mut w = wal.writer.lock();
            let end = wal.activate(&active)?;
            w.end = end;
            wal.commit.switch_segment(active, end);
        }
        Ok((wal, recovery.recovered))
    }

    /// Appends one batch to [`DEFAULT_GROUP`] and returns once it is
    /// durable. If the first entry's index is at or below the last index,
    /// the stored suffix from there is replaced. Concurrent callers share
    /// syncs (group commit).
    pub fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        let ticket = self.write(entries, hard_state)?;
        self.wait_durable(ticket)
    }

    /// The first half of [`Wal::append`]: writes the batch (readers see it
    /// at once) and returns a ticket for [`Wal::wait_durable`]. Lets a
    /// caller that must order its batches (contiguous indexes) release its
    /// own lock before waiting, so that concurrent writers share one sync.
    /// An empty batch writes nothing and returns the last batch's ticket.
    pub fn write(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<WriteTicket, WalError> {
        self.write_groups(&[GroupWrite {
            group: DEFAULT_GROUP,
            snapshot: None,
            entries,
            hard_state,
        }])
    }

    /// Writes the writes of many groups as one batch (all or none of it
    /// survives a crash) and returns a ticket for [`Wal::wait_durable`]:
    /// one sync makes every group's writes durable. Each group's writes
    /// follow the rules of [`Wal::write`] and [`Wal::save_snapshot`]; a
    /// group may appear once. Nothing is written if any part is invalid.
    /// Empty writes are skipped; with nothing left, returns the last
    /// batch's ticket.
    pub fn write_groups(&self, writes: &[GroupWrite<'_>]) -> Result<WriteTicket, WalError> {
        self.commit.check_poisoned()?;
        let ops: Vec<Op<'_>> = writes
            .iter()
            .filter(|w| !w.is_empty())
            .map(|&w| Op::Write(w))
            .collect();
        if ops.is_empty() {
            return Ok(self.commit.last_written());
        }
        let mut w = self.writer.lock();
        self.write_locked(&mut w, &ops)
    }

    /// What the WAL measured since it opened: its syncs' durations, bytes
    /// and batches written.
    pub fn metrics(&self) -> WalMetrics {
        self.commit.metrics()
    }

    /// [`Wal::write_groups`], then waits until the batch is durable.
    pub fn append_groups(&self, writes: &[GroupWrite<'_>]) -> Result<(), WalError> {
        let ticket = self.write_groups(writes)?;
        self.wait_durable(ticket)
    }

    /// Returns once the batch of `ticket` (and every batch before it) is
    /// durable; with [`SyncMode::Never`] at once.
    pub fn wait_durable(&self, ticket: WriteTicket) -> Result<(), WalError> {
        self.commit.check_poisoned()?;
        match self.options.sync {
            SyncMode::Always => self.commit.wait_durable(ticket, true),
            SyncMode::Never => Ok(()),
        }
    }

    /// Runs `f` on `group`'s log, or on an empty one if the group has
    /// never been written (or was removed).
    fn read_group<R>(&self, group: u64, f: impl FnOnce(&LogState<EntryLoc>, &LogView) -> R) -> R {
        let log = self.log.read();
        match log.groups.map.get(&group) {
            Some(g) => f(&g.log, &log),
            None => f(&fresh_log(), &log),
        }
    }

    /// [`DEFAULT_GROUP`]'s entries in `[lo, hi)`: see [`Wal::entries_of`].
    pub fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, WalError> {
        self.entries_of(DEFAULT_GROUP, lo, hi, max_bytes)
    }

    /// `group`'s entries in `[lo, hi)`, stopping early once `max_bytes` is
    /// reached, counting [`Entry::size`] per entry (at least one entry is
    /// returned when the range is not empty).
    pub fn entries_of(
        &self,
        group: u64,
        lo: Index,
        hi: Index,
        max_bytes: u64,
    ) -> Result<Vec<Entry>, WalError> {
        self.read_entries(group, lo, hi, max_bytes, |_| true)
    }

    /// [`Wal::entries_of`] without the data of entries other than
    /// membership changes (their data comes back empty): what a group's
    /// restart needs of entries its host has applied (terms to check,
    /// memberships to replay), without reading the log's payloads.
    pub fn entry_headers_of(
        &self,
        group: u64,
        lo: Index,
        hi: Index,
    ) -> Result<Vec<Entry>, WalError> {
        self.read_entries(group, lo, hi, u64::MAX, |kind| {
            kind == crate::core::EntryKind::ConfChange
        })
    }

    /// Reads `[lo, hi)` of `group`, with the data of the entries whose kind
    /// `with_data` accepts.
    fn read_entries(
        &self,
        group: u64,
        lo: Index,
        hi: Index,
        max_bytes: u64,
        with_data: impl Fn(crate::core::EntryKind) -> bool,
    ) -> Result<Vec<Entry>, WalError> {
        self.commit.check_poisoned()?;
        self.read_group(group, |state, log| {
            let (first, last) = (state.first_index(), state.last_index());
            if lo > hi || lo < first || hi > last + 1 {
                return Err(WalError::Invalid(format!(
                    "entries [{lo}, {hi}) of group {group} are outside the stored log [{first}, {last}]"
                )));
            }
            let mut out = Vec::new();
            let mut total = 0u64;
            for (index, (term, loc)) in state.iter_from(lo).take((hi - lo) as usize) {
                if !with_data(loc.kind) {
                    out.push(Entry {
                        index,
                        term: *term,
                        kind: loc.kind,
                        data: Default::default(),
                    });
                    continue;
                }
                let data = log
                    .segments
                    .get(&loc.seq)
                    .and_then(|s| s.read(loc.offset as usize, loc.len as usize))
                    .ok_or_else(|| {
                        WalError::Invalid(format!(
                            "entry {index} of group {group} points outside its segment"
                        ))
                    })?;
                let entry = Entry {
                    index,
                    term: *term,
                    kind: loc.kind,
                    data: data.into(),
                };
                total += entry.size();
                if total > max_bytes && !out.is_empty() {
                    break;
                }
                out.push(entry);
            }
            Ok(out)
        })
    }

    /// The term of [`DEFAULT_GROUP`]'s entry at `index`: see [`Wal::term_of`].
    pub fn term(&self, index: Index) -> Result<Option<Term>, WalError> {
        self.term_of(DEFAULT_GROUP, index)
    }

    /// The term of `group`'s entry at `index`, if stored (or if it is the
    /// snapshot's index).
    pub fn term_of(&self, group: u64, index: Index) -> Result<Option<Term>, WalError> {
        self.commit.check_poisoned()?;
        Ok(self.read_group(group, |state, _| state.term(index)))
    }

    /// [`DEFAULT_GROUP`]'s first index: see [`Wal::first_index_of`].
    pub fn first_index(&self) -> Index {
        self.first_index_of(DEFAULT_GROUP)
    }

    /// Index of `group`'s first stored entry (snapshot index + 1 when empty).
    pub fn first_index_of(&self, group: u64) -> Index {
        self.read_group(group, |state, _| state.first_index())
    }

    /// [`DEFAULT_GROUP`]'s last index: see [`Wal::last_index_of`].
    pub fn last_index(&self) -> Index {
        self.last_index_of(DEFAULT_GROUP)
    }

    /// Index of `group`'s last stored entry (snapshot index when empty).
    pub fn last_index_of(&self, group: u64) -> Index {
        self.read_group(group, |state, _| state.last_index())
    }

    /// The last hard state written for [`DEFAULT_GROUP`].
    pub fn hard_state(&self) -> HardState {
        self.hard_state_of(DEFAULT_GROUP)
    }

    /// The last hard state written for `group` (default if none).
    pub fn hard_state_of(&self, group: u64) -> HardState {
        self.read_group(group, |state, _| state.hard_state)
    }

    /// The last snapshot metadata written for [`DEFAULT_GROUP`].
    pub fn snapshot(&self) -> Option<SnapshotMeta> {
        self.snapshot_of(DEFAULT_GROUP)
    }

    /// The last snapshot metadata written for `group`.
    pub fn snapshot_of(&self, group: u64) -> Option<SnapshotMeta> {
        self.read_group(group, |state, _| state.snapshot.clone())
    }

    /// The groups the WAL holds (written and not removed), in id order.
    pub fn groups(&self) -> Vec<u64> {
        self.log.read().groups.map.keys().copied().collect()
    }

    /// Records snapshot metadata of [`DEFAULT_GROUP`] durably: see
    /// [`Wal::save_snapshot_of`].
    pub fn save_snapshot(&self, meta: &SnapshotMeta) -> Result<(), WalError> {
        self.save_snapshot_of(DEFAULT_GROUP, meta)
    }

    /// Records snapshot metadata of `group` durably. If the log does not
    /// hold the snapshot's last entry (with its term), every stored entry
    /// of the group is discarded and its log continues after the snapshot.
    pub fn save_snapshot_of(&self, group: u64, meta: &SnapshotMeta) -> Result<(), WalError> {
        self.append_groups(&[GroupWrite {
            group,
            snapshot: Some(meta),
            ..GroupWrite::default()
        }])
    }

    /// [`Wal::compact_group`] for [`DEFAULT_GROUP`].
    pub fn compact(&self, upto: Index) -> Result<(), WalError> {
        self.compact_group(DEFAULT_GROUP, upto)
    }

    /// Lets `group`'s entries up to `upto`, which must be covered by the
    /// group's saved snapshot, be deleted, then deletes the oldest segments
    /// that no group needs any more. The active segment is never deleted;
    /// entries at or below `upto` that share a segment with later ones, or
    /// with records another group needs, stay readable.
    pub fn compact_group(&self, group: u64, upto: Index) -> Result<(), WalError> {
        self.commit.check_poisoned()?;
        let mut w = self.writer.lock();
        {
            let mut log = self.log.write();
            let g = log.groups.map.get_mut(&group);
            let snapshot_index = g
                .as_ref()
                .and_then(|g| g.log.snapshot.as_ref())
                .map_or(0, |s| s.index);
            if upto > snapshot_index {
                return Err(WalError::Invalid(format!(
                    "compaction of group {group} up to {upto} is not covered by the snapshot at {snapshot_index}"
                )));
            }
            if let Some(g) = g {
                g.compacted = g.compacted.max(upto);
            }
        }
        self.purge(&mut w)
    }

    /// Removes `group`: a durable tombstone keeps recovery from bringing
    /// it back, and its segments may go. Writing to the group afterwards
    /// starts a new, empty log.
    pub fn remove_group(&self, group: u64) -> Result<(), WalError> {
        self.commit.check_poisoned()?;
        if !self.log.read().groups.map.contains_key(&group) {
            return Ok(());
        }
        let mut w = self.writer.lock();
        let ticket = self.write_locked(&mut w, &[Op::Remove(group)])?;
        if self.options.sync == SyncMode::Always {
            self.commit.wait_durable(ticket, false)?;
        }
        self.purge(&mut w)
    }

    /// Segment files in use (sealed and active).
    pub fn segment_count(&self) -> usize {
        self.log.read().segments.len()
    }

    /// The groups that keep the oldest segments from being deleted, oldest
    /// pinned segment first, at most `max` of them, each with the first
    /// entry index it still needs. A group that got a snapshot and
    /// compacted past that index lets them go: the hint to send a snapshot
    /// to a lagging group, or to compact an idle one.
    pub fn groups_pinning_oldest(&self, max: usize) -> Vec<(u64, Index)> {
        let w = self.writer.lock();
        let log = self.log.read();
        let oldest = log.segments.keys().next().copied().unwrap_or(w.active.seq);
        let mut pins = log.groups.pinning(oldest, w.active.seq);
        pins.truncate(max);
        pins
    }

    /// Deletes the oldest segments that no group needs (the caller holds
    /// the writer lock). Groups whose only records there are their state
    /// get it restated in the active segment first.
    fn purge(&self, w: &mut Writer) -> Result<(), WalError> {
        let oldest = self.log.read().segments.keys().next().copied();
        let Some(oldest) = oldest else { return Ok(()) };
        let (head, restate) = self.log.read().groups.purge_plan(oldest, w.active.seq);
        if head <= oldest {
            return Ok(());
        }
        for group in restate {
            let rewrite = GroupWrite {
                group,
                ..GroupWrite::default()
            };
            self.write_locked(w, &[Op::Write(rewrite)])?;
        }
        // The restated states and any tombstone must be durable before the
        // unlinks are, in every sync mode: a lost restatement after a
        // durable deletion would lose a group's state for good.
        self.commit
            .wait_durable(self.commit.last_written(), false)?;
        let doomed: Vec<Arc<Segment>> = {
            let mut log = self.log.write();
            let kept = log.segments.split_off(&head);
            log.groups.drop_segments_before(head);
            std::mem::replace(&mut log.segments, kept)
                .into_values()
                .collect()
        };
        // Oldest first: a crash part-way leaves a shorter prefix deleted,
        // which is itself a valid log.
        for s in &doomed {
            self.files
                .remove(&s.path)
                .map_err(|e| io_error("unlink", &s.path, e))?;
        }
        self.files
            .sync_dir(&self.dir)
            .map_err(|e| io_error("fsync", &self.dir, e))
    }

    /// What recovery found and repaired when this WAL was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// Why the WAL is poisoned, if it is.
    pub fn poison_reason(&self) -> Option<String> {
        self.commit.poison_reason()
    }

    /// Where the next batch goes: the active segment's sequence number and
    /// the byte offset in it. For diagnostics and tests.
    pub fn write_position(&self) -> (u64, u64) {
        let w = self.writer.lock();
        (w.active.seq, w.end as u64)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Wal {
    fn drop(&mut self) {
        // Let a background preparation finish so no thread outlives the
        // directory lock; its file is deleted as unused on the next open.
        if let Some(pending) = self.writer.get_mut().pending.take() {
            let _ = pending.finish();
        }
    }
}
