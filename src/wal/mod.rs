//! The write-ahead log: memory-mapped, segmented, crash-safe storage for log
//! entries, hard state and snapshot metadata. It knows nothing of roles or
//! messages. See docs/DISK-FORMAT.md.

mod facade;
mod file;
mod group_commit;
mod groups;
mod log_state;
mod prepare;
mod record;
mod recovery;
mod segment;
mod writer;

pub use facade::{Wal, MAX_SEGMENT_SIZE, MIN_SEGMENT_SIZE};
pub use file::{FaultyFiles, FileLayer, OsFiles};
pub use group_commit::WriteTicket;
pub use record::segment_bytes_for_entry;

use crate::core::{Entry, HardState, SnapshotMeta};
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

/// When appends are made durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SyncMode {
    /// Every append returns only after its data is on stable storage (the
    /// default, and the only mode that keeps Raft's guarantees).
    Always,
    /// Appends are written but never synced: for tests and benchmarks that
    /// deliberately trade durability for speed. UNSAFE FOR RAFT: a node that
    /// acknowledges what it has not synced can lose committed entries in a
    /// power failure, and a sealed segment may then be found torn, which
    /// recovery reports as corruption.
    Never,
}

/// Tunables of a WAL.
#[derive(Clone, Debug)]
pub struct WalOptions {
    /// Size of every segment file in bytes (default 64 MiB): a multiple of 8,
    /// at least [`MIN_SEGMENT_SIZE`], at most [`MAX_SEGMENT_SIZE`]. Applies to new
    /// segments; existing ones keep the size in their header.
    pub segment_size: u64,
    pub sync: SyncMode,
    /// How batches get into the segment files (default: `pwrite`, the
    /// faster in docs/BENCHMARKS.md). Reads go through the mapping either
    /// way.
    pub write_method: WriteMethod,
}

impl Default for WalOptions {
    fn default() -> Self {
        WalOptions {
            segment_size: 64 << 20,
            sync: SyncMode::Always,
            write_method: WriteMethod::default(),
        }
    }
}

/// The group the single-group methods ([`Wal::append`], [`Wal::entries`],
/// [`Wal::compact`], ...) address: a node hosting one Raft group writes it
/// as this group. Any `u64` names a group; this one is not special on disk.
pub const DEFAULT_GROUP: u64 = 0;

/// One group's part of a batch ([`Wal::write_groups`]): optional snapshot
/// metadata, then entries, then an optional hard state, under the same
/// rules as a one-group [`Wal::write`] and [`Wal::save_snapshot`].
#[derive(Clone, Copy, Debug, Default)]
pub struct GroupWrite<'a> {
    pub group: u64,
    pub snapshot: Option<&'a SnapshotMeta>,
    pub entries: &'a [Entry],
    pub hard_state: Option<&'a HardState>,
}

impl GroupWrite<'_> {
    /// Writes nothing.
    pub fn is_empty(&self) -> bool {
        self.snapshot.is_none() && self.entries.is_empty() && self.hard_state.is_none()
    }
}

/// What [`Wal::open_groups`] found on disk: every group present, by id.
pub type RecoveredGroups = std::collections::BTreeMap<u64, Recovered>;

/// What [`Wal::open`] found on disk for one group.
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

/// How batches get into the segment file. Both read through the mapping
/// and write the same files, so a directory reopens with either.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum WriteMethod {
    /// Copy into the shared mapping, make durable with msync.
    Mmap,
    /// pwrite into the file, make durable with fdatasync (the default: it
    /// spares the page faults and TLB shootdowns of storing through the
    /// mapping, and measured faster in docs/BENCHMARKS.md).
    #[default]
    Pwrite,
}

/// Options beyond [`WalOptions`], for tests, benchmarks and tuning.
#[derive(Clone, Debug)]
pub struct AdvancedOptions {
    /// The layer every file operation goes through (fault injection).
    pub files: Arc<dyn FileLayer>,
    /// Prepare the next segment on a background thread so rotation does
    /// not wait for file creation and preallocation (default true).
    pub prepare_ahead: bool,
}

impl Default for AdvancedOptions {
    fn default() -> Self {
        AdvancedOptions {
            files: Arc::new(OsFiles),
            prepare_ahead: true,
        }
    }
}

/// What recovery found and repaired on open.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Segments in use after recovery.
    pub segments: usize,
    /// The torn end of the tail segment that was cut off, if any.
    pub tail_cut: Option<TailCut>,
    /// Leftovers deleted: temporary files of an interrupted preparation and
    /// prepared segments never used.
    pub removed_files: Vec<PathBuf>,
}

/// A torn tail that recovery cut off.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TailCut {
    pub path: PathBuf,
    /// Offset of the first byte discarded (the end of the last whole batch).
    pub offset: u64,
    /// Bytes from `offset` to the last non-zero byte, now zeroed.
    pub discarded_bytes: u64,
}
