package embraft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"sync"
	"testing"
	"time"
)

// counterSM is a state machine that records the entries it applied.
type counterSM struct {
	mu       sync.Mutex
	entries  [][]byte
	restores []uint64 // number of entries each Restore brought
}

func (s *counterSM) Apply(e Entry) {
	s.mu.Lock()
	s.entries = append(s.entries, e.Data)
	s.mu.Unlock()
}

// Snapshot writes a count, then each entry as a length and its bytes.
func (s *counterSM) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := binary.Write(w, binary.LittleEndian, uint32(len(s.entries))); err != nil {
		return err
	}
	for _, e := range s.entries {
		if err := binary.Write(w, binary.LittleEndian, uint32(len(e))); err != nil {
			return err
		}
		if _, err := w.Write(e); err != nil {
			return err
		}
	}
	return nil
}

func (s *counterSM) Restore(r io.Reader) error {
	var n uint32
	if err := binary.Read(r, binary.LittleEndian, &n); err != nil {
		return err
	}
	entries := make([][]byte, 0, n)
	for ; n > 0; n-- {
		var size uint32
		if err := binary.Read(r, binary.LittleEndian, &size); err != nil {
			return err
		}
		e := make([]byte, size)
		if _, err := io.ReadFull(r, e); err != nil {
			return err
		}
		entries = append(entries, e)
	}
	if extra, _ := r.Read(make([]byte, 1)); extra != 0 {
		return errors.New("counterSM: trailing bytes in snapshot")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.entries = entries
	s.restores = append(s.restores, uint64(len(entries)))
	return nil
}

func (s *counterSM) restoreCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.restores)
}

func (s *counterSM) restoresOf() []uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]uint64(nil), s.restores...)
}

func (s *counterSM) snapshotOf() [][]byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([][]byte(nil), s.entries...)
}

func (s *counterSM) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.entries)
}

// Under the embraftdebug tag every access to a handle runs a full
// collection, so the tests tick slower, wait longer and do less.
var (
	testTick    = pick(10*time.Millisecond, 100*time.Millisecond)
	testTimeout = pick(20*time.Second, 90*time.Second)
	testOps     = pick(25, 4)
)

// testSegmentSize keeps the WAL small: many nodes share the disk.
const testSegmentSize = 4 << 20

func pick[T any](normal, debug T) T {
	if debugBuild {
		return debug
	}
	return normal
}

func testLogger(t *testing.T) *slog.Logger {
	if os.Getenv("EMBRAFT_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelWarn}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// testNode is one member of an in-process cluster on loopback.
type testNode struct {
	raft      *Raft
	sm        *counterSM
	transport *StreamTransport
	listener  net.Listener
}

func startTestNode(t *testing.T, id uint64, peers []uint64, dir string, addrs map[uint64]string, l net.Listener) *testNode {
	t.Helper()
	return startTestNodeInline(t, false, id, peers, dir, addrs, l)
}

// startTestNodeInline starts a test node, inline (Config.Inline) or not.
func startTestNodeInline(t *testing.T, inline bool, id uint64, peers []uint64, dir string, addrs map[uint64]string, l net.Listener) *testNode {
	t.Helper()
	tr := NewStreamTransport(7, id, 0, testLogger(t))
	for pid, a := range addrs {
		if pid != id {
			tr.SetPeer(pid, a)
		}
	}
	go tr.Serve(l)
	sm := &counterSM{}
	r, err := Start(Options{
		Config:       Config{SegmentSize: testSegmentSize, ID: id, Peers: peers, DataDir: dir, Sync: SyncNever, LogLevel: LogInfo, CompactKeepEntries: 1, Inline: inline},
		StateMachine: sm, Transport: tr, TickInterval: testTick, Logger: testLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	return &testNode{raft: r, sm: sm, transport: tr, listener: l}
}

func (n *testNode) stop() {
	n.listener.Close()
	n.raft.Close()
}

func listen(t *testing.T) net.Listener {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func waitLeader(t *testing.T, nodes map[uint64]*testNode) *testNode {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		for _, n := range nodes {
			if n.raft.State().Role == Leader {
				return n
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader elected")
	return nil
}

func TestVersionAndABI(t *testing.T) {
	if abiMismatch != nil {
		t.Fatal(abiMismatch)
	}
	if Version() == "" {
		t.Fatal("empty version")
	}
}

func TestNodeCloseIsIdempotentAndCallsFailAfter(t *testing.T) {
	n, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: t.TempDir(), Sync: SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Tick(); err != nil {
		t.Fatal(err)
	}
	n.Close()
	n.Close()
	if err := n.Tick(); !errors.Is(err, ErrClosed) {
		t.Fatalf("tick after close: %v", err)
	}
}

func TestErrorsAreMatchable(t *testing.T) {
	n, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: t.TempDir(), Sync: SyncNever})
	if err != nil {
		t.Fatal(err)
	}
	defer n.Close()
	err = n.Step([]byte{0xff})
	if !errors.Is(err, ErrMalformed) {
		t.Fatalf("step garbage: %v", err)
	}
	var call *CallError
	if !errors.As(err, &call) || call.Op != "embraft_node_step" {
		t.Fatalf("not a CallError: %#v", err)
	}
	if _, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 0, DataDir: t.TempDir()}); !errors.Is(err, ErrInvalidConfig) && !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("id 0: %v", err)
	}
}

func TestFinalizerFreesForgottenNode(t *testing.T) {
	dir := t.TempDir()
	func() {
		if _, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: dir, Sync: SyncNever}); err != nil {
			t.Fatal(err)
		}
	}()
	// The finalizer releases the directory lock, so the directory can be
	// opened again.
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtimeGC()
		n, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: dir, Sync: SyncNever})
		if err == nil {
			n.Close()
			return
		}
		if !errors.Is(err, ErrDirectoryLocked) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSingleNodeProposeAndRead(t *testing.T) {
	t.Run("threaded", func(t *testing.T) { testSingleNodeProposeAndRead(t, Config{Sync: SyncNever}) })
	t.Run("inline", func(t *testing.T) { testSingleNodeProposeAndRead(t, Config{Sync: SyncNever, Inline: true}) })
	t.Run("synced-default", func(t *testing.T) { testSingleNodeProposeAndRead(t, Config{}) })
	t.Run("synced-mmap", func(t *testing.T) { testSingleNodeProposeAndRead(t, Config{WALWrite: WALWriteMmap}) })
	t.Run("synced-pwrite", func(t *testing.T) { testSingleNodeProposeAndRead(t, Config{WALWrite: WALWritePwrite}) })
}

// The binding numbers the write methods itself (zero is the library's
// default): a value past its constants must reach the library and be
// refused there, not be mistaken for one of the C constants.
func TestUnknownWALWriteMethodIsRefused(t *testing.T) {
	_, err := NewNode(Config{SegmentSize: testSegmentSize, ID: 1, Peers: []uint64{1}, DataDir: t.TempDir(),
		WALWrite: WALWritePwrite + 1})
	if !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("WALWrite %d: %v", WALWritePwrite+1, err)
	}
}

// startSingleNode starts a one-node cluster configured as config, whose
// identity, directory and segment size it fills in, and waits for it to
// lead. The node closes, and the context ends, with the test.
func startSingleNode(t *testing.T, config Config) (*Raft, *counterSM, context.Context) {
	t.Helper()
	sm := &counterSM{}
	config.SegmentSize, config.ID, config.Peers, config.DataDir = testSegmentSize, 1, []uint64{1}, t.TempDir()
	r, err := Start(Options{Config: config, StateMachine: sm, TickInterval: testTick, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	t.Cleanup(cancel)
	if _, err := r.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	return r, sm, ctx
}

// testSingleNodeProposeAndRead runs a one-node cluster configured as
// config, whose identity, directory and segment size it fills in.
func testSingleNodeProposeAndRead(t *testing.T, config Config) {
	r, sm, ctx := startSingleNode(t, config)
	for i := 0; i < 50; i++ {
		if _, err := r.Propose(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if sm.count() != 50 {
		t.Fatalf("applied %d", sm.count())
	}
	if _, err := r.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := r.Status()
	if err != nil || st.Role != Leader || len(st.Voters) != 1 {
		t.Fatalf("status %+v %v", st, err)
	}
}

// TestIdleNodeGoesQuietAndAProposalWakesIt: with QuiesceTicks, an idle
// leader reports itself quiescent; a proposal wakes it and commits.
func TestIdleNodeGoesQuietAndAProposalWakesIt(t *testing.T) {
	r, sm, ctx := startSingleNode(t, Config{Sync: SyncNever, QuiesceTicks: 3})
	quiet := func() bool {
		st, err := r.Status()
		return err == nil && st.Quiescent
	}
	for !quiet() {
		if ctx.Err() != nil {
			t.Fatal("the idle leader never went quiet")
		}
		time.Sleep(testTick)
	}
	if _, err := r.Propose(ctx, []byte("x")); err != nil {
		t.Fatal(err)
	}
	if sm.count() != 1 {
		t.Fatalf("applied %d", sm.count())
	}
	for !quiet() {
		if ctx.Err() != nil {
			t.Fatal("the leader never went quiet again")
		}
		time.Sleep(testTick)
	}
}

// TestClusterReplicationSnapshotAndJoin runs three nodes over the stream
// transport, compacts the leader's log, and adds a fourth node that can
// only catch up from the streamed snapshot.
func TestClusterReplicationSnapshotAndJoin(t *testing.T) {
	t.Run("threaded", func(t *testing.T) { testClusterReplicationSnapshotAndJoin(t, false) })
	// Inline nodes: the node's work runs on the driver, transport and
	// proposer goroutines.
	t.Run("inline", func(t *testing.T) { testClusterReplicationSnapshotAndJoin(t, true) })
}

func testClusterReplicationSnapshotAndJoin(t *testing.T, inline bool) {
	ids := []uint64{1, 2, 3}
	listeners := map[uint64]net.Listener{}
	addrs := map[uint64]string{}
	for _, id := range append(ids, 4) {
		listeners[id] = listen(t)
		addrs[id] = listeners[id].Addr().String()
	}
	nodes := map[uint64]*testNode{}
	for _, id := range ids {
		nodes[id] = startTestNodeInline(t, inline, id, ids, t.TempDir(), addrs, listeners[id])
	}
	defer func() {
		for _, n := range nodes {
			n.stop()
		}
	}()
	leader := waitLeader(t, nodes)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	var wg sync.WaitGroup
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < testOps; i++ {
				if _, err := leader.raft.Propose(ctx, []byte(fmt.Sprintf("%d-%d", w, i))); err != nil {
					t.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for _, n := range nodes {
		if _, err := n.raft.ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if n.sm.count() != 8*testOps {
			t.Fatalf("node %d applied %d entries", n.raft.ID(), n.sm.count())
		}
	}
	if _, err := leader.raft.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 10; i++ {
		if _, err := leader.raft.Propose(ctx, []byte("after")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := leader.raft.Snapshot(ctx); err != nil {
		t.Fatal(err)
	}
	nodes[4] = startTestNodeInline(t, inline, 4, nil, t.TempDir(), addrs, listeners[4])
	for _, n := range nodes {
		n.transport.SetPeer(4, addrs[4])
	}
	if _, err := leader.raft.ProposeConfChange(ctx, AddVoter, 4); err != nil {
		t.Fatal(err)
	}
	for nodes[4].sm.count() != 8*testOps+10 {
		select {
		case <-ctx.Done():
			t.Fatalf("new node applied %d of %d", nodes[4].sm.count(), 8*testOps+10)
		case <-time.After(20 * time.Millisecond):
		}
	}
	// Node 4 started empty and the log it needed was compacted away: it
	// got there through the snapshot the leader's library streamed.
	if nodes[4].sm.restoreCount() == 0 {
		t.Fatal("the new node caught up without restoring a snapshot")
	}
	// Leadership transfer to the new node.
	if err := leader.raft.TransferLeader(ctx, 4); err != nil {
		t.Fatal(err)
	}
	if _, err := nodes[4].raft.Propose(ctx, []byte("from 4")); err != nil {
		t.Fatal(err)
	}
}

func TestHTTPTransport(t *testing.T) {
	ids := []uint64{1, 2, 3}
	transports := map[uint64]*HTTPTransport{}
	servers := map[uint64]*httptest.Server{}
	for _, id := range ids {
		transports[id] = NewHTTPTransport(9, id, 0, testLogger(t))
		mux := http.NewServeMux()
		mux.Handle(HTTPTransportPath, transports[id])
		servers[id] = httptest.NewServer(mux)
		defer servers[id].Close()
	}
	rafts := map[uint64]*Raft{}
	sms := map[uint64]*counterSM{}
	for _, id := range ids {
		for _, p := range ids {
			if p != id {
				transports[id].SetPeer(p, servers[p].URL)
			}
		}
		sms[id] = &counterSM{}
		r, err := Start(Options{Config: Config{SegmentSize: testSegmentSize, ID: id, Peers: ids, DataDir: t.TempDir(), Sync: SyncNever},
			StateMachine: sms[id], Transport: transports[id], TickInterval: testTick, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		rafts[id] = r
		defer r.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	leader, err := rafts[1].WaitLeader(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 20; i++ {
		if _, err := rafts[leader].Propose(ctx, []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	for _, id := range ids {
		if _, err := rafts[id].ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if sms[id].count() != 20 {
			t.Fatalf("node %d applied %d", id, sms[id].count())
		}
	}
}
