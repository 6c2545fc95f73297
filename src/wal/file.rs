//! The file layer: every system call the WAL makes on its files goes through
//! [`FileLayer`], so tests can inject failures (a failed sync, a full disk)
//! on any filesystem instead of needing a special mount.

use memmap2::MmapMut;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// The operations the WAL performs on files. Every method has the real
/// implementation as its default, so a fault injector overrides only what
/// it wants to break.
pub trait FileLayer: Send + Sync + fmt::Debug {
    /// Reserves `len` bytes of disk blocks for `file` so later stores into
    /// its mapping can never hit a hole (ENOSPC shows up here, not as a
    /// SIGBUS).
    fn allocate(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        allocate_blocks(file, len)
    }

    /// Writes all of `buf` at `offset`.
    fn write_at(&self, file: &File, _path: &Path, buf: &[u8], offset: u64) -> io::Result<()> {
        file.write_all_at(buf, offset)
    }

    /// Reads as much of `buf` as the file holds at `offset` (pread: an I/O
    /// error is an error, never a signal). Returns the bytes read.
    fn read_at(&self, file: &File, _path: &Path, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        crate::fs_util::read_full_at(file, buf, offset)
    }

    /// Makes the file's data (and the metadata needed to read it) durable.
    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        file.sync_data()
    }

    /// Makes `len` bytes of the mapping at `offset` durable (msync). An
    /// implementation must not read or write the mapping's bytes: other
    /// threads store into it concurrently.
    fn sync_mapped(
        &self,
        map: &MmapMut,
        _path: &Path,
        offset: usize,
        len: usize,
    ) -> io::Result<()> {
        map.flush_range(offset, len)
    }

    /// Makes the directory's entries (creations, renames, deletions) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        crate::fs_util::sync_dir(dir)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }
}

/// The plain operating-system file layer.
#[derive(Debug, Default, Clone, Copy)]
pub struct OsFiles;

impl FileLayer for OsFiles {}

#[cfg(target_os = "linux")]
fn allocate_blocks(file: &File, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length too large"))?;
    loop {
        // posix_fallocate returns the error number instead of setting errno.
        // SAFETY: a plain system call on a file descriptor we own.
        let rc = unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) };
        match rc {
            0 => return Ok(()),
            libc::EINTR => continue,
            errno => return Err(io::Error::from_raw_os_error(errno)),
        }
    }
}

#[cfg(not(target_os = "linux"))]
fn allocate_blocks(file: &File, len: u64) -> io::Result<()> {
    // Without posix_fallocate, writing zeros is the portable way to own the
    // blocks; set_len alone would leave a sparse file.
    let _ = file.as_raw_fd();
    let zeros = vec![0u8; 1 << 20];
    let mut offset = 0;
    while offset < len {
        let n = (len - offset).min(zeros.len() as u64) as usize;
        file.write_all_at(&zeros[..n], offset)?;
        offset += n as u64;
    }
    Ok(())
}

/// Takes an exclusive, non-blocking advisory lock on `file` (flock). Returns
/// `Ok(false)` when another open file description holds it.
pub(crate) fn try_lock_exclusive(file: &File) -> io::Result<bool> {
    loop {
        // SAFETY: a plain system call on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(true);
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => return Ok(false),
            _ => return Err(err),
        }
    }
}

/// A [`FileLayer`] that fails on command: syncs with EIO, block allocation
/// with ENOSPC. For tests of the WAL's fault handling (and of layers above
/// it) on any filesystem.
#[derive(Debug, Default)]
pub struct FaultyFiles {
    fail_syncs: AtomicBool,
    no_space: AtomicBool,
    syncs: AtomicU64,
}

impl FaultyFiles {
    pub fn new() -> FaultyFiles {
        FaultyFiles::default()
    }

    /// From now on every file and mapping sync fails with EIO (directory
    /// syncs still work, so the failure is the data's alone).
    pub fn fail_syncs(&self, fail: bool) {
        self.fail_syncs.store(fail, Ordering::SeqCst);
    }

    /// From now on block allocation fails with ENOSPC.
    pub fn set_no_space(&self, full: bool) {
        self.no_space.store(full, Ordering::SeqCst);
    }

    /// Data syncs attempted so far (failed ones included).
    pub fn sync_count(&self) -> u64 {
        self.syncs.load(Ordering::SeqCst)
    }

    fn sync_outcome(&self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_syncs.load(Ordering::SeqCst) {
            Err(io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }
}

impl FileLayer for FaultyFiles {
    fn allocate(&self, file: &File, _path: &Path, len: u64) -> io::Result<()> {
        if self.no_space.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(libc::ENOSPC));
        }
        allocate_blocks(file, len)
    }

    fn sync_file(&self, file: &File, _path: &Path) -> io::Result<()> {
        self.sync_outcome()?;
        file.sync_data()
    }

    fn sync_mapped(
        &self,
        map: &MmapMut,
        _path: &Path,
        offset: usize,
        len: usize,
    ) -> io::Result<()> {
        self.sync_outcome()?;
        map.flush_range(offset, len)
    }
}
