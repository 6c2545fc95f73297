//! The write path: encoding a batch into records, placing it in the active
//! segment, and rotating to the next segment when it does not fit.

use super::facade::Wal;
use super::log_state::Batch;
use super::prepare::{prepare_segment, PendingSegment};
use super::record::{encode_commit, encode_record, RecordMeta, RecordType, SegmentHeader};
use super::record::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::{EntryLoc, Segment};
use super::{SyncMode, WalError, WriteMethod, WriteTicket};
use crate::codec::{encode_hard_state, encode_snapshot_meta};
use crate::core::{Entry, HardState, SnapshotMeta};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// State only the (single, locked) writer touches.
pub(super) struct Writer {
    pub active: Arc<Segment>,
    /// Where the next batch goes in the active segment.
    pub end: usize,
    /// The next segment, being prepared in the background.
    pub pending: Option<PendingSegment>,
    /// Encoded records of the batch being written.
    records: Vec<u8>,
    /// Encoded hard state or snapshot metadata of the record being built.
    payload: Vec<u8>,
    /// Offsets (in `records`) of each entry's payload.
    entry_offsets: Vec<usize>,
}

impl Writer {
    pub(super) fn new(active: Arc<Segment>, end: usize, pending: Option<PendingSegment>) -> Writer {
        Writer {
            active,
            end,
            pending,
            records: Vec::new(),
            payload: Vec::new(),
            entry_offsets: Vec::new(),
        }
    }
}

/// What one batch carries, borrowed from the caller.
#[derive(Clone, Copy)]
pub(super) struct BatchView<'a> {
    pub snapshot: Option<&'a SnapshotMeta>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
}

impl BatchView<'_> {
    /// The batch as the log state sees it, with `loc` for each entry.
    fn to_batch<T>(self, mut loc: impl FnMut(usize, &Entry) -> T) -> Batch<T> {
        Batch {
            snapshot: self.snapshot.cloned(),
            entries: self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.index, e.term, loc(i, e)))
                .collect(),
            hard_state: self.hard_state.copied(),
        }
    }
}

impl Writer {
    /// Encodes `batch` (snapshot, entries, hard state, commit record) for a
    /// segment salted with `salt`.
    fn encode(&mut self, salt: u64, durable_mark: u32, batch: BatchView<'_>) {
        self.records.clear();
        self.entry_offsets.clear();
        let meta = |kind, index, term| RecordMeta {
            kind,
            entry_kind: 0,
            durable_mark,
            index,
            term,
        };
        let mut count = 0u32;
        if let Some(s) = batch.snapshot {
            self.payload.clear();
            encode_snapshot_meta(s, &mut self.payload);
            encode_record(
                &mut self.records,
                salt,
                meta(RecordType::SnapshotMeta, s.index, s.term),
                &self.payload,
            );
            count += 1;
        }
        for e in batch.entries {
            self.entry_offsets
                .push(self.records.len() + RECORD_HEADER_LEN);
            let m = RecordMeta {
                entry_kind: e.kind as u8,
                ..meta(RecordType::Entry, e.index, e.term)
            };
            encode_record(&mut self.records, salt, m, &e.data);
            count += 1;
        }
        if let Some(hs) = batch.hard_state {
            self.payload.clear();
            encode_hard_state(hs, &mut self.payload);
            encode_record(
                &mut self.records,
                salt,
                meta(RecordType::HardState, hs.commit, hs.term),
                &self.payload,
            );
            count += 1;
        }
        let last = batch.entries.last().map_or((0, 0), |e| (e.index, e.term));
        encode_commit(
            &mut self.records,
            salt,
            meta(RecordType::Commit, last.0, last.1),
            count,
        );
    }
}

/// A fresh random salt for a segment. No RNG crate is needed: the standard
/// library's hasher keys are random per process, and the counter and clock
/// make every call differ.
fn random_salt() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

impl Wal {
    /// Checks, encodes and writes one batch; the caller holds the writer
    /// lock. Returns the ticket to wait on for durability.
    pub(super) fn write_locked(
        &self,
        w: &mut Writer,
        batch: BatchView<'_>,
    ) -> Result<WriteTicket, WalError> {
        self.commit.check_poisoned()?;
        let limit = self.options.segment_size as usize;
        if let Some(e) = batch.entries.iter().find(|e| e.data.len() >= limit) {
            return Err(WalError::Invalid(format!(
                "entry {} has {} bytes, more than a segment holds",
                e.index,
                e.data.len()
            )));
        }
        self.log
            .read()
            .state
            .check_batch(&batch.to_batch(|_, _| ()))
            .map_err(WalError::Invalid)?;

        w.encode(w.active.salt(), self.commit.durable_mark() as u32, batch);
        let does_not_fit = |len: usize| {
            WalError::Invalid(format!(
                "a batch of {len} bytes does not fit in a segment of {limit} bytes"
            ))
        };
        if w.end + w.records.len() > w.active.len() {
            // Refuse before rotating what no segment could hold.
            if SEGMENT_HEADER_LEN + w.records.len() > limit {
                return Err(does_not_fit(w.records.len()));
            }
            self.rotate(w)?;
            // New salt, and nothing of the new segment is durable yet.
            w.encode(w.active.salt(), self.commit.durable_mark() as u32, batch);
            if w.end + w.records.len() > w.active.len() {
                // Only the restated state at the segment's start made the
                // difference.
                return Err(does_not_fit(w.records.len()));
            }
        }
        self.place(w, batch)
    }

    /// Writes the encoded batch at the end of the active segment and makes
    /// it visible to readers.
    fn place(&self, w: &mut Writer, batch: BatchView<'_>) -> Result<WriteTicket, WalError> {
        if let Err(e) = self.store(&w.active, w.end, &w.records) {
            // A half-done write leaves bytes we can no longer vouch for.
            self.commit.poison(format!("write failed: {e}"));
            return Err(e);
        }
        let (seq, start) = (w.active.seq, w.end);
        if let Some(first) = batch.entries.first() {
            w.active.note_entry_index(first.index);
        }
        let offsets = &w.entry_offsets;
        let applied = batch.to_batch(|i, e| EntryLoc {
            seq,
            offset: (start + offsets[i]) as u32,
            len: e.data.len() as u32,
            kind: e.kind,
        });
        self.log.write().state.apply_batch(applied);
        w.end += w.records.len();
        Ok(self.commit.published(w.end))
    }

    /// Seals the active segment and switches to the next one: the old one
    /// is made durable first, so a sealed segment never holds a torn batch.
    fn rotate(&self, w: &mut Writer) -> Result<(), WalError> {
        if self.options.sync == SyncMode::Always {
            self.commit
                .wait_durable(self.commit.last_written(), false)?;
        }
        let seq = w.active.seq + 1;
        let prepared = match w.pending.take() {
            Some(p) if p.seq() == seq => p.finish(),
            _ => prepare_segment(
                self.files.as_ref(),
                &self.dir,
                seq,
                self.options.segment_size,
            ),
        };
        let segment = Arc::new(prepared?);
        self.ready_for_appends(&segment);
        let end = self.activate(w, &segment)?;
        self.commit.switch_segment(segment.clone(), end);
        self.log.write().segments.insert(seq, segment.clone());
        w.active = segment;
        w.end = end;
        if self.prepare_ahead {
            w.pending = Some(PendingSegment::start(
                self.files.clone(),
                self.dir.clone(),
                seq + 1,
                self.options.segment_size,
            ));
        }
        Ok(())
    }

    /// Stores `bytes` at `offset` in `segment` the way this WAL writes.
    fn store(&self, segment: &Segment, offset: usize, bytes: &[u8]) -> Result<(), WalError> {
        segment.write(
            self.files.as_ref(),
            self.options.write_method,
            offset,
            bytes,
        )
    }

    /// Readies `segment`'s mapping for this WAL's appends (see
    /// `Segment::advise_synced_stores`).
    pub(super) fn ready_for_appends(&self, segment: &Segment) {
        if self.options.sync == SyncMode::Always && self.options.write_method == WriteMethod::Mmap {
            segment.advise_synced_stores();
        }
    }

    /// Gives a prepared segment its header and restates the current hard
    /// state and snapshot metadata at its start, so they survive the
    /// deletion of every older segment. Returns where appends continue.
    pub(super) fn activate(&self, w: &mut Writer, segment: &Segment) -> Result<usize, WalError> {
        let (first_index, hard_state, snapshot) = {
            let log = self.log.read();
            (
                log.state.last_index() + 1,
                log.state.hard_state,
                log.state.snapshot.clone(),
            )
        };
        let header = SegmentHeader {
            seq: segment.seq,
            salt: random_salt(),
            first_index,
            segment_size: segment.len() as u64,
        };
        segment.set_identity(header.salt, first_index);
        let restated = BatchView {
            snapshot: snapshot.as_ref(),
            entries: &[],
            hard_state: Some(&hard_state),
        };
        w.encode(header.salt, 0, restated);
        let header_bytes = header.encode();
        let written = self
            .store(segment, 0, &header_bytes)
            .and_then(|()| self.store(segment, header_bytes.len(), &w.records));
        if let Err(e) = written {
            self.commit.poison(format!("write failed: {e}"));
            return Err(e);
        }
        Ok(header_bytes.len() + w.records.len())
    }
}
