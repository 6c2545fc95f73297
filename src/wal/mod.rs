//! The write-ahead log: memory-mapped, segmented, crash-safe storage for log
//! entries, hard state and snapshot metadata. It knows nothing of roles or
//! messages. See docs/DISK-FORMAT.md.

use crate::core::{Entry, HardState, Index, SnapshotMeta, Term};
use std::fmt;
use std::path::{Path, PathBuf};

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every append returns only after its data is on stable storage (the
    /// default, and the only mode that keeps Raft's guarantees).
    Always,
    /// Appends are written but never synced: for tests and benchmarks that
    /// deliberately trade durability for speed.
    Never,
}

/// Tunables of a WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of every segment file in bytes (default 64 MiB).
    pub segment_size: u64,
    pub sync: SyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            sync: SyncMode::Always,
        }
    }
}

/// What [`Wal::open`] found on disk.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Recovered {
    /// The last hard state written (default if none).
    pub hard_state: HardState,
    /// The last snapshot metadata written, if any.
    pub snapshot: Option<SnapshotMeta>,
    /// Every entry after the snapshot, contiguous, oldest first.
    pub entries: Vec<Entry>,
}

/// Everything that can go wrong in the WAL.
#[derive(Debug)]
pub enum WalError {
    /// An operating-system call failed.
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored data failed validation.
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// An earlier sync failed; the WAL must be reopened.
    Poisoned,
    /// Another process holds the data directory.
    Locked(PathBuf),
    /// The device has no room for a new segment.
    NoSpace(PathBuf),
    /// A request outside the stored range or otherwise not acceptable.
    Invalid(String),
}

impl fmt::Display for WalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WalError::Io { op, path, source } => {
                write!(f, "{op} failed on {}: {source}", path.display())
            }
            WalError::Corrupt {
                path,
                offset,
                reason,
            } => write!(
                f,
                "corrupt WAL {} at offset {offset}: {reason}",
                path.display()
            ),
            WalError::Poisoned => write!(f, "WAL poisoned by an earlier failed sync; reopen it"),
            WalError::Locked(path) => {
                write!(
                    f,
                    "data directory {} is locked by another process",
                    path.display()
                )
            }
            WalError::NoSpace(path) => write!(f, "no space left for {}", path.display()),
            WalError::Invalid(why) => write!(f, "invalid WAL request: {why}"),
        }
    }
}

impl std::error::Error for WalError {}

/// An open write-ahead log. All methods take `&self` and are safe to call
/// from any number of threads.
pub struct Wal {
    _private: (),
}

#[allow(unused_variables)]
impl Wal {
    /// Opens (creating if needed) the WAL in `dir`, locks the directory and
    /// recovers what it holds.
    pub fn open(dir: &Path, options: WalOptions) -> Result<(Wal, Recovered), WalError> {
        todo!()
    }
    /// Appends one batch and returns once it is durable. If the first entry's
    /// index is at or below the last index, the stored suffix from there is
    /// replaced. Concurrent callers share syncs (group commit).
    pub fn append(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), WalError> {
        todo!()
    }
    /// Entries in `[lo, hi)`, stopping early once `max_bytes` of payload is
    /// reached (at least one entry is returned when the range is not empty).
    pub fn entries(&self, lo: Index, hi: Index, max_bytes: u64) -> Result<Vec<Entry>, WalError> {
        todo!()
    }
    /// The term of the entry at `index`, if stored (or if it is the
    /// snapshot's index).
    pub fn term(&self, index: Index) -> Result<Option<Term>, WalError> {
        todo!()
    }
    /// Index of the first stored entry (snapshot index + 1 when empty).
    pub fn first_index(&self) -> Index {
        todo!()
    }
    /// Index of the last stored entry (snapshot index when empty).
    pub fn last_index(&self) -> Index {
        todo!()
    }
    /// Records snapshot metadata durably.
    pub fn save_snapshot(&self, meta: &SnapshotMeta) -> Result<(), WalError> {
        todo!()
    }
    /// Deletes whole segments whose entries all lie at or below `upto`,
    /// which must be covered by a saved snapshot.
    pub fn compact(&self, upto: Index) -> Result<(), WalError> {
        todo!()
    }
}
