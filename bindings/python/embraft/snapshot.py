"""Snapshots: the binary stream a state machine serializes itself into.

embraft owns snapshot files: `embraft_node_snapshot_begin` creates an empty
file in the node's `snapshots/` folder, the host fills it, and
`embraft_snapshot_writer_finish` makes it durable, checksums it and hands it
to the node, which records it, compacts its log, streams it to followers
that need it and hands it back to restore after a restart. `SnapshotWriter`
is that writer as a buffered binary file object.
"""

from __future__ import annotations

import io
import os
import threading
from ctypes import byref, c_void_p
from typing import Any, Callable

from . import _ffi
from ._ffi import lib
from ._managed import Managed
from .errors import EmbraftError, error_for_status

# Bytes gathered before each call into the library: large enough that the
# ctypes overhead vanishes, small enough not to matter in memory.
BUFFER_BYTES = 256 * 1024


class SnapshotWriterHandle(Managed[_ffi.SnapshotWriterPtr]):
    """A snapshot writer (embraft_snapshot_writer*). Closing it aborts the
    snapshot; `finish` consumes it."""

    _free = lib.embraft_snapshot_writer_abort
    _what = "snapshot writer"

    def path(self) -> str:
        path = c_void_p()
        code = lib.embraft_snapshot_writer_path(self.ptr(), byref(path))
        if code != _ffi.OK:
            raise error_for_status(code, "reading a snapshot writer's path")
        return os.fsdecode(_ffi.string_at(path))


class _WriterSink(io.RawIOBase):
    """The raw stream under a SnapshotWriter: each write goes to
    `embraft_snapshot_writer_write`. Owns the C writer."""

    def __init__(self, handle: SnapshotWriterHandle,
                 error_for: Callable[[int], EmbraftError]):
        super().__init__()
        self._handle = handle
        # The writer may be used from any thread, one at a time; the lock
        # keeps a write from racing with a finish or an abort.
        self._lock = threading.Lock()
        self._error_for = error_for
        self._path: str | None = None
        self.mode = "wb"

    @property
    def name(self) -> str:
        """The file's path, asked of the library on first use: asking makes
        finishing read the file back to checksum it (bytes that only come
        through `write` are checksummed on the way)."""
        with self._lock:
            if self._path is None:
                if self._handle.closed:
                    raise ValueError("the snapshot ended before its path was asked for")
                self._path = self._handle.path()
            return self._path

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        # The library copies nothing it keeps: bytes pass as they are, other
        # buffers (BufferedWriter hands over memoryviews) are copied once.
        payload = data if isinstance(data, bytes) else bytes(data)
        with self._lock:
            if self._handle.closed:
                raise ValueError("write to a snapshot that was finished or aborted")
            code = lib.embraft_snapshot_writer_write(self._handle.ptr(), payload, len(payload))
        if code != _ffi.OK:
            raise self._error_for(code)
        return len(payload)

    @property
    def ended(self) -> bool:
        return self._handle.closed

    def end(self, finish: bool) -> int:
        """Finishes or aborts the C writer, once; the status of the call
        (OK when it had already ended or was aborted)."""
        with self._lock:
            if self._handle.closed:
                return _ffi.OK
            if finish:
                return int(lib.embraft_snapshot_writer_finish(self._handle.take()))
            self._handle.close()
            return _ffi.OK


class SnapshotWriter(io.BufferedWriter):
    """A snapshot being taken at log `index`: a buffered, write-only,
    non-seekable binary file object (`name` and `path` are the file's path
    in the node's `snapshots/` folder; ask for them only to write there, or
    before the writer ends: once asked for, `finish()` reads the file back
    to checksum it).

    Write the state machine as of `index` into it, then call `finish()`,
    which flushes, makes the file durable, checksums it and queues it for
    the node (it takes as long as syncing the file, and reading it back
    once `name` was asked for), or `abort()`, which deletes it. Used as a
    context manager it finishes on a clean exit and aborts when the block
    raises. `close()` only closes the stream:
    the snapshot still needs `finish()` or `abort()`. A writer that is
    garbage collected without either is aborted.

    A writer may be used from any thread, one at a time, and outlives its
    node: finishing after the node closed fails with NodeFailedError.
    """

    def __init__(self, handle: SnapshotWriterHandle, index: int,
                 error_for: Callable[[int], EmbraftError]):
        sink = _WriterSink(handle, error_for)
        super().__init__(sink, BUFFER_BYTES)
        self.index = index
        self._sink = sink
        self._error_for = error_for

    @property
    def path(self) -> str:
        """The file being written (valid until finish or abort)."""
        return self._sink.name

    @property
    def ended(self) -> bool:
        """True once finished or aborted."""
        return self._sink.ended

    def finish(self) -> int:
        """Ends the snapshot and returns its index once it is durable and
        queued for the node. Raises StaleSnapshotError when the node got a
        snapshot at or beyond the index meanwhile, StorageError when the
        file could not be written or synced, NodeFailedError when the node
        stopped or closed; the snapshot is given up in every case."""
        if self._sink.ended:
            raise ValueError("the snapshot was already finished or aborted")
        try:
            # Flushes what is buffered; a stream the state machine closed
            # itself was flushed then.
            self.close()
        except BaseException:
            self.abort()
            raise
        code = self._sink.end(finish=True)
        if code != _ffi.OK:
            raise self._error_for(code)
        return self.index

    def abort(self) -> None:
        """Gives the snapshot up and deletes its file. Harmless once ended."""
        try:
            if not self.closed:
                self.close()
        except (OSError, ValueError, EmbraftError):
            pass  # the data is being thrown away
        finally:
            self._sink.end(finish=False)

    def __enter__(self) -> "SnapshotWriter":
        return self

    def __exit__(self, exc_type: Any, exc_value: Any, traceback: Any) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abort()

    def __repr__(self) -> str:
        state = "ended" if self.ended else "open"
        return f"<embraft.SnapshotWriter index={self.index} {state} {self.path!r}>"
