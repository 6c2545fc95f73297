//! The write path: encoding a batch into records, placing it in the active
//! segment, and rotating to the next segment when it does not fit.

use super::facade::Wal;
use super::groups::Restate;
use super::log_state::Batch;
use super::prepare::{prepare_segment, PendingSegment};
use super::record::SegmentHeader;
use super::record::{encode_commit, encode_record, encode_restate, RecordMeta, RecordType};
use super::record::{RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::{EntryLoc, Segment};
use super::{GroupWrite, SyncMode, WalError, WriteMethod, WriteTicket};
use crate::codec::{encode_hard_state, encode_snapshot_meta};
use crate::core::Entry;
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

/// One part of a batch: a group's writes, or a group's removal.
#[derive(Clone, Copy)]
pub(super) enum Op<'a> {
    Write(GroupWrite<'a>),
    Remove(u64),
}

/// A group's writes as the log state sees them, with `loc` for each entry.
fn to_batch<T>(write: &GroupWrite<'_>, mut loc: impl FnMut(usize, &Entry) -> T) -> Batch<T> {
    Batch {
        snapshot: write.snapshot.cloned(),
        entries: write
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.index, e.term, loc(i, e)))
            .collect(),
        hard_state: write.hard_state.copied(),
    }
}

impl Writer {
    /// Appends one record to the batch being built, with `payload` taken
    /// from `self.payload`.
    fn push_payload_record(&mut self, salt: u64, meta: RecordMeta) {
        encode_record(&mut self.records, salt, meta, &self.payload);
    }

    /// Encodes a batch (per group: its start record if `restates` has one,
    /// snapshot, entries, hard state; or its tombstone; then one commit
    /// record) for a segment salted with `salt`.
    fn encode(
        &mut self,
        salt: u64,
        durable_mark: u32,
        ops: &[Op<'_>],
        restates: &[Option<Restate>],
    ) {
        self.records.clear();
        self.entry_offsets.clear();
        let meta = |kind, group, index, term| RecordMeta {
            kind,
            entry_kind: 0,
            durable_mark,
            group,
            index,
            term,
        };
        let mut count = 0u32;
        for (op, restate) in ops.iter().zip(restates) {
            let write = match op {
                Op::Write(write) => write,
                Op::Remove(group) => {
                    encode_record(
                        &mut self.records,
                        salt,
                        meta(RecordType::Tombstone, *group, 0, 0),
                        &[],
                    );
                    count += 1;
                    continue;
                }
            };
            let group = write.group;
            if let Some(r) = restate {
                self.payload.clear();
                encode_restate(&r.hard_state, r.snapshot.as_ref(), &mut self.payload);
                self.push_payload_record(salt, meta(RecordType::GroupStart, group, r.offset, 0));
                count += 1;
            }
            if let Some(s) = write.snapshot {
                self.payload.clear();
                encode_snapshot_meta(s, &mut self.payload);
                self.push_payload_record(
                    salt,
                    meta(RecordType::SnapshotMeta, group, s.index, s.term),
                );
                count += 1;
            }
            for e in write.entries {
                self.entry_offsets
                    .push(self.records.len() + RECORD_HEADER_LEN);
                let m = RecordMeta {
                    entry_kind: e.kind as u8,
                    ..meta(RecordType::Entry, group, e.index, e.term)
                };
                encode_record(&mut self.records, salt, m, &e.data);
                count += 1;
            }
            if let Some(hs) = write.hard_state {
                self.payload.clear();
                encode_hard_state(hs, &mut self.payload);
                self.push_payload_record(
                    salt,
                    meta(RecordType::HardState, group, hs.commit, hs.term),
                );
                count += 1;
            }
        }
        encode_commit(
            &mut self.records,
            salt,
            meta(RecordType::Commit, 0, 0, 0),
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
        ops: &[Op<'_>],
    ) -> Result<WriteTicket, WalError> {
        self.commit.check_poisoned()?;
        let limit = self.options.segment_size as usize;
        self.check_ops(ops)?;
        let mut restates = self.restates(w.active.seq, ops);
        w.encode(
            w.active.salt(),
            self.commit.durable_mark() as u32,
            ops,
            &restates,
        );
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
            // New salt, every group restarts in the new segment, and
            // nothing of it is durable yet.
            restates = self.restates(w.active.seq, ops);
            w.encode(
                w.active.salt(),
                self.commit.durable_mark() as u32,
                ops,
                &restates,
            );
            if w.end + w.records.len() > w.active.len() {
                // Only the restated states made the difference.
                return Err(does_not_fit(w.records.len()));
            }
        }
        self.place(w, ops, restates)
    }

    /// Why `ops` may not be written, if they may not: an entry too large
    /// for any segment, a group named twice, or writes that break the
    /// batch rules of their group.
    fn check_ops(&self, ops: &[Op<'_>]) -> Result<(), WalError> {
        let limit = self.options.segment_size as usize;
        let group_of = |op: &Op<'_>| match op {
            Op::Write(write) => write.group,
            Op::Remove(group) => *group,
        };
        if ops.len() > 1 {
            let mut ids: Vec<u64> = ops.iter().map(group_of).collect();
            ids.sort_unstable();
            if let Some(pair) = ids.windows(2).find(|p| p[0] == p[1]) {
                return Err(WalError::Invalid(format!(
                    "group {} appears twice in one batch",
                    pair[0]
                )));
            }
        }
        let log = self.log.read();
        for op in ops {
            let Op::Write(write) = op else { continue };
            if let Some(e) = write.entries.iter().find(|e| e.data.len() >= limit) {
                return Err(WalError::Invalid(format!(
                    "entry {} has {} bytes, more than a segment holds",
                    e.index,
                    e.data.len()
                )));
            }
            log.groups
                .check(write.group, &to_batch(write, |_, _| ()))
                .map_err(WalError::Invalid)?;
        }
        Ok(())
    }

    /// The start record each written group needs in segment `seq`: one for
    /// every group that has not written there yet.
    fn restates(&self, seq: u64, ops: &[Op<'_>]) -> Vec<Option<Restate>> {
        let log = self.log.read();
        ops.iter()
            .map(|op| match op {
                Op::Write(write) if !log.groups.started_in(write.group, seq) => {
                    Some(log.groups.restate(write.group))
                }
                _ => None,
            })
            .collect()
    }

    /// Writes the encoded batch at the end of the active segment and makes
    /// it visible to readers.
    fn place(
        &self,
        w: &mut Writer,
        ops: &[Op<'_>],
        restates: Vec<Option<Restate>>,
    ) -> Result<WriteTicket, WalError> {
        if let Err(e) = self.store(&w.active, w.end, &w.records) {
            // A half-done write leaves bytes we can no longer vouch for.
            self.commit.poison(format!("write failed: {e}"));
            return Err(e);
        }
        self.commit.count_written(w.records.len());
        let (seq, start) = (w.active.seq, w.end);
        let mut offsets = w.entry_offsets.iter();
        let mut log = self.log.write();
        for (op, restate) in ops.iter().zip(restates) {
            let write = match op {
                Op::Write(write) => write,
                Op::Remove(group) => {
                    log.groups.remove(*group);
                    continue;
                }
            };
            let applied = to_batch(write, |_, e| EntryLoc {
                seq,
                offset: (start + offsets.next().copied().unwrap_or_default()) as u32,
                len: e.data.len() as u32,
                kind: e.kind,
            });
            // Checked before writing, under this writer lock: neither can
            // fail, since the start is taken from the state itself.
            let applied = restate
                .map_or(Ok(()), |r| log.groups.start(write.group, seq, r))
                .and_then(|()| log.groups.apply(write.group, seq, applied));
            debug_assert!(applied.is_ok(), "{applied:?}");
        }
        drop(log);
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
        let end = self.activate(&segment)?;
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

    /// Gives a prepared segment its header. Groups restate their state in
    /// it with their first write there. Returns where appends continue.
    pub(super) fn activate(&self, segment: &Segment) -> Result<usize, WalError> {
        let header = SegmentHeader {
            seq: segment.seq,
            salt: random_salt(),
            segment_size: segment.len() as u64,
        };
        segment.set_salt(header.salt);
        let header_bytes = header.encode();
        if let Err(e) = self.store(segment, 0, &header_bytes) {
            self.commit.poison(format!("write failed: {e}"));
            return Err(e);
        }
        Ok(header_bytes.len())
    }
}
