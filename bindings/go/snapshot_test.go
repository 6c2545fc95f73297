package embraft

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startSingle starts a one-node Raft on dir and waits for it to lead.
func startSingle(t *testing.T, dir string, sm StateMachine, tweak func(*Options)) *Raft {
	t.Helper()
	opts := Options{
		Config:       Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: dir, Sync: SyncNever, CompactKeepEntries: 1},
		StateMachine: sm, TickInterval: testTick, Logger: testLogger(t),
	}
	if tweak != nil {
		tweak(&opts)
	}
	r, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.WaitLeader(ctx); err != nil {
		r.Close()
		t.Fatal(err)
	}
	return r
}

func proposeN(t *testing.T, r *Raft, n int, prefix string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for i := 0; i < n; i++ {
		if _, err := r.Propose(ctx, []byte(fmt.Sprintf("%s-%d", prefix, i))); err != nil {
			t.Fatal(err)
		}
	}
}

// snapshotFiles lists the files of the library's snapshot folder whose
// names start with prefix ("snap-" for stored snapshots, "take-" for
// writers' temporary files).
func snapshotFiles(t *testing.T, dataDir, prefix string) []string {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(dataDir, "snapshots"))
	if err != nil && !os.IsNotExist(err) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			names = append(names, e.Name())
		}
	}
	return names
}

// preparedSM serializes off the driver goroutine (SnapshotPreparer).
type preparedSM struct {
	counterSM
	prepared int
}

func (s *preparedSM) PrepareSnapshot() (func(io.Writer) error, error) {
	s.prepared++
	copied := &counterSM{entries: s.snapshotOf()}
	return copied.Snapshot, nil
}

// failingSM cannot restore.
type failingSM struct{ counterSM }

func (s *failingSM) Restore(io.Reader) error { return errors.New("failingSM: no restore") }

// TestRestartFromSnapshot takes a snapshot, compacts the log, restarts
// with an empty state machine, and checks that it is restored from the
// snapshot, then brought up to date from the log.
func TestRestartFromSnapshot(t *testing.T) {
	for _, prepared := range []bool{false, true} {
		t.Run(fmt.Sprintf("prepared=%v", prepared), func(t *testing.T) {
			dir := t.TempDir()
			newSM := func() (StateMachine, *counterSM) {
				if prepared {
					sm := &preparedSM{}
					return sm, &sm.counterSM
				}
				sm := &counterSM{}
				return sm, sm
			}
			sm, counter := newSM()
			r := startSingle(t, dir, sm, nil)
			proposeN(t, r, 30, "before")
			ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
			defer cancel()
			index, err := r.Snapshot(ctx)
			if err != nil {
				r.Close()
				t.Fatal(err)
			}
			if index != r.Applied() {
				t.Errorf("snapshot at %d, applied %d", index, r.Applied())
			}
			if p, ok := sm.(*preparedSM); ok && p.prepared != 1 {
				t.Errorf("PrepareSnapshot called %d times", p.prepared)
			}
			waitSnapshotIndex(t, r, index)
			proposeN(t, r, 5, "after")
			want := counter.snapshotOf()
			r.Close()
			if files := snapshotFiles(t, dir, "snap-"); len(files) != 1 {
				t.Fatalf("stored snapshots: %v", files)
			}

			sm, counter = newSM()
			r = startSingle(t, dir, sm, nil)
			defer r.Close()
			if _, err := r.ReadIndex(ctx); err != nil {
				t.Fatal(err)
			}
			if got := counter.restoresOf(); len(got) != 1 || got[0] != 30 {
				t.Fatalf("restores %v, want one of 30 entries", got)
			}
			if got := counter.snapshotOf(); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("state after restart:\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestRestoreFailureStopsRaft: entries must not be applied on top of a
// state machine that could not restore.
func TestRestoreFailureStopsRaft(t *testing.T) {
	dir := t.TempDir()
	r := startSingle(t, dir, &counterSM{}, nil)
	proposeN(t, r, 5, "x")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	proposeN(t, r, 2, "y")
	r.Close()

	sm := &failingSM{}
	r, err := Start(Options{
		Config:       Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: dir, Sync: SyncNever},
		StateMachine: sm, TickInterval: testTick, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for {
		if _, err := r.Propose(ctx, []byte("z")); err != nil {
			if !strings.Contains(err.Error(), "no restore") {
				t.Fatalf("propose after a failed restore: %v", err)
			}
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the driver went on after a failed restore")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if sm.count() != 0 {
		t.Fatalf("applied %d entries without the snapshot's state", sm.count())
	}
}

// TestSnapshotWriter exercises the writer directly: the index rules, the
// writer's end states, writing through the path, and errors.Is on each
// failure.
func TestSnapshotWriter(t *testing.T) {
	dir := t.TempDir()
	sm := &counterSM{}
	r := startSingle(t, dir, sm, nil)
	defer r.Close()
	node := r.Node()
	proposeN(t, r, 10, "a")
	applied := r.Applied()

	if _, err := node.BeginSnapshot(applied + 100); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("begin beyond applied: %v", err)
	}
	w1, err := node.BeginSnapshot(applied)
	if err != nil {
		t.Fatal(err)
	}
	defer w1.Close()
	w2, err := node.BeginSnapshot(applied)
	if err != nil {
		t.Fatal(err)
	}
	defer w2.Close()
	if w1.Index() != applied {
		t.Fatalf("writer index %d", w1.Index())
	}
	path, err := w1.Path()
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != 0 || filepath.Dir(path) != filepath.Join(dir, "snapshots") {
		t.Fatalf("writer file %s: %v %v", path, fi, err)
	}
	if err := sm.Snapshot(w1); err != nil {
		t.Fatal(err)
	}
	if err := w1.Finish(); err != nil {
		t.Fatal(err)
	}
	// Ended: everything but Close and Abort fails with ErrClosed.
	if err := w1.Finish(); !errors.Is(err, ErrClosed) {
		t.Fatalf("second finish: %v", err)
	}
	if _, err := w1.Write([]byte("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after finish: %v", err)
	}
	if _, err := w1.Path(); !errors.Is(err, ErrClosed) {
		t.Fatalf("path after finish: %v", err)
	}
	w1.Abort()
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}

	// A second writer at the same index loses to the first at Finish.
	if _, err := w2.Write([]byte("late")); err != nil {
		t.Fatal(err)
	}
	err = w2.Finish()
	var call *CallError
	if !errors.Is(err, ErrStaleSnapshot) || !errors.As(err, &call) || call.Op != "embraft_snapshot_writer_finish" {
		t.Fatalf("finish of a stale writer: %#v", err)
	}
	if _, err := node.BeginSnapshot(applied); !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("begin at the latest snapshot: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.Snapshot(ctx); !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("Raft.Snapshot with nothing new applied: %v", err)
	}

	// Abort and Close delete the temporary file and are idempotent.
	proposeN(t, r, 1, "b")
	w3, err := node.BeginSnapshot(r.Applied())
	if err != nil {
		t.Fatal(err)
	}
	path, _ = w3.Path()
	w3.Abort()
	w3.Abort()
	w3.Close()
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("aborted writer's file: %v", err)
	}

	// Writing through the path instead of Write.
	w4, err := node.BeginSnapshot(r.Applied())
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := sm.Snapshot(&buf); err != nil {
		t.Fatal(err)
	}
	path, _ = w4.Path()
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := w4.Finish(); err != nil {
		t.Fatal(err)
	}
	waitSnapshotIndex(t, r, w4.Index())

	// A writer outlives its node: Finish then reports the node gone.
	proposeN(t, r, 1, "c")
	w5, err := node.BeginSnapshot(r.Applied())
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
	if _, err := w5.Write([]byte("x")); err != nil {
		t.Fatalf("write after the node closed: %v", err)
	}
	if err := w5.Finish(); !errors.Is(err, ErrNodeFailed) {
		t.Fatalf("finish after the node closed: %v", err)
	}
}

// TestSnapshotStateMachineError: a failing StateMachine.Snapshot aborts
// the writer and leaves nothing behind.
func TestSnapshotStateMachineError(t *testing.T) {
	dir := t.TempDir()
	r := startSingle(t, dir, &failingSnapshotSM{}, nil)
	defer r.Close()
	proposeN(t, r, 3, "a")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.Snapshot(ctx); !errors.Is(err, errSnapshotFailed) {
		t.Fatalf("state machine error: %v", err)
	}
	if files := snapshotFiles(t, dir, ""); len(files) != 0 {
		t.Fatalf("files left: %v", files)
	}
	if st, _ := r.Status(); st.SnapshotIndex != 0 {
		t.Fatalf("snapshot index %d", st.SnapshotIndex)
	}
}

// waitSnapshotIndex waits for the node to record a snapshot at index
// (Finish returns once the file is queued; the WAL records it after).
func waitSnapshotIndex(t *testing.T, r *Raft, index uint64) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for {
		st, err := r.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.SnapshotIndex == index {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("snapshot index %d, want %d", st.SnapshotIndex, index)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

var errSnapshotFailed = errors.New("cannot snapshot")

type failingSnapshotSM struct{ counterSM }

func (s *failingSnapshotSM) Snapshot(w io.Writer) error {
	w.Write([]byte("partial"))
	return errSnapshotFailed
}

// TestForgottenWriterIsAborted: the finalizer aborts a writer dropped
// without Finish, Abort or Close, and deletes its file.
func TestForgottenWriterIsAborted(t *testing.T) {
	dir := t.TempDir()
	r := startSingle(t, dir, &counterSM{}, nil)
	defer r.Close()
	proposeN(t, r, 3, "a")
	func() {
		w, err := r.Node().BeginSnapshot(r.Applied())
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("forgotten"))
	}()
	if len(snapshotFiles(t, dir, "take-")) != 1 {
		t.Fatal("no temporary file for the writer")
	}
	deadline := time.Now().Add(5 * time.Second)
	for len(snapshotFiles(t, dir, "take-")) != 0 {
		if time.Now().After(deadline) {
			t.Fatal("the forgotten writer's file is still there")
		}
		runtimeGC()
		time.Sleep(10 * time.Millisecond)
	}
}

// TestCorruptSnapshotRefusesStart: a damaged snapshot file the WAL names
// stops the node from starting, with ErrCorrupt.
func TestCorruptSnapshotRefusesStart(t *testing.T) {
	dir := t.TempDir()
	r := startSingle(t, dir, &counterSM{}, nil)
	proposeN(t, r, 5, "a")
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	if _, err := r.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	r.Close()
	files := snapshotFiles(t, dir, "snap-")
	if len(files) != 1 {
		t.Fatalf("stored snapshots: %v", files)
	}
	path := filepath.Join(dir, "snapshots", files[0])
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 0xff
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Start(Options{
		Config:       Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: dir, Sync: SyncNever},
		StateMachine: &counterSM{}, TickInterval: testTick, Logger: testLogger(t),
	})
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("start on a corrupt snapshot: %v", err)
	}
}

// TestAutoSnapshot: with Options.AutoSnapshot the driver takes the
// snapshots the node asks for (Config.SnapshotEntries).
func TestAutoSnapshot(t *testing.T) {
	dir := t.TempDir()
	r := startSingle(t, dir, &counterSM{}, func(o *Options) {
		o.SnapshotEntries = 20
		o.AutoSnapshot = true
	})
	defer r.Close()
	proposeN(t, r, 50, "a")
	deadline := time.Now().Add(testTimeout)
	for {
		st, err := r.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.SnapshotIndex >= 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no snapshot taken: %+v", st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLaggingFollowerCatchesUpThroughSnapshot cuts a follower off, lets
// the leader compact its log past it, and checks that the follower is
// brought back by the snapshot the library streams: its Restore gets the
// leader's state at the snapshot's index, and the log does the rest.
func TestLaggingFollowerCatchesUpThroughSnapshot(t *testing.T) {
	ids := []uint64{1, 2, 3}
	addrs := map[uint64]string{}
	listeners := map[uint64]net.Listener{}
	for _, id := range ids {
		listeners[id] = listen(t)
		addrs[id] = listeners[id].Addr().String()
	}
	nodes := map[uint64]*testNode{}
	for _, id := range ids {
		nodes[id] = startTestNode(t, id, ids, t.TempDir(), addrs, listeners[id])
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	leader := waitLeader(t, nodes)
	var lagger *testNode
	for _, n := range nodes {
		if n != leader {
			lagger = n
			break
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	proposeN(t, leader.raft, 5, "together")
	// Cut the lagger off, both ways.
	lid := lagger.raft.ID()
	lagger.transport.SetPartition(ids)
	for _, n := range nodes {
		if n != lagger {
			n.transport.SetPartition([]uint64{lid})
		}
	}
	proposeN(t, leader.raft, 40, "apart")
	index, err := leader.raft.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	atSnapshot := leader.sm.count()
	proposeN(t, leader.raft, 7, "after")
	// The node compacts once the snapshot is recorded in its WAL.
	for {
		st, err := leader.raft.Status()
		if err != nil {
			t.Fatal(err)
		}
		if st.FirstIndex > lagger.raft.Applied()+1 {
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("the leader's log still holds what the lagger needs: first %d, lagger at %d", st.FirstIndex, lagger.raft.Applied())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Heal.
	for _, n := range nodes {
		n.transport.SetPartition(nil)
	}
	total := leader.sm.count()
	for lagger.sm.count() != total {
		select {
		case <-ctx.Done():
			t.Fatalf("lagger applied %d of %d", lagger.sm.count(), total)
		case <-time.After(20 * time.Millisecond):
		}
	}
	restores := lagger.sm.restoresOf()
	if len(restores) != 1 || restores[0] != uint64(atSnapshot) {
		t.Fatalf("lagger restores %v, want one of %d entries (snapshot at index %d)", restores, atSnapshot, index)
	}
	if got, want := fmt.Sprint(lagger.sm.snapshotOf()), fmt.Sprint(leader.sm.snapshotOf()); got != want {
		t.Fatalf("lagger state differs from the leader's:\n%s\n%s", got, want)
	}
	if st, _ := lagger.raft.Status(); st.SnapshotIndex != index {
		t.Fatalf("lagger's snapshot index %d, want %d", st.SnapshotIndex, index)
	}
}
