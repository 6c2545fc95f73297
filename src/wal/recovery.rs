//! Recovery: rebuilds the log from the segment files, reading them with
//! pread (an I/O error is an error, never a SIGBUS through a mapping).
//!
//! Rules (docs/DISK-FORMAT.md, "Recovery"):
//! - temporary files and trailing never-used segments are deleted;
//! - segment sequence numbers, and each group's entry indexes from one
//!   segment to the next, must be continuous;
//! - a sealed segment must hold only whole, valid batches followed by zeros;
//! - in the tail segment, a torn last batch is cut off and the rest of the
//!   segment zeroed and synced, unless a valid record after the damage shows
//!   the damaged bytes had already been synced: that is corruption.

use super::file::FileLayer;
use super::groups::{Groups, Restate};
use super::log_state::Batch;
use super::record::{commit_count, decode_restate, parse_record, Parsed, RecordMeta};
use super::record::{RecordType, SegmentHeader};
use super::record::{RECORD_ALIGN, SEGMENT_HEADER_LEN};
use super::segment::{
    io_error, parse_segment_file_name, segment_file_name, EntryLoc, Segment, TEMP_SUFFIX,
};
use super::{Recovered, RecoveredGroups, RecoveryReport, TailCut, WalError, MAX_SEGMENT_SIZE};
use crate::codec::{decode_hard_state, decode_snapshot_meta};
use crate::core::{Entry, EntryKind, Payload, Term};
use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What recovery hands to the WAL.
pub(crate) struct Recovery {
    /// Every used segment, mapped, oldest first; the last is the tail.
    pub segments: Vec<Arc<Segment>>,
    /// Where writing continues in the tail segment.
    pub tail_end: usize,
    pub groups: Groups<EntryLoc>,
    pub recovered: RecoveredGroups,
    pub report: RecoveryReport,
}

/// An entry as replayed: where it lives and what it holds (`None` when
/// recovery only indexes the log, see [`Contents`]).
struct ReplayedEntry {
    loc: EntryLoc,
    term: Term,
    data: Option<Payload>,
}

/// Where segments are replayed to.
struct Replay {
    contents: Contents,
    groups: Groups<ReplayedEntry>,
}

/// What recovery hands back besides the index of every group's log.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Contents {
    /// Every group's entries after its snapshot, copied out of the
    /// segments (a node's core holds its whole log).
    Entries,
    /// The index alone: entries are read through the mapping when needed
    /// (a runtime's groups read theirs through their log views), which
    /// spares copying the whole log at start.
    IndexOnly,
}

fn corrupt(path: &Path, offset: usize, reason: impl Into<String>) -> WalError {
    WalError::Corrupt {
        path: path.to_path_buf(),
        offset: offset as u64,
        reason: reason.into(),
    }
}

/// A segment file found on disk.
struct Found {
    seq: u64,
    path: PathBuf,
    file: File,
    /// `None` when the header is all zeros: prepared, never used.
    header: Option<SegmentHeader>,
}

pub(crate) fn recover(
    dir: &Path,
    files: &dyn FileLayer,
    contents: Contents,
) -> Result<Recovery, WalError> {
    let mut report = RecoveryReport::default();
    let found = find_segments(dir, files, &mut report)?;
    let used = drop_unused_segments(dir, files, found, &mut report)?;
    let mut replay = Replay {
        contents,
        groups: Groups::default(),
    };
    let mut segments = Vec::with_capacity(used.len());
    let mut tail_end = SEGMENT_HEADER_LEN;
    let mut buf = Vec::new();
    let count = used.len();
    for (i, (f, header)) in used.into_iter().enumerate() {
        let is_tail = i + 1 == count;
        let (segment, end) = recover_segment(
            files,
            f,
            &header,
            is_tail,
            &mut replay,
            &mut buf,
            &mut report,
        )?;
        tail_end = end;
        segments.push(Arc::new(segment));
    }
    report.segments = segments.len();
    let (groups, recovered) = split_off_entries(replay.groups);
    Ok(Recovery {
        segments,
        tail_end,
        groups,
        recovered,
        report,
    })
}

/// Deletes the trailing segments that were prepared but never used (all-zero
/// header) and returns the used ones with their headers. A headerless
/// segment before a used one is corruption.
fn drop_unused_segments(
    dir: &Path,
    files: &dyn FileLayer,
    found: Vec<Found>,
    report: &mut RecoveryReport,
) -> Result<Vec<(Found, SegmentHeader)>, WalError> {
    let mut used = Vec::with_capacity(found.len());
    let mut unused: Vec<Found> = Vec::new();
    for f in found {
        match (f.header, unused.first()) {
            (Some(header), None) => used.push((f, header)),
            (Some(_), Some(first_unused)) => {
                return Err(corrupt(
                    &first_unused.path,
                    0,
                    format!(
                        "segment has no header but a later segment ({}) is in use",
                        f.path.display()
                    ),
                ))
            }
            (None, _) => unused.push(f),
        }
    }
    for f in &unused {
        files
            .remove(&f.path)
            .map_err(|e| io_error("unlink", &f.path, e))?;
        report.removed_files.push(f.path.clone());
    }
    if !report.removed_files.is_empty() {
        files.sync_dir(dir).map_err(|e| io_error("fsync", dir, e))?;
    }
    Ok(used)
}

/// Replays one used segment into `groups`, repairs it if it is the tail,
/// and maps it. Returns the segment and where
/// its valid data ends.
fn recover_segment(
    files: &dyn FileLayer,
    f: Found,
    header: &SegmentHeader,
    is_tail: bool,
    replay: &mut Replay,
    buf: &mut Vec<u8>,
    report: &mut RecoveryReport,
) -> Result<(Segment, usize), WalError> {
    let size = usize::try_from(header.segment_size)
        .ok()
        .filter(|&s| s >= SEGMENT_HEADER_LEN && s as u64 <= MAX_SEGMENT_SIZE)
        .ok_or_else(|| corrupt(&f.path, 0, "implausible segment size in header"))?;
    let file_len = read_whole(files, &f, size, buf)?;
    if file_len < size && !is_tail {
        return Err(corrupt(
            &f.path,
            file_len,
            format!("sealed segment file is {file_len} bytes, its header says {size}"),
        ));
    }
    let scan = replay_segment(buf, header, &f.path, replay)?;
    if !scan.clean && !is_tail {
        return Err(scan.damage_error(buf, &f.path));
    }
    if is_tail {
        repair_tail(files, &f, header, buf, &scan, file_len, report)?;
    }
    let segment = Segment::map(f.seq, f.path, f.file, size as u64)?;
    segment.set_salt(header.salt);
    Ok((segment, scan.good_end))
}

/// Makes the tail segment ready for appends: a torn end is cut off (unless
/// it proves to be corruption), a truncated file regains its blocks, and
/// what was read is made durable.
fn repair_tail(
    files: &dyn FileLayer,
    f: &Found,
    header: &SegmentHeader,
    buf: &[u8],
    scan: &Scan,
    file_len: usize,
    report: &mut RecoveryReport,
) -> Result<(), WalError> {
    if !scan.clean {
        if let Some(evidence) = synced_record_after(buf, header, scan.damage_at, scan.good_end) {
            let mut err = scan.damage_error(buf, &f.path);
            if let WalError::Corrupt { reason, .. } = &mut err {
                reason.push_str(&format!(
                    "; a valid record at offset {evidence} was written after these bytes were synced"
                ));
            }
            return Err(err);
        }
        let discarded = zero_from(files, f, buf, scan.good_end)?;
        report.tail_cut = Some(TailCut {
            path: f.path.clone(),
            offset: scan.good_end as u64,
            discarded_bytes: discarded as u64,
        });
    }
    if file_len < buf.len() {
        files
            .allocate(&f.file, &f.path, buf.len() as u64)
            .map_err(|e| io_error("fallocate", &f.path, e))?;
    }
    // What we read may have been in the page cache only (a writer that
    // never synced, killed): make it durable before anything is appended
    // after it.
    files
        .sync_file(&f.file, &f.path)
        .map_err(|e| io_error("fsync", &f.path, e))
}

/// Splits the replayed groups into the locations the WAL keeps and the
/// entries after each group's snapshot that `open` hands back.
fn split_off_entries(groups: Groups<ReplayedEntry>) -> (Groups<EntryLoc>, RecoveredGroups) {
    let mut recovered: RecoveredGroups = groups
        .map
        .iter()
        .map(|(&id, g)| {
            let r = Recovered {
                hard_state: g.log.hard_state,
                snapshot: g.log.snapshot.clone(),
                entries: Vec::new(),
            };
            (id, r)
        })
        .collect();
    let groups = groups.map_entries(|id, index, e| {
        if let Some(r) = recovered.get_mut(&id) {
            if let Some(data) = e
                .data
                .filter(|_| index > r.snapshot.as_ref().map_or(0, |s| s.index))
            {
                r.entries.push(Entry {
                    index,
                    term: e.term,
                    kind: e.loc.kind,
                    data,
                });
            }
        }
        e.loc
    });
    (groups, recovered)
}

/// Lists the segment files in sequence order (checking that no sequence
/// number is missing), reads their headers and deletes temporary files.
fn find_segments(
    dir: &Path,
    files: &dyn FileLayer,
    report: &mut RecoveryReport,
) -> Result<Vec<Found>, WalError> {
    let listing = std::fs::read_dir(dir).map_err(|e| io_error("readdir", dir, e))?;
    let mut seqs = Vec::new();
    for dirent in listing {
        let dirent = dirent.map_err(|e| io_error("readdir", dir, e))?;
        let name = dirent.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.ends_with(TEMP_SUFFIX) {
            let path = dir.join(name);
            files
                .remove(&path)
                .map_err(|e| io_error("unlink", &path, e))?;
            report.removed_files.push(path);
        } else if let Some(seq) = parse_segment_file_name(name) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    if let Some(w) = seqs.windows(2).find(|w| w[1] != w[0] + 1) {
        return Err(corrupt(
            &dir.join(segment_file_name(w[0] + 1)),
            0,
            format!("segment missing: sequence jumps from {} to {}", w[0], w[1]),
        ));
    }
    let mut found = Vec::with_capacity(seqs.len());
    for seq in seqs {
        let path = dir.join(segment_file_name(seq));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|e| io_error("open", &path, e))?;
        let mut head = [0u8; SEGMENT_HEADER_LEN];
        let n = files
            .read_at(&file, &path, &mut head, 0)
            .map_err(|e| io_error("pread", &path, e))?;
        let header = if head.iter().all(|&b| b == 0) {
            None
        } else {
            let header = SegmentHeader::decode(&head[..n]).map_err(|why| corrupt(&path, 0, why))?;
            if header.seq != seq {
                return Err(corrupt(
                    &path,
                    0,
                    format!("header names segment {}", header.seq),
                ));
            }
            Some(header)
        };
        found.push(Found {
            seq,
            path,
            file,
            header,
        });
    }
    Ok(found)
}

/// Reads the first `size` bytes of the segment into `buf` (zeros past the
/// end of a short file); returns the file's length.
fn read_whole(
    files: &dyn FileLayer,
    f: &Found,
    size: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, WalError> {
    // Zeroed only where the read leaves it untouched: clearing the whole
    // buffer first would write every segment's bytes twice (1 GiB of
    // memset on a restart with 1 GiB of WAL).
    buf.resize(size, 0);
    let read = files
        .read_at(&f.file, &f.path, buf, 0)
        .map_err(|e| io_error("pread", &f.path, e))?;
    buf[read..].fill(0);
    Ok(read)
}

/// How far the records of a segment replayed.
struct Scan {
    /// End of the last whole batch.
    good_end: usize,
    /// Where parsing stopped.
    damage_at: usize,
    /// Why, if at an invalid record (rather than at zeros).
    damage: Option<&'static str>,
    /// Records read after `good_end` without a closing commit record.
    open_batch: bool,
    /// Nothing but zeros after `good_end`.
    clean: bool,
}

impl Scan {
    /// The error for damage found in a segment that may not have any.
    fn damage_error(&self, buf: &[u8], path: &Path) -> WalError {
        if let Some(why) = self.damage {
            return corrupt(path, self.damage_at, why);
        }
        if self.open_batch {
            return corrupt(path, self.good_end, "batch without its commit record");
        }
        let stray = buf[self.good_end..]
            .iter()
            .position(|&b| b != 0)
            .map_or(self.good_end, |p| self.good_end + p);
        corrupt(path, stray, "non-zero bytes after the last record")
    }
}

/// Replays the whole batches of one segment into `groups`.
fn replay_segment(
    buf: &[u8],
    header: &SegmentHeader,
    path: &Path,
    replay: &mut Replay,
) -> Result<Scan, WalError> {
    let mut pos = SEGMENT_HEADER_LEN;
    let mut good_end = pos;
    let mut open: Vec<(usize, RecordMeta, Range<usize>)> = Vec::new();
    let damage = loop {
        match parse_record(buf, pos, header.salt) {
            Parsed::End => break None,
            Parsed::Invalid(why) => break Some(why),
            Parsed::Record { meta, payload, len } => {
                let payload_at = pos + len - super::record::aligned(payload.len());
                let payload_range = payload_at..payload_at + payload.len();
                if meta.kind != RecordType::Commit {
                    open.push((pos, meta, payload_range));
                    pos += len;
                    continue;
                }
                if commit_count(payload) != Some(open.len() as u32) {
                    break Some("commit record does not match its batch");
                }
                for part in decode_batch(buf, header.seq, path, &open, replay.contents)? {
                    apply_part(&mut replay.groups, header.seq, path, part)?;
                }
                open.clear();
                pos += len;
                good_end = pos;
            }
        }
    };
    let clean = damage.is_none() && open.is_empty() && buf[good_end..].iter().all(|&b| b == 0);
    Ok(Scan {
        good_end,
        damage_at: pos,
        damage,
        open_batch: !open.is_empty(),
        clean,
    })
}

/// One group's records in a committed batch: a tombstone, or writes.
struct Part {
    /// Offset of the part's first record, for errors.
    at: usize,
    group: u64,
    removed: bool,
    start: Option<Restate>,
    batch: Batch<ReplayedEntry>,
}

/// Applies one part of a batch through the same rules as a live write.
fn apply_part(
    groups: &mut Groups<ReplayedEntry>,
    seq: u64,
    path: &Path,
    part: Part,
) -> Result<(), WalError> {
    let Part {
        at,
        group,
        removed,
        start,
        batch,
    } = part;
    if removed {
        groups.remove(group);
        return Ok(());
    }
    if let Some(restate) = start {
        groups
            .start(group, seq, restate)
            .map_err(|why| corrupt(path, at, why))?;
    }
    groups
        .check(group, &batch)
        .and_then(|()| groups.apply(group, seq, batch))
        .map_err(|why| corrupt(path, at, why))
}

/// Where a record may stand in its group's part of a batch: a start, a
/// snapshot, entries, a hard state, in this order (entries repeat).
fn rank(kind: RecordType) -> u8 {
    match kind {
        RecordType::GroupStart => 1,
        RecordType::SnapshotMeta => 2,
        RecordType::Entry => 3,
        RecordType::HardState => 4,
        RecordType::Tombstone | RecordType::Commit => 5,
    }
}

/// Decodes the records of one committed batch into its groups' parts.
/// Bytes that passed the checksum but do not decode, or records out of
/// the order writers produce, are corruption, never a tear.
fn decode_batch(
    buf: &[u8],
    seq: u64,
    path: &Path,
    records: &[(usize, RecordMeta, Range<usize>)],
    contents: Contents,
) -> Result<Vec<Part>, WalError> {
    let mut parts: Vec<Part> = Vec::new();
    let mut seen = BTreeSet::new();
    // The group of the part being built and the rank of its last record.
    let mut current: Option<(u64, u8)> = None;
    for (at, meta, range) in records {
        let (at, payload, group) = (*at, &buf[range.clone()], meta.group);
        let rank = rank(meta.kind);
        let continues = match current {
            Some((g, last)) if g == group => {
                if rank < last || (rank == last && meta.kind != RecordType::Entry) || rank == 5 {
                    return Err(corrupt(
                        path,
                        at,
                        format!("records of group {group} out of order"),
                    ));
                }
                true
            }
            _ => false,
        };
        if !continues {
            if !seen.insert(group) {
                return Err(corrupt(
                    path,
                    at,
                    format!("group {group} appears twice in a batch"),
                ));
            }
            parts.push(Part {
                at,
                group,
                removed: meta.kind == RecordType::Tombstone,
                start: None,
                batch: Batch::default(),
            });
        }
        current = Some((group, rank));
        let Some(Part { start, batch, .. }) = parts.last_mut() else {
            continue;
        };
        match meta.kind {
            RecordType::Entry => {
                let kind = EntryKind::from_u8(meta.entry_kind)
                    .ok_or_else(|| corrupt(path, at, "unknown entry kind"))?;
                let loc = EntryLoc {
                    seq,
                    offset: range.start as u32,
                    len: payload.len() as u32,
                    kind,
                };
                let data = (contents == Contents::Entries).then(|| Payload::from(payload));
                batch.entries.push((
                    meta.index,
                    meta.term,
                    ReplayedEntry {
                        loc,
                        term: meta.term,
                        data,
                    },
                ));
            }
            RecordType::HardState => {
                let hs = decode_hard_state(payload)
                    .map_err(|e| corrupt(path, at, format!("hard state: {e}")))?;
                batch.hard_state = Some(hs);
            }
            RecordType::SnapshotMeta => {
                let meta = decode_snapshot_meta(payload)
                    .map_err(|e| corrupt(path, at, format!("snapshot metadata: {e}")))?;
                batch.snapshot = Some(meta);
            }
            RecordType::GroupStart => {
                let (hard_state, snapshot) = decode_restate(payload)
                    .map_err(|why| corrupt(path, at, format!("group start: {why}")))?;
                *start = Some(Restate {
                    offset: meta.index,
                    hard_state,
                    snapshot,
                });
            }
            RecordType::Tombstone => {}
            RecordType::Commit => return Err(corrupt(path, at, "commit record inside a batch")),
        }
    }
    Ok(parts)
}

/// The offset of a valid record after the damage at `damage_at` that was
/// written when the segment was already durable past `good_end`: proof that
/// the damaged bytes had been synced, so they are corrupt, not torn.
fn synced_record_after(
    buf: &[u8],
    header: &SegmentHeader,
    damage_at: usize,
    good_end: usize,
) -> Option<usize> {
    let mut at = damage_at + RECORD_ALIGN;
    while at + RECORD_ALIGN <= buf.len() {
        // Cheap filter before the checksum: the type byte must be valid.
        if matches!(buf.get(at + 8), Some(1..=6)) {
            if let Parsed::Record { meta, .. } = parse_record(buf, at, header.salt) {
                if meta.durable_mark as usize > good_end {
                    return Some(at);
                }
            }
        }
        at += RECORD_ALIGN;
    }
    None
}

/// Zeroes the segment from `from` to its last non-zero byte and syncs it;
/// returns the number of bytes discarded.
fn zero_from(files: &dyn FileLayer, f: &Found, buf: &[u8], from: usize) -> Result<usize, WalError> {
    let Some(last) = buf[from..].iter().rposition(|&b| b != 0) else {
        return Ok(0);
    };
    let len = last + 1;
    let zeros = vec![0u8; len.min(1 << 20)];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(zeros.len());
        files
            .write_at(&f.file, &f.path, &zeros[..n], (from + done) as u64)
            .map_err(|e| io_error("pwrite", &f.path, e))?;
        done += n;
    }
    files
        .sync_file(&f.file, &f.path)
        .map_err(|e| io_error("fsync", &f.path, e))?;
    Ok(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fs_util::Scratch;
    use crate::wal::file::OsFiles;

    #[test]
    fn a_short_file_reads_as_zeros_past_its_end_whatever_the_buffer_held() {
        let scratch = Scratch::new("read-whole");
        let path = scratch.0.join("short");
        std::fs::write(&path, b"abc").unwrap();
        let found = Found {
            seq: 1,
            file: File::open(&path).unwrap(),
            path,
            header: None,
        };
        // As a previous, longer segment leaves it.
        let mut buf = vec![0xff; 16];
        assert_eq!(read_whole(&OsFiles, &found, 8, &mut buf).unwrap(), 3);
        assert_eq!(buf, b"abc\0\0\0\0\0");
    }
}
