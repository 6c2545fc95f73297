//! Helpers shared by the WAL integration tests.
#![allow(dead_code)]

use embraft::core::{Entry, EntryKind, HardState};
use embraft::wal::{AdvancedOptions, Recovered, SyncMode, Wal, WalError, WalOptions};
use std::path::{Path, PathBuf};

#[path = "../common/temp_dir.rs"]
mod temp_dir;
pub use temp_dir::TempDir;

/// The deterministic payload of entry `index`: 0 to 199 bytes derived from
/// the index, so a stale or misplaced entry never compares equal.
pub fn payload(index: u64, term: u64) -> Vec<u8> {
    let len = ((index * 37 + term * 11) % 200) as usize;
    (0..len)
        .map(|i| (index as usize * 31 + i * 7 + term as usize) as u8)
        .collect()
}

pub fn entry(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        kind: if index % 17 == 0 {
            EntryKind::Noop
        } else {
            EntryKind::Normal
        },
        data: payload(index, term).into(),
    }
}

pub fn entries(first: u64, count: u64, term: u64) -> Vec<Entry> {
    (first..first + count).map(|i| entry(i, term)).collect()
}

pub fn small(segment_size: u64) -> WalOptions {
    WalOptions {
        segment_size,
        sync: SyncMode::Always,
        ..WalOptions::default()
    }
}

/// Options for tests that reopen many times: no background preparation.
pub fn no_prepare() -> AdvancedOptions {
    AdvancedOptions {
        prepare_ahead: false,
        ..AdvancedOptions::default()
    }
}

pub fn open(dir: &Path, segment_size: u64) -> (Wal, Recovered) {
    Wal::open(dir, small(segment_size)).expect("open")
}

pub fn hs(term: u64, commit: u64) -> HardState {
    HardState {
        term,
        vote: 1,
        commit,
    }
}

pub fn segment_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .collect();
    v.sort();
    v
}

pub fn is_corrupt(e: &WalError) -> bool {
    matches!(e, WalError::Corrupt { .. })
}

/// A file layer that skips data syncs: for tests that reopen thousands of
/// times to exercise recovery logic, where durability is not the question.
#[derive(Debug, Default)]
pub struct NoSyncFiles;

impl embraft::wal::FileLayer for NoSyncFiles {
    fn sync_file(&self, _: &std::fs::File, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_mapped(
        &self,
        _: &memmap2::MmapMut,
        _: &Path,
        _: usize,
        _: usize,
    ) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_dir(&self, _: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

pub fn fast_reopen_options() -> AdvancedOptions {
    AdvancedOptions {
        files: std::sync::Arc::new(NoSyncFiles),
        prepare_ahead: false,
    }
}

pub fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}.seg"))
}

/// A small seeded xorshift generator, so failures reproduce.
pub struct TestRng(pub u64);

impl TestRng {
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A file layer that loses power on command: once armed with
/// [`CrashFiles::crash_after_syncs`], the given number of data syncs more
/// succeed, and from then on every write, sync, allocation, rename and
/// deletion fails with EIO, so the files keep what the last of those
/// syncs made durable, as after a power loss at that moment. Writes reach
/// the files through the layer with the pwrite method only: with stores
/// through the mapping, unsynced bytes stay in the files.
#[derive(Debug)]
pub struct CrashFiles {
    syncs_left: std::sync::atomic::AtomicU64,
    crashed: std::sync::atomic::AtomicBool,
}

impl Default for CrashFiles {
    fn default() -> CrashFiles {
        CrashFiles {
            syncs_left: std::sync::atomic::AtomicU64::new(u64::MAX),
            crashed: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

impl CrashFiles {
    /// Power goes once `syncs` more data syncs are done (at once for 0).
    pub fn crash_after_syncs(&self, syncs: u64) {
        use std::sync::atomic::Ordering::SeqCst;
        self.syncs_left.store(syncs, SeqCst);
        self.crashed.store(syncs == 0, SeqCst);
    }

    pub fn crashed(&self) -> bool {
        self.crashed.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn alive(&self) -> std::io::Result<()> {
        if self.crashed() {
            Err(std::io::Error::from_raw_os_error(libc::EIO))
        } else {
            Ok(())
        }
    }

    /// Runs a data sync unless the power is gone; counts it.
    fn sync(&self, run: impl FnOnce() -> std::io::Result<()>) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::SeqCst;
        self.alive()?;
        run()?;
        // One atomic step: a sync that was under way when the layer was
        // armed counts once, and never disarms it.
        let counted = self
            .syncs_left
            .fetch_update(SeqCst, SeqCst, |left| match left {
                0 | u64::MAX => None,
                left => Some(left - 1),
            });
        if counted == Ok(1) {
            self.crashed.store(true, SeqCst);
        }
        Ok(())
    }
}

impl embraft::wal::FileLayer for CrashFiles {
    fn allocate(&self, file: &std::fs::File, path: &Path, len: u64) -> std::io::Result<()> {
        self.alive()?;
        embraft::wal::OsFiles.allocate(file, path, len)
    }
    fn write_at(
        &self,
        file: &std::fs::File,
        path: &Path,
        buf: &[u8],
        offset: u64,
    ) -> std::io::Result<()> {
        self.alive()?;
        embraft::wal::OsFiles.write_at(file, path, buf, offset)
    }
    fn sync_file(&self, file: &std::fs::File, path: &Path) -> std::io::Result<()> {
        self.sync(|| embraft::wal::OsFiles.sync_file(file, path))
    }
    fn sync_mapped(
        &self,
        map: &memmap2::MmapMut,
        path: &Path,
        offset: usize,
        len: usize,
    ) -> std::io::Result<()> {
        self.sync(|| embraft::wal::OsFiles.sync_mapped(map, path, offset, len))
    }
    fn sync_dir(&self, dir: &Path) -> std::io::Result<()> {
        self.alive()?;
        embraft::wal::OsFiles.sync_dir(dir)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.alive()?;
        embraft::wal::OsFiles.rename(from, to)
    }
    fn remove(&self, path: &Path) -> std::io::Result<()> {
        self.alive()?;
        embraft::wal::OsFiles.remove(path)
    }
}
