//! `embraft_snapshot_writer`: a snapshot being taken by the host, from
//! `embraft_node_snapshot_begin` to `embraft_snapshot_writer_finish` or
//! `embraft_snapshot_writer_abort`.

use super::guard::{
    borrow_bytes, borrow_mut_or_return, borrow_or_return, catch_panics, record_failures,
    require_output, write_output,
};
use super::last_error::LastError;
use super::*;
use crate::node::SnapshotWriter;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::sync::{Arc, OnceLock};

/// An opaque snapshot being written. Created by
/// `embraft_node_snapshot_begin`; ended (and freed) by exactly one of
/// `embraft_snapshot_writer_finish` and `embraft_snapshot_writer_abort`.
pub struct embraft_snapshot_writer {
    writer: SnapshotWriter,
    /// The file's path as a C string, built when first asked for (asking
    /// makes finishing read the file back) and kept so the view handed out
    /// stays valid for the writer's lifetime.
    path: OnceLock<CString>,
    /// The last error of the node the writer came from.
    errors: Arc<LastError>,
}

impl embraft_snapshot_writer {
    pub(crate) fn new(writer: SnapshotWriter, errors: Arc<LastError>) -> embraft_snapshot_writer {
        embraft_snapshot_writer {
            writer,
            path: OnceLock::new(),
            errors,
        }
    }
}

/// Writes to `*path_out` the NUL-terminated path of the writer's file (a
/// temporary file in the node's `snapshots/` folder), owned by the writer
/// and valid until it is finished or aborted. A host that serializes its
/// state machine to a path (a database's backup call, for one) writes
/// there: open the file (it exists, empty), write, close. Do not also use
/// `embraft_snapshot_writer_write`. Bytes given to
/// `embraft_snapshot_writer_write` are checksummed as they come; once the
/// path was asked for, `embraft_snapshot_writer_finish` reads the file
/// back instead, so ask only when writing by path.
///
/// Thread safety: may be called from any thread, but not concurrently
/// with `embraft_snapshot_writer_write`, `_finish` or `_abort` on the same
/// writer.
#[no_mangle]
pub unsafe extern "C" fn embraft_snapshot_writer_path(
    writer: *const embraft_snapshot_writer,
    path_out: *mut *const c_char,
) -> embraft_status {
    catch_panics(|| {
        let writer = borrow_or_return!(writer);
        record_failures(&writer.errors, || {
            require_output(path_out, "path_out")?;
            let path = writer.path.get_or_init(|| {
                // A path on Unix never holds a NUL byte.
                CString::new(writer.writer.path().as_os_str().as_bytes()).unwrap_or_default()
            });
            // SAFETY: checked non-NULL above; writable by contract.
            unsafe { write_output(path_out, path.as_ptr()) };
            Ok(())
        })
    })
}

/// Appends `len` bytes at `data` (borrowed for the call; NULL allowed when
/// `len` is 0) to the writer's file. Fails with `EMBRAFT_ERR_STORAGE` when
/// the write fails (a full disk, for one); the reason is the node's last
/// error (`embraft_node_last_error`). The writer stays usable: abort it.
///
/// Thread safety: may be called from any thread, but not concurrently
/// with any other call on the same writer.
#[no_mangle]
pub unsafe extern "C" fn embraft_snapshot_writer_write(
    writer: *mut embraft_snapshot_writer,
    data: *const u8,
    len: usize,
) -> embraft_status {
    catch_panics(|| {
        let handle = borrow_mut_or_return!(writer);
        let errors = handle.errors.clone();
        record_failures(&errors, || {
            // SAFETY: buffer validity is the caller's contract.
            let bytes = unsafe { borrow_bytes(data, len, "data") }?;
            Ok(handle.writer.write(bytes)?)
        })
    })
}

/// Ends the snapshot: makes the file durable, checksums it (CRC-32, of the
/// bytes written as they came, or of the file read back when its path was
/// asked for), gives it its final name, and queues it for the node, which
/// records it in its write-ahead log and then compacts the log (keeping
/// the trailing entries set with `embraft_config_set_compact_keep_entries`)
/// and deletes older snapshots. Runs on the calling thread and returns
/// once the file is durable and queued, so it may take as long as syncing
/// the file (and reading it back); the host's apply loop may go on meanwhile on other threads. The writer
/// is freed whatever the outcome (its path becomes invalid). Fails with
/// `EMBRAFT_ERR_STALE_SNAPSHOT` when the node got a snapshot at or beyond
/// this index meanwhile (its file is deleted, unless another writer of the
/// same snapshot shares it; nothing is lost),
/// `EMBRAFT_ERR_STORAGE` when the file could not be synced, read or
/// renamed, `EMBRAFT_ERR_NODE_FAILED` when the node stopped or was freed;
/// the reason is the node's last error. NULL is
/// `EMBRAFT_ERR_NULL_ARGUMENT`.
///
/// Thread safety: may be called from any thread, but not concurrently
/// with any other call on the same writer.
#[no_mangle]
pub unsafe extern "C" fn embraft_snapshot_writer_finish(
    writer: *mut embraft_snapshot_writer,
) -> embraft_status {
    catch_panics(|| {
        if writer.is_null() {
            return EMBRAFT_ERR_NULL_ARGUMENT;
        }
        // SAFETY: a non-NULL writer came from embraft_node_snapshot_begin
        // and is ended once (the caller's contract).
        let handle = unsafe { Box::from_raw(writer) };
        let errors = handle.errors.clone();
        record_failures(&errors, || Ok(handle.writer.finish()?))
    })
}

/// Gives the snapshot up: deletes its file and frees the writer. NULL is a
/// no-op. Cannot fail (a file that cannot be deleted now is deleted when
/// the node next starts).
///
/// Thread safety: may be called from any thread, but not concurrently
/// with any other call on the same writer.
#[no_mangle]
pub unsafe extern "C" fn embraft_snapshot_writer_abort(writer: *mut embraft_snapshot_writer) {
    catch_panics(|| {
        if !writer.is_null() {
            // SAFETY: a non-NULL writer came from
            // embraft_node_snapshot_begin and is ended once (the caller's
            // contract).
            let handle = unsafe { Box::from_raw(writer) };
            handle.writer.abort();
        }
        EMBRAFT_OK
    });
}
