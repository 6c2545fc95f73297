package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"runtime"
	"sync"
)

// SnapshotWriter is a snapshot of the host's state machine being written
// into a file the library owns (in DataDir/snapshots), from
// Node.BeginSnapshot to Finish or Abort. It is an io.Writer: write the
// state as of the snapshot's index, then call Finish, which makes the file
// durable and hands it to the node (which records it, compacts its log,
// streams it to followers that need it and restores from it after a
// restart). A host that serializes to a path instead (a database's backup
// call) writes to Path and never calls Write.
//
// The methods may be called from any goroutine, one at a time (they
// serialize themselves). Finish and Abort end the writer; Close aborts it
// unless it was finished, and is idempotent, so `defer w.Close()` right
// after BeginSnapshot is always safe. A finalizer aborts a writer that was
// dropped unfinished, as a safety net only. Calls after the end return
// ErrClosed. A writer may outlive its Node: Finish then fails with
// ErrNodeFailed.
type SnapshotWriter struct {
	// mu serializes the calls, because the C API forbids calls on one
	// writer concurrently; ptr is nil once the writer ended.
	mu    sync.Mutex
	ptr   *C.embraft_snapshot_writer
	owner writerOwner
	index uint64
}

// writerOwner is what made a writer (a Node, a Runtime): its failures are
// recorded as the owner's last error.
type writerOwner interface {
	// errorOf builds the error of a failed call on the writer.
	errorOf(op string, code C.embraft_status) error
	// notify tells the owner's driver a batch may be ready.
	notify()
}

// BeginSnapshot starts a snapshot at log index index, which the state
// machine must have applied and the node been told so (AckApplied;
// ErrNotApplied otherwise) and which must be later than the node's latest
// snapshot (ErrStaleSnapshot otherwise). The writer's file starts empty.
func (n *Node) BeginSnapshot(index uint64) (*SnapshotWriter, error) {
	var ptr *C.embraft_snapshot_writer
	err := n.input("embraft_node_snapshot_begin", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_snapshot_begin(p, C.uint64_t(index), &ptr)
	})
	if err != nil {
		return nil, err
	}
	return newSnapshotWriter(ptr, n, index), nil
}

// newSnapshotWriter wraps a writer the library handed out.
func newSnapshotWriter(ptr *C.embraft_snapshot_writer, owner writerOwner, index uint64) *SnapshotWriter {
	w := &SnapshotWriter{ptr: ptr, owner: owner, index: index}
	runtime.SetFinalizer(w, (*SnapshotWriter).abort)
	return w
}

// Index returns the log index the snapshot stands for.
func (w *SnapshotWriter) Index() uint64 { return w.index }

// Path returns the writer's file (a temporary file in the node's
// snapshots folder, existing and empty at first), for hosts that write
// the snapshot through the file system rather than with Write; the file
// must be written and closed before Finish. The name is valid until the
// writer ends. Ask only to write by path: bytes given to Write are
// checksummed as they come, but once the path was asked for, Finish reads
// the file back to checksum what it holds.
func (w *SnapshotWriter) Path() (string, error) {
	debugAccess()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ptr == nil {
		return "", ErrClosed
	}
	var path *C.char
	code := C.embraft_snapshot_writer_path(w.ptr, &path)
	var out string
	if code == C.EMBRAFT_OK {
		// A Go copy: the C string dies with the writer.
		out = C.GoString(path)
	}
	runtime.KeepAlive(w)
	if code != C.EMBRAFT_OK {
		return "", &CallError{Op: "embraft_snapshot_writer_path", Code: Code(code)}
	}
	return out, nil
}

// Write appends p to the snapshot (io.Writer). A failed write (a full
// disk, say) leaves the writer usable only for Abort or Close.
func (w *SnapshotWriter) Write(p []byte) (int, error) {
	debugAccess()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ptr == nil {
		return 0, ErrClosed
	}
	data, size := bytesArg(p)
	code := C.embraft_snapshot_writer_write(w.ptr, data, size)
	runtime.KeepAlive(p)
	runtime.KeepAlive(w)
	if code != C.EMBRAFT_OK {
		return 0, w.owner.errorOf("embraft_snapshot_writer_write", code)
	}
	return len(p), nil
}

// Finish ends the snapshot: the file is made durable, checksummed and
// queued for the node. It returns once that is done, which takes as long
// as syncing the file (and reading it back, see Path), so call it off any goroutine that must
// stay responsive. The writer ends whatever the outcome. ErrStaleSnapshot
// means the node got a snapshot at or beyond this index meanwhile (the
// file is deleted; nothing is lost).
func (w *SnapshotWriter) Finish() error {
	debugAccess()
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ptr == nil {
		return ErrClosed
	}
	ptr := w.ptr
	w.ptr = nil
	runtime.SetFinalizer(w, nil)
	code := C.embraft_snapshot_writer_finish(ptr)
	runtime.KeepAlive(w)
	w.owner.notify()
	if code != C.EMBRAFT_OK {
		return w.owner.errorOf("embraft_snapshot_writer_finish", code)
	}
	return nil
}

// Abort gives the snapshot up and deletes its file. It is a no-op on a
// writer that already ended.
func (w *SnapshotWriter) Abort() {
	debugAccess()
	w.abort()
}

// abort is Abort without the debug build's collection, for the finalizer.
func (w *SnapshotWriter) abort() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ptr == nil {
		return
	}
	C.embraft_snapshot_writer_abort(w.ptr)
	w.ptr = nil
	runtime.SetFinalizer(w, nil)
	runtime.KeepAlive(w)
}

// Close aborts the snapshot unless it was finished. Idempotent; always nil.
func (w *SnapshotWriter) Close() error {
	w.Abort()
	return nil
}
