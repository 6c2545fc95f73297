//! The snapshot store: names, taking, receiving, recovery, pruning.

use super::{io_error, SnapshotError, SNAPSHOT_DIR};
use crate::fs_util;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Bytes read at a time when checksumming a file: bounded whatever the
/// file's size, so a snapshot of many GiB is never held in memory.
const CHECK_BUFFER_BYTES: usize = 256 << 10;

/// What identifies a stored snapshot, and everything needed to check it:
/// the log position it covers and the length and CRC-32 (IEEE) of its
/// bytes. It is the stored file's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SnapshotId {
    pub index: u64,
    pub term: u64,
    pub len: u64,
    pub crc: u32,
}

impl SnapshotId {
    /// `snap-<index:020>-<term:020>-<len:020>-<crc32:08x>.snap`
    pub fn file_name(&self) -> String {
        self.name_with("snap", "snap")
    }

    /// The name of the file this snapshot is received into.
    fn partial_name(&self) -> String {
        self.name_with("recv", "partial")
    }

    fn name_with(&self, prefix: &str, extension: &str) -> String {
        format!(
            "{prefix}-{:020}-{:020}-{:020}-{:08x}.{extension}",
            self.index, self.term, self.len, self.crc
        )
    }

    /// The id a stored snapshot's file name carries, or `None` for any
    /// other name (only the exact form [`SnapshotId::file_name`] writes is
    /// accepted, so no two names stand for one snapshot).
    pub fn parse(name: &str) -> Option<SnapshotId> {
        let body = name.strip_prefix("snap-")?.strip_suffix(".snap")?;
        let mut fields = body.split('-');
        let mut number = || fields.next().and_then(|f| f.parse::<u64>().ok());
        let (index, term, len) = (number()?, number()?, number()?);
        let crc = u32::from_str_radix(body.rsplit('-').next()?, 16).ok()?;
        let id = SnapshotId {
            index,
            term,
            len,
            crc,
        };
        (id.file_name() == name).then_some(id)
    }
}

impl fmt::Display for SnapshotId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "snapshot at index {} (term {}, {} bytes, CRC-32 {:08x})",
            self.index, self.term, self.len, self.crc
        )
    }
}

/// A stored, verified snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotFile {
    pub id: SnapshotId,
    pub path: PathBuf,
}

impl SnapshotFile {
    /// Opens the file for reading (the sender reads chunks with pread).
    pub fn open(&self) -> Result<File, SnapshotError> {
        File::open(&self.path).map_err(|e| io_error("open", &self.path, e))
    }

    /// Reads up to `len` bytes at `offset` (fewer at the end of the file).
    pub fn read_chunk(
        &self,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>, SnapshotError> {
        let mut buf = vec![0; len];
        let n = fs_util::read_full_at(file, &mut buf, offset)
            .map_err(|e| io_error("read", &self.path, e))?;
        buf.truncate(n);
        Ok(buf)
    }
}

/// What recovery found in the snapshot folder.
#[derive(Debug, Default)]
pub struct StoreRecovery {
    /// The snapshot the WAL names, verified.
    pub current: Option<SnapshotFile>,
    /// Files deleted: temporary and partial files, snapshots never recorded
    /// in the WAL (a crash between their rename and the WAL record), and
    /// older snapshots a crash kept from being deleted.
    pub removed: Vec<PathBuf>,
}

/// The snapshot files of one node. Cheap to clone; every clone is the same
/// store, usable from any thread.
#[derive(Clone, Debug)]
pub struct SnapshotStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The durable directory the folder's missing parents are created in.
    root: PathBuf,
    dir: PathBuf,
    /// Whether this store made the folder durable (created or found, its
    /// parents synced). Held while it is created, so a second writer waits
    /// until the folder is synced.
    created: Mutex<bool>,
    state: Mutex<State>,
    next_temp: AtomicU64,
}

#[derive(Debug, Default)]
struct State {
    /// The snapshot the WAL records as the latest.
    current: Option<SnapshotId>,
    /// Stored snapshots a host may still be reading (a restore it was
    /// handed): never deleted while pinned.
    pins: HashMap<SnapshotId, usize>,
    /// Stored snapshots published (by a writer or a transfer) and not yet
    /// recorded or discarded, with the number of publishers holding each.
    /// Two writers of the same state at one index publish one name: the
    /// file is the same for both, so it is deleted only once neither needs
    /// it.
    claims: HashMap<SnapshotId, usize>,
}

impl State {
    /// A stored snapshot that is neither current nor newer than it: no
    /// longer needed for recovery or for sending.
    fn is_obsolete(&self, id: &SnapshotId) -> bool {
        matches!(self.current, Some(current) if *id != current && id.index <= current.index)
            && !self.pins.contains_key(id)
            && !self.claims.contains_key(id)
    }

    /// Ends one publisher's hold on `id`.
    fn release_claim(&mut self, id: &SnapshotId) {
        if let Some(count) = self.claims.get_mut(id) {
            *count -= 1;
            if *count == 0 {
                self.claims.remove(id);
            }
        }
    }
}

impl SnapshotStore {
    /// Opens the snapshot folder of `data_dir` (created with the first
    /// snapshot, see [`SnapshotStore::open_in`]) and recovers it.
    /// `expected` is the (index, term) of the latest snapshot metadata the
    /// WAL holds: its file must be there with the length and CRC its name
    /// gives, or the store refuses to open ([`SnapshotError::Corrupt`],
    /// nothing deleted). Once it is verified, every other file in the
    /// folder is deleted.
    pub fn open(
        data_dir: &Path,
        expected: Option<(u64, u64)>,
    ) -> Result<(SnapshotStore, StoreRecovery), SnapshotError> {
        SnapshotStore::open_in(data_dir, Path::new(SNAPSHOT_DIR), expected)
    }

    /// [`SnapshotStore::open`] for the folder `root/folder`, where `root`
    /// is a directory that exists durably and `folder` a relative path.
    /// A missing folder is not created here: it and its missing parents
    /// are created (durably) before the first snapshot file is written,
    /// so a store that never holds a snapshot costs no directories and no
    /// directory syncs (a runtime opens one per group).
    pub fn open_in(
        root: &Path,
        folder: &Path,
        expected: Option<(u64, u64)>,
    ) -> Result<(SnapshotStore, StoreRecovery), SnapshotError> {
        let dir = root.join(folder);
        let names = match list_files(&dir) {
            Ok(names) => Some(names),
            Err(SnapshotError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                None
            }
            Err(err) => return Err(err),
        };
        let names = names.unwrap_or_default();
        let mut current = None;
        if let Some((index, term)) = expected {
            let mut failure = None;
            for name in &names {
                let Some(id) = SnapshotId::parse(name) else {
                    continue;
                };
                if (id.index, id.term) != (index, term) {
                    continue;
                }
                let path = dir.join(name);
                match verify(&path, &id) {
                    Ok(()) => {
                        current = Some(SnapshotFile { id, path });
                        break;
                    }
                    Err(err) => failure = Some(err),
                }
            }
            if current.is_none() {
                return Err(failure.unwrap_or_else(|| SnapshotError::Corrupt {
                    path: dir.clone(),
                    reason: format!(
                        "the WAL records a snapshot at index {index} (term {term}), but no \
                         snap-{index:020}-{term:020}-*.snap file is there"
                    ),
                }));
            }
        }
        let keep = current.as_ref().map(|f: &SnapshotFile| f.id.file_name());
        let mut removed = Vec::new();
        for name in names {
            if Some(&name) == keep.as_ref() {
                continue;
            }
            let path = dir.join(&name);
            fs::remove_file(&path).map_err(|e| io_error("unlink", &path, e))?;
            removed.push(path);
        }
        if !removed.is_empty() {
            sync_dir(&dir)?;
        }
        let store = SnapshotStore {
            inner: Arc::new(Inner {
                root: root.to_path_buf(),
                dir,
                created: Mutex::new(false),
                state: Mutex::new(State {
                    current: current.as_ref().map(|f| f.id),
                    pins: HashMap::new(),
                    claims: HashMap::new(),
                }),
                next_temp: AtomicU64::new(1),
            }),
        };
        Ok((store, StoreRecovery { current, removed }))
    }

    /// The snapshot folder (missing until the first snapshot file is
    /// written in it).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Creates the folder and its missing parents below the root, each
    /// one's entry made durable by syncing its parent: a snapshot the WAL
    /// records must not vanish with a folder a crash forgot. A crash
    /// before the WAL records a snapshot leaves at worst a folder holding
    /// files it does not name, which the next open deletes. A folder found
    /// already there gets its parent synced too, once per store: an
    /// earlier process may have crashed between creating it and syncing
    /// its parent.
    fn create_dir(&self) -> Result<(), SnapshotError> {
        let mut created = self.inner.created.lock();
        if *created {
            return Ok(());
        }
        let relative = self
            .inner
            .dir
            .strip_prefix(&self.inner.root)
            .expect("the folder lies below the root");
        let mut parent = self.inner.root.clone();
        for component in relative.components() {
            let dir = parent.join(component);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_error("mkdir", &dir, e)),
            }
            sync_dir(&parent)?;
            parent = dir;
        }
        *created = true;
        Ok(())
    }

    /// The snapshot recorded as the latest, if any.
    pub fn current(&self) -> Option<SnapshotFile> {
        self.inner.state.lock().current.map(|id| self.file(id))
    }

    fn file(&self, id: SnapshotId) -> SnapshotFile {
        SnapshotFile {
            id,
            path: self.inner.dir.join(id.file_name()),
        }
    }

    /// Starts taking a snapshot at `(index, term)`: a new temporary file
    /// for the host to fill.
    pub fn create(&self, index: u64, term: u64) -> Result<SnapshotTemp, SnapshotError> {
        self.create_dir()?;
        let n = self.inner.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self
            .inner
            .dir
            .join(format!("take-{index:020}-{term:020}-{n}.tmp"));
        let file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        Ok(SnapshotTemp {
            store: self.clone(),
            index,
            term,
            path,
            file,
            streamed: Some((0, crc32fast::Hasher::new())),
            path_handed_out: AtomicBool::new(false),
        })
    }

    /// Starts receiving snapshot `id` into a new, empty partial file (an
    /// earlier partial file of the same snapshot is replaced).
    pub fn receive(&self, id: SnapshotId) -> Result<PartialSnapshot, SnapshotError> {
        self.create_dir()?;
        let path = self.inner.dir.join(id.partial_name());
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(|e| io_error("create", &path, e))?;
        Ok(PartialSnapshot {
            store: self.clone(),
            id,
            path,
            file,
            written: 0,
        })
    }

    /// The WAL now durably records `file` as the latest snapshot: it
    /// becomes current, and older snapshot files are deleted (except any a
    /// host is still reading; those go once released). Returns the deleted
    /// paths.
    pub fn record(&self, file: &SnapshotFile) -> Result<Vec<PathBuf>, SnapshotError> {
        let mut state = self.inner.state.lock();
        state.current = Some(file.id);
        state.release_claim(&file.id);
        let mut removed = Vec::new();
        for name in list_files(&self.inner.dir)? {
            let Some(id) = SnapshotId::parse(&name) else {
                continue;
            };
            if state.is_obsolete(&id) {
                let path = self.inner.dir.join(&name);
                fs::remove_file(&path).map_err(|e| io_error("unlink", &path, e))?;
                removed.push(path);
            }
        }
        drop(state);
        if !removed.is_empty() {
            sync_dir(&self.inner.dir)?;
        }
        Ok(removed)
    }

    /// Gives up a published snapshot that will not be recorded (it became
    /// stale before the WAL could record it): its file is deleted unless it
    /// is current, a host is reading it, or another publisher of the same
    /// snapshot still holds it. Returns whether the file was deleted.
    pub fn discard(&self, file: &SnapshotFile) -> Result<bool, SnapshotError> {
        let mut state = self.inner.state.lock();
        state.release_claim(&file.id);
        if state.current == Some(file.id)
            || state.pins.contains_key(&file.id)
            || state.claims.contains_key(&file.id)
        {
            return Ok(false);
        }
        match fs::remove_file(&file.path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_error("unlink", &file.path, e)),
        }
    }

    /// Gives the complete, synced file at `from` its stored name `id` and
    /// makes the name durable. The publisher then holds the file until it
    /// records or discards it. When the name is already there (another
    /// writer published the same snapshot: same index, term, length and
    /// CRC), that file is kept as it is and shared, and `from` is deleted:
    /// replacing it would touch a file the other writer may be recording.
    fn publish(&self, from: &Path, id: SnapshotId) -> Result<SnapshotFile, SnapshotError> {
        let file = self.file(id);
        {
            // Every deletion in the folder happens under this lock, so the
            // name cannot vanish between the check and the claim.
            let mut state = self.inner.state.lock();
            let exists = match fs::symlink_metadata(&file.path) {
                Ok(_) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => false,
                Err(e) => return Err(io_error("stat", &file.path, e)),
            };
            if exists {
                fs::remove_file(from).map_err(|e| io_error("unlink", from, e))?;
            } else {
                fs::rename(from, &file.path).map_err(|e| io_error("rename", from, e))?;
            }
            *state.claims.entry(id).or_default() += 1;
        }
        // Also when the name was there already: its publisher may not have
        // synced the folder yet, and this one's record must not outlive a
        // crash that loses the name.
        sync_dir(self.dir())?;
        Ok(file)
    }

    /// Keeps `file` from being deleted until the pin (and every clone of
    /// it) is dropped: a host restoring from it reads it meanwhile.
    pub fn pin(&self, file: &SnapshotFile) -> SnapshotPin {
        *self.inner.state.lock().pins.entry(file.id).or_default() += 1;
        SnapshotPin {
            inner: self.inner.clone(),
            id: file.id,
        }
    }
}

/// Keeps one stored snapshot from being deleted while a host reads it.
pub struct SnapshotPin {
    inner: Arc<Inner>,
    id: SnapshotId,
}

impl SnapshotPin {
    pub fn id(&self) -> SnapshotId {
        self.id
    }
}

impl Clone for SnapshotPin {
    fn clone(&self) -> SnapshotPin {
        *self.inner.state.lock().pins.entry(self.id).or_default() += 1;
        SnapshotPin {
            inner: self.inner.clone(),
            id: self.id,
        }
    }
}

impl Drop for SnapshotPin {
    fn drop(&mut self) {
        let mut state = self.inner.state.lock();
        let Some(count) = state.pins.get_mut(&self.id) else {
            return;
        };
        *count -= 1;
        if *count == 0 {
            state.pins.remove(&self.id);
            if state.is_obsolete(&self.id) {
                // Superseded while pinned: deleted now. Not worth a
                // directory sync: a file that comes back after a crash is
                // removed by recovery.
                let _ = fs::remove_file(self.inner.dir.join(self.id.file_name()));
            }
        }
    }
}

impl PartialEq for SnapshotPin {
    fn eq(&self, other: &SnapshotPin) -> bool {
        self.id == other.id && Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for SnapshotPin {}

impl fmt::Debug for SnapshotPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SnapshotPin({})", self.id.file_name())
    }
}

/// A snapshot being taken: a temporary file the host fills, through
/// [`SnapshotTemp::write`] or by opening [`SnapshotTemp::path`] itself.
/// Dropping it leaves the file for recovery to delete; [`SnapshotTemp::abort`]
/// deletes it now.
pub struct SnapshotTemp {
    store: SnapshotStore,
    index: u64,
    term: u64,
    path: PathBuf,
    file: File,
    /// Length and CRC-32 of the bytes written through `write`, kept as
    /// they go so that sealing need not read the file back; `None` once a
    /// write failed part way.
    streamed: Option<(u64, crc32fast::Hasher)>,
    /// Set once the path was handed out: the host may have written there,
    /// so only reading the file back tells what it holds.
    path_handed_out: AtomicBool,
}

impl SnapshotTemp {
    pub fn index(&self) -> u64 {
        self.index
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    /// The file, for a host that writes it by path. Handing it out makes
    /// sealing read the file back, since only that tells what it holds.
    pub fn path(&self) -> &Path {
        self.path_handed_out.store(true, Ordering::Relaxed);
        &self.path
    }

    /// Appends `data` to the file.
    pub fn write(&mut self, data: &[u8]) -> Result<(), SnapshotError> {
        if let Err(e) = self.file.write_all(data) {
            // Some of `data` may be in the file: the running checksum no
            // longer says what it holds.
            self.streamed = None;
            return Err(io_error("write", &self.path, e));
        }
        if let Some((len, hasher)) = &mut self.streamed {
            *len += data.len() as u64;
            hasher.update(data);
        }
        Ok(())
    }

    /// First step of [`SnapshotTemp::finish`]: makes the bytes at the path
    /// durable and measures them. When every byte came through
    /// [`SnapshotTemp::write`], they were checksummed on the way; otherwise
    /// the file is opened again by its path (a host may have replaced it
    /// there) and read back.
    pub fn seal(&self) -> Result<SnapshotId, SnapshotError> {
        let streamed = self
            .streamed
            .as_ref()
            .filter(|_| !self.path_handed_out.load(Ordering::Relaxed));
        let reopened;
        let file = match streamed {
            Some(_) => &self.file,
            None => {
                reopened = File::open(&self.path).map_err(|e| io_error("open", &self.path, e))?;
                &reopened
            }
        };
        file.sync_all()
            .map_err(|e| io_error("fsync", &self.path, e))?;
        let (len, crc) = match streamed {
            Some((len, hasher)) => (*len, hasher.clone().finalize()),
            None => checksum(file, &self.path)?,
        };
        Ok(SnapshotId {
            index: self.index,
            term: self.term,
            len,
            crc,
        })
    }

    /// Second step of [`SnapshotTemp::finish`]: gives the sealed file its
    /// final name, durably (see [`SnapshotStore::publish`]).
    pub fn publish(self, id: SnapshotId) -> Result<SnapshotFile, SnapshotError> {
        self.store.publish(&self.path, id)
    }

    /// Seals and publishes: on success the snapshot is stored (not yet
    /// recorded as current: that is the WAL's part). On failure the
    /// temporary file is deleted.
    pub fn finish(self) -> Result<SnapshotFile, SnapshotError> {
        match self.seal() {
            Ok(id) => self.publish(id),
            Err(err) => {
                self.abort();
                Err(err)
            }
        }
    }

    /// Deletes the temporary file.
    pub fn abort(self) {
        // A file that cannot be deleted now is deleted by recovery.
        let _ = fs::remove_file(&self.path);
    }
}

/// What became of a received chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChunkOutcome {
    /// Written: it started where the file ended.
    Written,
    /// Nothing new: its bytes (or some of them) are already in the file, or
    /// it is empty.
    Duplicate,
    /// It starts beyond the end of the file: an earlier chunk is missing.
    Gap,
}

/// A snapshot being received: its chunks are accepted in order only, so the
/// file always holds a prefix of the snapshot and
/// [`PartialSnapshot::written`] is the offset to ask for next. Dropping it
/// leaves the file for recovery to delete; [`PartialSnapshot::abort`]
/// deletes it now.
pub struct PartialSnapshot {
    store: SnapshotStore,
    id: SnapshotId,
    path: PathBuf,
    file: File,
    written: u64,
}

impl PartialSnapshot {
    pub fn id(&self) -> SnapshotId {
        self.id
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes held: the offset of the next chunk to accept.
    pub fn written(&self) -> u64 {
        self.written
    }

    pub fn is_complete(&self) -> bool {
        self.written == self.id.len
    }

    /// Takes the chunk `data` at `offset` if it continues the file. A chunk
    /// reaching beyond the snapshot's length is refused.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<ChunkOutcome, SnapshotError> {
        let end = offset.checked_add(data.len() as u64);
        if !matches!(end, Some(end) if end <= self.id.len) {
            return Err(SnapshotError::Invalid(format!(
                "chunk of {} bytes at offset {offset} lies beyond the {} bytes of the {}",
                data.len(),
                self.id.len,
                self.id
            )));
        }
        if offset > self.written {
            return Ok(ChunkOutcome::Gap);
        }
        if offset < self.written || data.is_empty() {
            return Ok(ChunkOutcome::Duplicate);
        }
        self.file
            .write_all_at(data, offset)
            .map_err(|e| io_error("write", &self.path, e))?;
        self.written += data.len() as u64;
        Ok(ChunkOutcome::Written)
    }

    /// First step of [`PartialSnapshot::finish`]: checks the whole file
    /// against the announced length and CRC-32, then makes it durable.
    pub fn seal(&self) -> Result<(), SnapshotError> {
        let (len, crc) = checksum(&self.file, &self.path)?;
        if (len, crc) != (self.id.len, self.id.crc) {
            return Err(SnapshotError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "received {len} bytes with CRC-32 {crc:08x}, but the sender announced {} \
                     bytes with CRC-32 {:08x}",
                    self.id.len, self.id.crc
                ),
            });
        }
        self.file
            .sync_all()
            .map_err(|e| io_error("fsync", &self.path, e))
    }

    /// Second step of [`PartialSnapshot::finish`]: gives the sealed file
    /// its final name, durably (see [`SnapshotStore::publish`]).
    pub fn publish(self) -> Result<SnapshotFile, SnapshotError> {
        self.store.publish(&self.path, self.id)
    }

    /// Verifies, seals and publishes the complete file. On failure (a
    /// checksum mismatch included) the partial file is deleted.
    pub fn finish(self) -> Result<SnapshotFile, SnapshotError> {
        if !self.is_complete() {
            return Err(SnapshotError::Invalid(format!(
                "{} is incomplete: {} bytes received",
                self.id, self.written
            )));
        }
        match self.seal() {
            Ok(()) => self.publish(),
            Err(err) => {
                self.abort();
                Err(err)
            }
        }
    }

    /// Deletes the partial file.
    pub fn abort(self) {
        // A file that cannot be deleted now is deleted by recovery.
        let _ = fs::remove_file(&self.path);
    }
}

/// Checks that the file at `path` holds what `id` promises.
fn verify(path: &Path, id: &SnapshotId) -> Result<(), SnapshotError> {
    let file = File::open(path).map_err(|e| io_error("open", path, e))?;
    let len = file
        .metadata()
        .map_err(|e| io_error("stat", path, e))?
        .len();
    if len != id.len {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("it holds {len} bytes, its name says {}", id.len),
        });
    }
    let (_, crc) = checksum(&file, path)?;
    if crc != id.crc {
        return Err(SnapshotError::Corrupt {
            path: path.to_path_buf(),
            reason: format!("its CRC-32 is {crc:08x}, its name says {:08x}", id.crc),
        });
    }
    Ok(())
}

/// Length and CRC-32 of a whole file, read with a bounded buffer.
fn checksum(file: &File, path: &Path) -> Result<(u64, u32), SnapshotError> {
    let mut hasher = crc32fast::Hasher::new();
    let mut buf = vec![0; CHECK_BUFFER_BYTES];
    let mut offset = 0u64;
    loop {
        let n =
            fs_util::read_full_at(file, &mut buf, offset).map_err(|e| io_error("read", path, e))?;
        hasher.update(&buf[..n]);
        offset += n as u64;
        if n < buf.len() {
            return Ok((offset, hasher.finalize()));
        }
    }
}

/// Names of the regular files in `dir`.
fn list_files(dir: &Path) -> Result<Vec<String>, SnapshotError> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| io_error("readdir", dir, e))? {
        let entry = entry.map_err(|e| io_error("readdir", dir, e))?;
        let is_file = entry
            .file_type()
            .map_err(|e| io_error("stat", &entry.path(), e))?
            .is_file();
        if is_file {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

fn sync_dir(dir: &Path) -> Result<(), SnapshotError> {
    fs_util::sync_dir(dir).map_err(|e| io_error("fsync", dir, e))
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
