//! One segment file, preallocated and mapped: writes into the unwritten
//! part, reads of the written part, and syncs of a byte range.

use super::file::FileLayer;
use super::record::SEGMENT_HEADER_LEN;
use super::{WalError, WriteMethod};
use crate::core::EntryKind;
use memmap2::MmapMut;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of segment files; the stem is the 16-digit hex sequence number.
pub(crate) const SEGMENT_SUFFIX: &str = ".seg";
/// Suffix of files still being prepared; recovery deletes them.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

pub(crate) fn segment_file_name(seq: u64) -> String {
    format!("{seq:016x}{SEGMENT_SUFFIX}")
}

/// The sequence number a segment file name stands for.
pub(crate) fn parse_segment_file_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(SEGMENT_SUFFIX)?;
    if stem.len() != 16 {
        return None;
    }
    u64::from_str_radix(stem, 16).ok()
}

pub(crate) fn io_error(op: &'static str, path: &Path, source: std::io::Error) -> WalError {
    if source.raw_os_error() == Some(libc::ENOSPC) {
        return WalError::NoSpace(path.to_path_buf());
    }
    WalError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Where a live entry's data lies: segment, offset and length of its
/// payload, plus its kind (kept from the record header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct EntryLoc {
    pub seq: u64,
    pub offset: u32,
    pub len: u32,
    pub kind: EntryKind,
}

/// A mapped segment file. Its length never exceeds the file's (checked
/// before mapping), so a store can never land past the end of the file.
pub(crate) struct Segment {
    pub seq: u64,
    pub path: PathBuf,
    file: File,
    map: MmapMut,
    /// Base of the mapping, for stores through a shared reference.
    base: *mut u8,
    /// Salt from the header (zero until activated).
    salt: AtomicU64,
}

// SAFETY: `base` points into `map`, which lives as long as the segment.
// Stores go only to bytes no reader can see yet (the writer publishes a
// range only after writing it, under the WAL's writer lock), and loads only
// to published bytes, which are never written again.
unsafe impl Send for Segment {}
unsafe impl Sync for Segment {}

impl Segment {
    /// Maps `len` bytes of `file`, refusing if the file is shorter. (Not
    /// prefaulted: MAP_POPULATE of each new segment measured slower, the
    /// zeroing of 64 MiB competing with appends for CPU.)
    pub(crate) fn map(seq: u64, path: PathBuf, file: File, len: u64) -> Result<Segment, WalError> {
        let file_len = file
            .metadata()
            .map_err(|e| io_error("stat", &path, e))?
            .len();
        if file_len < len || len < SEGMENT_HEADER_LEN as u64 {
            return Err(WalError::Corrupt {
                path,
                offset: file_len,
                reason: format!("segment file is {file_len} bytes, expected {len}"),
            });
        }
        let len = usize::try_from(len)
            .map_err(|_| WalError::Invalid("segment too large to map".into()))?;
        // SAFETY: the file is ours (the directory is locked) and is never
        // truncated while mapped; `len` is within its length.
        let mut map = unsafe { memmap2::MmapOptions::new().len(len).map_mut(&file) }
            .map_err(|e| io_error("mmap", &path, e))?;
        let base = map.as_mut_ptr();
        Ok(Segment {
            seq,
            path,
            file,
            map,
            base,
            salt: AtomicU64::new(0),
        })
    }

    /// Readies the mapping for stores that are each followed by an msync.
    /// Left alone, the kernel takes the sequential write faults for a
    /// sequential read and grows its readahead, filling the segment with
    /// ever larger folios (up to read_ahead_kb, 8 MiB on some disks). A
    /// store then dirties a whole folio, and each msync writes all of it
    /// back: measured 35x the appended bytes for 16 KiB synced batches and
    /// 500x for 1 KiB ones late in a 64 MiB segment. Random access keeps
    /// faults to one page, so a sync writes back what was appended.
    /// Unsynced stores are better off without it: large folios make fresh
    /// pages cheaper to fault in (10-20 % more unsynced 1 KiB proposals
    /// in the Go benchmark).
    pub(crate) fn advise_synced_stores(&self) {
        // Best effort: advice changes how much is written back, never what
        // is durable, so a kernel that refuses it must not stop the log.
        let _ = self.map.advise(memmap2::Advice::Random);
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    pub(crate) fn salt(&self) -> u64 {
        self.salt.load(Ordering::Acquire)
    }

    pub(crate) fn set_salt(&self, salt: u64) {
        self.salt.store(salt, Ordering::Release);
    }

    /// Stores `bytes` at `offset`, through the mapping or with pwrite.
    ///
    /// The caller must hold the WAL's writer lock and write only bytes not
    /// yet published to readers.
    pub(crate) fn write(
        &self,
        files: &dyn FileLayer,
        method: WriteMethod,
        offset: usize,
        bytes: &[u8],
    ) -> Result<(), WalError> {
        let end = offset
            .checked_add(bytes.len())
            .filter(|&end| end <= self.len())
            .ok_or_else(|| WalError::Invalid("write past the end of a segment".into()))?;
        match method {
            WriteMethod::Mmap => {
                // SAFETY: in bounds (checked above); exclusive per the
                // contract of this method.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        bytes.as_ptr(),
                        self.base.add(offset),
                        end - offset,
                    )
                };
                Ok(())
            }
            WriteMethod::Pwrite => files
                .write_at(&self.file, &self.path, bytes, offset as u64)
                .map_err(|e| io_error("pwrite", &self.path, e)),
        }
    }

    /// The published bytes `[offset, offset + len)`.
    pub(crate) fn read(&self, offset: usize, len: usize) -> Option<&[u8]> {
        let end = offset.checked_add(len).filter(|&end| end <= self.len())?;
        // SAFETY: in bounds; published bytes are never written again.
        Some(unsafe { std::slice::from_raw_parts(self.base.add(offset), end - offset) })
    }

    /// Makes `[from, to)` durable.
    pub(crate) fn sync(
        &self,
        files: &dyn FileLayer,
        method: WriteMethod,
        from: usize,
        to: usize,
    ) -> std::io::Result<()> {
        if to <= from {
            return Ok(());
        }
        match method {
            WriteMethod::Mmap => {
                // msync wants a page-aligned start; memmap2 aligns it.
                files.sync_mapped(&self.map, &self.path, from, to - from)
            }
            WriteMethod::Pwrite => files.sync_file(&self.file, &self.path),
        }
    }
}
