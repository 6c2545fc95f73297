//! Snapshot files: the store in `<data_dir>/snapshots/`.
//!
//! Beside the WAL, this layer knows files, not roles or messages. A stored
//! snapshot is one file whose name carries everything needed to check it
//! (index, term, length, CRC-32), so installing one is a single atomic
//! rename and recovery can verify it without any other record:
//!
//! ```text
//! snap-<index:020>-<term:020>-<len:020>-<crc32:08x>.snap   stored
//! take-<index:020>-<term:020>-<n>.tmp                       being written by the host
//! recv-<index:020>-<term:020>-<len:020>-<crc32:08x>.partial being received
//! ```
//!
//! Temporary and partial files never count: recovery deletes them. The WAL
//! records which stored snapshot is current (its snapshot metadata names the
//! index and term); recovery keeps that file, after checking its length and
//! CRC, and deletes every other file. See docs/SNAPSHOTS.md.

mod store;

pub use store::{
    ChunkOutcome, PartialSnapshot, SnapshotFile, SnapshotId, SnapshotPin, SnapshotStore,
    SnapshotTemp, StoreRecovery,
};

use std::fmt;
use std::path::PathBuf;

/// The folder of snapshot files inside a node's data directory.
pub const SNAPSHOT_DIR: &str = "snapshots";

/// Everything that can go wrong with snapshot files.
#[derive(Debug)]
pub enum SnapshotError {
    /// An operating-system call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// A file is missing or does not hold what its name (or the transfer)
    /// promises: wrong length or checksum.
    Corrupt { path: PathBuf, reason: String },
    /// A request that cannot be carried out (a chunk beyond the end of the
    /// snapshot, for one).
    Invalid(String),
}

impl fmt::Display for SnapshotError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SnapshotError::Io { op, path, source } => {
                write!(f, "{op} failed on {}: {source}", path.display())
            }
            SnapshotError::Corrupt { path, reason } => {
                write!(f, "damaged snapshot {}: {reason}", path.display())
            }
            SnapshotError::Invalid(why) => write!(f, "invalid snapshot request: {why}"),
        }
    }
}

impl std::error::Error for SnapshotError {}

pub(crate) fn io_error(
    op: &'static str,
    path: &std::path::Path,
    source: std::io::Error,
) -> SnapshotError {
    SnapshotError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
