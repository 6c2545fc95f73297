//! The [`Wal`] itself: opening (lock, recovery, first segment), the public
//! operations, and compaction.

use super::file::{try_lock_exclusive, FileLayer};
use super::group_commit::GroupCommit;
use super::log_state::LogState;
use super::prepare::{prepare_segment, PendingSegment};
use super::recovery::recover;
use super::segment::{io_error, EntryLoc, Segment};
use super::writer::{BatchView, Writer};
use super::{
    AdvancedOptions, Recovered, RecoveryReport, SyncMode, WalError, WalOptions, WriteTicket,
};
use crate::core::{Entry, HardState, Index, SnapshotMeta, Term};
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

/// What readers share: the live entries and the segments holding them.
pub(super) struct LogView {
    pub state: LogState<EntryLoc>,
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
    /// recovers what it holds.
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
        let recovery = recover(dir, files.as_ref())?;
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
                state: recovery.state,
                segments,
            }),
            commit: GroupCommit::new(files, write_method, active.clone(), end),
            report: recovery.report,
            _lock: lock,
        };
        wal.ready_for_appends(&active);
        if fresh {
            let mut w = wal.writer.lock();
            let end = wal.activate(&mut w, &active)?;
            w.end = end;
            wal.commit.switch_segment(active, end);
        }
        Ok((wal, recovery.recovered))
    }

    /// Appends one batch and returns once it is durable. If the first entry's
    /// index is at or below the last index, the stored suffix from there is
    /// replaced. Concurrent callers share syncs (group commit).
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
        self.commit.check_poisoned()?;
        if entries.is_empty() && hard_state.is_none() {
            return Ok(self.commit.last_written());
        }
        let mut w = self.writer.lock();
        let batch = BatchView {
            snapshot: None,
            entries,
            hard_state,
        };
        self.write_locked(&mut w, batch)
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

    /// Entries in `[lo, hi)`, stopping early once `max_bytes` is reached,
    /// counting [`Entry::size`] per entry (at least one entry is returned
    /// when the range is not empty).
    pub fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, WalError> {
        self.commit.check_poisoned()?;
        let log = self.log.read();
        let (first, last) = (log.state.first_index(), log.state.last_index());
        if lo > hi || lo < first || hi > last + 1 {
            return Err(WalError::Invalid(format!(
                "entries [{lo}, {hi}) are outside the stored log [{first}, {last}]"
            )));
        }
        let mut out = Vec::new();
        let mut total = 0u64;
        for (index, (term, loc)) in log.state.iter_from(lo).take((hi - lo) as usize) {
            let data = log
                .segments
                .get(&loc.seq)
                .and_then(|s| s.read(loc.offset as usize, loc.len as usize))
                .ok_or_else(|| {
                    WalError::Invalid(format!("entry {index} points outside its segment"))
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
    }

    /// The term of the entry at `index`, if stored (or if it is the
    /// snapshot's index).
    pub fn term(&self, index: Index) -> Result<Option<Term>, WalError> {
        self.commit.check_poisoned()?;
        Ok(self.log.read().state.term(index))
    }

    /// Index of the first stored entry (snapshot index + 1 when empty).
    pub fn first_index(&self) -> Index {
        self.log.read().state.first_index()
    }

    /// Index of the last stored entry (snapshot index when empty).
    pub fn last_index(&self) -> Index {
        self.log.read().state.last_index()
    }

    /// The last hard state written.
    pub fn hard_state(&self) -> HardState {
        self.log.read().state.hard_state
    }

    /// The last snapshot metadata written.
    pub fn snapshot(&self) -> Option<SnapshotMeta> {
        self.log.read().state.snapshot.clone()
    }

    /// Records snapshot metadata durably. If the log does not hold the
    /// snapshot's last entry (with its term), every stored entry is
    /// discarded and the log continues after the snapshot.
    pub fn save_snapshot(&self, meta: &SnapshotMeta) -> Result<(), WalError> {
        self.commit.check_poisoned()?;
        let ticket = {
            let mut w = self.writer.lock();
            let batch = BatchView {
                snapshot: Some(meta),
                entries: &[],
                hard_state: None,
            };
            self.write_locked(&mut w, batch)?
        };
        self.wait_durable(ticket)
    }

    /// Deletes whole segments whose entries all lie at or below `upto`,
    /// which must be covered by a saved snapshot. The active segment is
    /// never deleted; entries at or below `upto` that share a segment with
    /// later ones stay readable.
    pub fn compact(&self, upto: Index) -> Result<(), WalError> {
        self.commit.check_poisoned()?;
        let _writer = self.writer.lock();
        let snapshot_index = self
            .log
            .read()
            .state
            .snapshot
            .as_ref()
            .map_or(0, |s| s.index);
        if upto > snapshot_index {
            return Err(WalError::Invalid(format!(
                "compaction up to {upto} is not covered by the snapshot at {snapshot_index}"
            )));
        }
        let segments: Vec<Arc<Segment>> = self.log.read().segments.values().cloned().collect();
        let new_head = compaction_head(&segments, upto);
        if new_head == 0 {
            return Ok(());
        }
        {
            let mut log = self.log.write();
            for s in &segments[..new_head] {
                log.segments.remove(&s.seq);
            }
            log.state.drop_before(segments[new_head].first_index());
        }
        // Oldest first: a crash part-way leaves a shorter prefix deleted,
        // which is itself a valid log.
        for s in &segments[..new_head] {
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

/// How many of the oldest `segments` (the last is the active one) can be
/// deleted when entries up to `upto` are no longer needed. Segment `h` may
/// become the head when everything before its first index is at or below
/// `upto` and no segment from `h` on rewrites an entry before that index
/// (replay from `h` must never reach below its start). Every intermediate
/// head must qualify too, because deletion is not atomic.
fn compaction_head(segments: &[Arc<Segment>], upto: Index) -> usize {
    let mut suffix_min = vec![u64::MAX; segments.len() + 1];
    for (i, s) in segments.iter().enumerate().rev() {
        suffix_min[i] = suffix_min[i + 1].min(s.min_entry_index());
    }
    let mut head = 0;
    for (h, s) in segments.iter().enumerate().skip(1) {
        let first = s.first_index();
        if first.saturating_sub(1) > upto || suffix_min[h] < first {
            break;
        }
        head = h;
    }
    head
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
