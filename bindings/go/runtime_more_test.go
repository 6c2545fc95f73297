package embraft

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startLoneRuntime starts a runtime with no transport, for groups it is
// the only member of.
func startLoneRuntime(t *testing.T, dir string, cfg Config) *Runtime {
	t.Helper()
	cfg.ID, cfg.DataDir, cfg.SegmentSize, cfg.Sync = 1, dir, testSegmentSize, SyncNever
	rt, err := StartRuntime(RuntimeOptions{Config: cfg, TickInterval: testTick, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rt.Close() })
	return rt
}

// proposeToGroup proposes n entries "<prefix><i>" to a lone group.
func proposeToGroup(ctx context.Context, t *testing.T, g *Group, prefix string, n int) {
	t.Helper()
	if _, err := g.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if _, err := g.Propose(ctx, []byte(prefix+strconv.Itoa(i))); err != nil {
			t.Fatalf("group %d: %v", g.ID(), err)
		}
	}
}

func TestRuntimeBadInput(t *testing.T) {
	rt := startLoneRuntime(t, t.TempDir(), Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sm := &counterSM{}
	if _, err := rt.StartGroup(0, GroupOptions{Members: []uint64{1}, StateMachine: sm}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("group 0: %v", err)
	}
	if _, err := rt.StartGroup(1, GroupOptions{Members: []uint64{1}}); err == nil || !strings.Contains(err.Error(), "StateMachine") {
		t.Fatalf("no state machine: %v", err)
	}
	if _, err := rt.StartGroup(2, GroupOptions{Members: []uint64{1, 0}, StateMachine: sm}); !errors.Is(err, ErrInvalidArgument) {
		t.Fatalf("member 0: %v", err)
	}
	if rt.Group(2) != nil {
		t.Fatal("a group that failed to start is listed")
	}
	g, err := rt.StartGroup(1, GroupOptions{Members: []uint64{1}, StateMachine: sm})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.StartGroup(1, GroupOptions{Members: []uint64{1}, StateMachine: sm}); !errors.Is(err, ErrGroupExists) {
		t.Fatalf("started twice: %v", err)
	}
	if err := rt.StopGroup(99); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("stop unknown group: %v", err)
	}
	if _, err := rt.Metrics(99); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("metrics of unknown group: %v", err)
	}
	// Frames: garbage is refused whole; a well-formed frame for a group
	// not running here is taken (its message left out, as WIRE.md says).
	for _, frame := range [][]byte{nil, {1, 2, 3}, {1, 0, 0, 0}, {0, 0, 0, 0, 0xff}} {
		if err := rt.StepFrame(frame); !errors.Is(err, ErrMalformed) {
			t.Fatalf("frame %x: %v", frame, err)
		}
	}
	unknown := binary.LittleEndian.AppendUint32(nil, 1)
	unknown = binary.LittleEndian.AppendUint64(unknown, 99)
	unknown = binary.LittleEndian.AppendUint32(unknown, 2)
	if err := rt.StepFrame(append(unknown, 1, 2)); err != nil {
		t.Fatalf("frame for an unknown group: %v", err)
	}

	proposeToGroup(ctx, t, g, "x", 3)
	if _, err := g.ReadIndex(ctx); err != nil || sm.count() != 3 {
		t.Fatalf("read index %v, applied %d", err, sm.count())
	}
	m, err := rt.Metrics(1)
	if err != nil || m.ProposalsCommitted != 3 {
		t.Fatalf("metrics %+v, %v", m, err)
	}
	if gm, err := g.Metrics(); err != nil || gm.ProposalsCommitted != 3 {
		t.Fatalf("group metrics %+v, %v", gm, err)
	}
	if ids, err := rt.RunningGroups(); err != nil || len(ids) != 1 || ids[0] != 1 {
		t.Fatalf("running %v, %v", ids, err)
	}

	// A stopped group fails its calls; it can run again.
	if err := rt.StopGroup(1); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Propose(ctx, []byte("y")); !errors.Is(err, ErrClosed) {
		t.Fatalf("propose to a stopped group: %v", err)
	}
	if _, err := g.Status(); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("status of a stopped group: %v", err)
	}
	sm2 := &counterSM{}
	g, err = rt.StartGroup(1, GroupOptions{StateMachine: sm2})
	if err != nil {
		t.Fatal(err)
	}
	proposeToGroup(ctx, t, g, "z", 1)
	if sm2.count() != 4 {
		t.Fatalf("restarted group applied %d entries, want 4", sm2.count())
	}

	// A closed runtime fails every call, clearly.
	rt.Close()
	if _, err := g.Propose(ctx, []byte("y")); !errors.Is(err, ErrClosed) {
		t.Fatalf("propose after close: %v", err)
	}
	if _, err := g.ReadIndex(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("read after close: %v", err)
	}
	if _, err := g.Snapshot(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("snapshot after close: %v", err)
	}
	if _, err := g.Status(); !errors.Is(err, ErrClosed) {
		t.Fatalf("status after close: %v", err)
	}
	if _, err := rt.StartGroup(2, GroupOptions{Members: []uint64{1}, StateMachine: sm}); !errors.Is(err, ErrClosed) {
		t.Fatalf("start group after close: %v", err)
	}
	if _, err := rt.StoredGroups(); !errors.Is(err, ErrClosed) {
		t.Fatalf("stored groups after close: %v", err)
	}
	if err := rt.StepFrame(append(unknown, 1, 2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("frame after close: %v", err)
	}
	if rt.Group(1) != nil || len(rt.Groups()) != 0 {
		t.Fatal("groups listed after close")
	}
	if err := rt.Close(); err != nil {
		t.Fatal(err)
	}
}

// A runtime's listener closes a connection that sends a frame that is not
// a group frame; the runtime goes on.
func TestGroupStreamRefusesGarbageFrame(t *testing.T) {
	c := newRuntimeCluster(t, 1)
	n := c.node(1)
	conn, status := rawHello(t, c.addrs[1], 7, 2, 1, helloGroupFrames)
	defer conn.Close()
	if status != replyAccepted {
		t.Fatalf("status %d", status)
	}
	garbage := []byte{5, 0, 0, 0, 1, 2, 3}
	conn.Write(append(binary.LittleEndian.AppendUint32(nil, uint32(len(garbage))), garbage...))
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("connection not closed after a garbage frame: %v", err)
	}
	g := n.startGroup(1, []uint64{1})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	proposeToGroup(ctx, t, g, "x", 1)
}

// Snapshots of groups: asked for with Snapshot, taken by AutoSnapshot,
// restored on restart; a restore that fails stops only its group.
func TestRuntimeGroupSnapshots(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{CompactKeepEntries: 1, SnapshotEntries: 5}
	rt := startLoneRuntime(t, dir, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	groups := map[uint64]*Group{}
	for id := uint64(1); id <= 3; id++ {
		g, err := rt.StartGroup(id, GroupOptions{Members: []uint64{1}, StateMachine: &counterSM{}, AutoSnapshot: id == 3})
		if err != nil {
			t.Fatal(err)
		}
		groups[id] = g
		proposeToGroup(ctx, t, g, fmt.Sprintf("g%d-", id), 10)
	}
	index, err := groups[1].Snapshot(ctx)
	if err != nil || index < 10 {
		t.Fatalf("snapshot at %d: %v", index, err)
	}
	if _, err := groups[1].Snapshot(ctx); !errors.Is(err, ErrStaleSnapshot) {
		t.Fatalf("second snapshot at the same index: %v", err)
	}
	waitFor(t, "snapshots recorded", func() bool {
		s1, err1 := groups[1].Status()
		s3, err3 := groups[3].Status()
		return err1 == nil && err3 == nil && s1.SnapshotIndex == index && s3.SnapshotIndex >= 5
	})
	if s2, err := groups[2].Status(); err != nil || s2.SnapshotIndex != 0 {
		t.Fatalf("group 2 without AutoSnapshot has a snapshot: %+v, %v", s2, err)
	}
	rt.Close()

	rt = startLoneRuntime(t, dir, cfg)
	sms := map[uint64]*counterSM{}
	for id := uint64(1); id <= 3; id++ {
		sms[id] = &counterSM{}
		g, err := rt.StartGroup(id, GroupOptions{StateMachine: sms[id]})
		if err != nil {
			t.Fatal(err)
		}
		groups[id] = g
	}
	for id, sm := range sms {
		if _, err := groups[id].WaitLeader(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := groups[id].ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		got := sm.snapshotOf()
		if len(got) != 10 || string(got[0]) != fmt.Sprintf("g%d-0", id) || string(got[9]) != fmt.Sprintf("g%d-9", id) {
			t.Fatalf("group %d after restart: %q", id, got)
		}
		if restored := sm.restoreCount(); (id == 2) != (restored == 0) {
			t.Fatalf("group %d restored %d snapshots", id, restored)
		}
	}
	rt.Close()

	rt = startLoneRuntime(t, dir, cfg)
	bad, err := rt.StartGroup(1, GroupOptions{StateMachine: &failingRestoreSM{}})
	if err != nil {
		t.Fatal(err)
	}
	good, err := rt.StartGroup(2, GroupOptions{StateMachine: &counterSM{}})
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "group with a failing restore stopped", func() bool { return rt.Group(1) == nil })
	if _, err := bad.Propose(ctx, []byte("x")); err == nil || !strings.Contains(err.Error(), "restoring the snapshot") {
		t.Fatalf("propose to a group whose restore failed: %v", err)
	}
	proposeToGroup(ctx, t, good, "more", 1)
	if _, err := rt.StartGroup(1, GroupOptions{StateMachine: &counterSM{}}); err != nil {
		t.Fatalf("the stopped group does not start again: %v", err)
	}
}

type failingRestoreSM struct{ counterSM }

func (*failingRestoreSM) Restore(io.Reader) error { return errors.New("no room") }

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(testTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// The group-frame variant of the HTTP transport: two runtimes, two
// groups; a node's path and garbage are refused.
func TestGroupHTTPTransport(t *testing.T) {
	ids := []uint64{1, 2}
	transports := map[uint64]*GroupHTTPTransport{}
	servers := map[uint64]*httptest.Server{}
	for _, id := range ids {
		transports[id] = NewGroupHTTPTransport(9, id, 0, testLogger(t))
		mux := http.NewServeMux()
		mux.Handle(GroupHTTPTransportPath, transports[id])
		servers[id] = httptest.NewServer(mux)
		defer servers[id].Close()
	}
	rts := map[uint64]*Runtime{}
	sms := map[uint64]map[uint64]*counterSM{}
	for _, id := range ids {
		transports[id].SetPeer(3-id, servers[3-id].URL)
		rt, err := StartRuntime(RuntimeOptions{Config: Config{SegmentSize: testSegmentSize, ID: id, DataDir: t.TempDir(), Sync: SyncNever},
			Transport: transports[id], TickInterval: testTick, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		defer rt.Close()
		rts[id] = rt
		sms[id] = map[uint64]*counterSM{}
		for g := uint64(1); g <= 2; g++ {
			sms[id][g] = &counterSM{}
			if _, err := rt.StartGroup(g, GroupOptions{Members: ids, StateMachine: sms[id][g]}); err != nil {
				t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for g := uint64(1); g <= 2; g++ {
		leader, err := rts[1].Group(g).WaitLeader(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 5; i++ {
			if _, err := rts[leader].Group(g).Propose(ctx, []byte("x")); err != nil {
				t.Fatal(err)
			}
		}
		for _, id := range ids {
			if _, err := rts[id].Group(g).ReadIndex(ctx); err != nil {
				t.Fatal(err)
			}
			if n := sms[id][g].count(); n != 5 {
				t.Fatalf("runtime %d group %d applied %d", id, g, n)
			}
		}
	}

	post := func(path string, body []byte) int {
		req, _ := http.NewRequest(http.MethodPost, servers[1].URL+path, bytes.NewReader(body))
		req.Header.Set(headerCluster, "9")
		req.Header.Set(headerFrom, "2")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	garbage := append(binary.LittleEndian.AppendUint32(nil, 3), 9, 9, 9)
	if code := post(GroupHTTPTransportPath, garbage); code != http.StatusBadRequest {
		t.Fatalf("garbage frame: %d", code)
	}
	if code := post(HTTPTransportPath, garbage); code != http.StatusNotFound {
		t.Fatalf("a node's path on a runtime: %d", code)
	}
	if code := post(GroupHTTPTransportPath, binary.LittleEndian.AppendUint32(nil, 4)); code != http.StatusBadRequest {
		t.Fatalf("truncated body: %d", code)
	}
}

// A runtime handle nobody closed is freed by its finalizer, which
// releases the data directory's lock.
func TestFinalizerFreesForgottenRuntime(t *testing.T) {
	cfg := Config{SegmentSize: testSegmentSize, ID: 1, DataDir: t.TempDir(), Sync: SyncNever}
	func() {
		if _, err := newRuntimeHandle(cfg, 1); err != nil {
			t.Fatal(err)
		}
	}()
	deadline := time.Now().Add(5 * time.Second)
	for {
		runtimeGC()
		rt, err := StartRuntime(RuntimeOptions{Config: cfg, Workers: 1})
		if err == nil {
			rt.Close()
			return
		}
		if !errors.Is(err, ErrDirectoryLocked) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// blockingSM blocks in Apply until released.
type blockingSM struct {
	counterSM
	entered chan struct{}
	release chan struct{}
}

func (s *blockingSM) Apply(e Entry) {
	s.entered <- struct{}{}
	<-s.release
	s.counterSM.Apply(e)
}

// A snapshot request queued behind a busy Apply fails with ErrClosed when
// the group stops, instead of waiting for its context; other groups
// apply meanwhile.
func TestGroupStopFailsQueuedSnapshot(t *testing.T) {
	rt := startLoneRuntime(t, t.TempDir(), Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	sm := &blockingSM{entered: make(chan struct{}, 1), release: make(chan struct{})}
	g, err := rt.StartGroup(1, GroupOptions{Members: []uint64{1}, StateMachine: sm})
	if err != nil {
		t.Fatal(err)
	}
	other, err := rt.StartGroup(2, GroupOptions{Members: []uint64{1}, StateMachine: &counterSM{}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WaitLeader(ctx); err != nil {
		t.Fatal(err)
	}
	proposed := make(chan error, 1)
	go func() {
		_, err := g.Propose(ctx, []byte("x"))
		proposed <- err
	}()
	<-sm.entered
	// Group 1's Apply is blocked; group 2 still applies.
	proposeToGroup(ctx, t, other, "y", 2)

	snapshot := make(chan error, 1)
	go func() {
		_, err := g.Snapshot(ctx)
		snapshot <- err
	}()
	waitFor(t, "snapshot request queued", func() bool {
		g.qmu.Lock()
		defer g.qmu.Unlock()
		return len(g.queue) > 0
	})
	stopped := make(chan error, 1)
	go func() { stopped <- rt.StopGroup(1) }()
	waitFor(t, "group stopping", func() bool {
		g.qmu.Lock()
		defer g.qmu.Unlock()
		return g.stopped
	})
	close(sm.release)
	if err := <-stopped; err != nil {
		t.Fatal(err)
	}
	if err := <-snapshot; !errors.Is(err, ErrClosed) {
		t.Fatalf("queued snapshot: %v", err)
	}
	// The proposal's outcome came in the batch that holds its entry: the
	// part being applied when the group stopped completes.
	if err := <-proposed; err != nil {
		t.Fatalf("proposal: %v", err)
	}
}
