//! Segment preparation: create under a temporary name, preallocate, sync,
//! rename into place, sync the directory, map. Done ahead of need on a
//! background thread so that rotation only has to pick the file up.
//!
//! A prepared segment is all zeros, header included; it gets its header
//! when it becomes the active segment. Recovery therefore deletes trailing
//! segments with an all-zero header (prepared, never used) and files with
//! the temporary suffix (preparation interrupted).

use super::file::FileLayer;
use super::segment::{io_error, segment_file_name, Segment, TEMP_SUFFIX};
use super::WalError;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;

/// Creates, preallocates and maps segment `seq` of `size` bytes in `dir`.
pub(crate) fn prepare_segment(
    files: &dyn FileLayer,
    dir: &Path,
    seq: u64,
    size: u64,
) -> Result<Segment, WalError> {
    let path = dir.join(segment_file_name(seq));
    let temp = dir.join(format!("{}{TEMP_SUFFIX}", segment_file_name(seq)));
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temp)
        .map_err(|e| io_error("create", &temp, e))?;
    let prepared = (|| {
        files
            .allocate(&file, &temp, size)
            .map_err(|e| io_error("fallocate", &temp, e))?;
        files
            .sync_file(&file, &temp)
            .map_err(|e| io_error("fsync", &temp, e))?;
        files
            .rename(&temp, &path)
            .map_err(|e| io_error("rename", &temp, e))?;
        files.sync_dir(dir).map_err(|e| io_error("fsync", dir, e))
    })();
    if let Err(e) = prepared {
        // Best effort: a leftover temp file is removed on the next open.
        let _ = files.remove(&temp);
        return Err(e);
    }
    Segment::map(seq, path, file, size)
}

/// A segment being prepared on a background thread.
pub(crate) struct PendingSegment {
    seq: u64,
    worker: Result<JoinHandle<Result<Segment, WalError>>, WalError>,
}

impl PendingSegment {
    pub(crate) fn start(
        files: Arc<dyn FileLayer>,
        dir: PathBuf,
        seq: u64,
        size: u64,
    ) -> PendingSegment {
        let worker = std::thread::Builder::new()
            .name("embraft-wal-prepare".into())
            .spawn(move || prepare_segment(files.as_ref(), &dir, seq, size))
            .map_err(|source| WalError::Io {
                op: "spawn segment preparation thread",
                path: PathBuf::new(),
                source,
            });
        PendingSegment { seq, worker }
    }

    pub(crate) fn seq(&self) -> u64 {
        self.seq
    }

    /// Waits for the preparation to finish.
    pub(crate) fn finish(self) -> Result<Segment, WalError> {
        self.worker?.join().unwrap_or_else(|_| {
            Err(WalError::Invalid(
                "segment preparation thread panicked".into(),
            ))
        })
    }
}
