package embraft

import (
	"cmp"
	"context"
	"fmt"
	"net"
	"slices"
	"sync"
	"testing"
	"time"
)

// replicaAPI is what a host may code against to serve a Raft or a Group
// alike: both must keep satisfying it.
type replicaAPI interface {
	ID() uint64
	Propose(ctx context.Context, data []byte) (uint64, error)
	ProposeConfChange(ctx context.Context, change ConfChange, node uint64) (uint64, error)
	ProposeMembership(ctx context.Context, voters, learners []uint64) (uint64, error)
	ReadIndex(ctx context.Context) (uint64, error)
	TransferLeader(ctx context.Context, to uint64) error
	State() State
	WaitLeader(ctx context.Context) (uint64, error)
	Applied() uint64
	Status() (Status, error)
	Metrics() (Metrics, error)
	Snapshot(ctx context.Context) (uint64, error)
}

var (
	_ replicaAPI     = (*Raft)(nil)
	_ replicaAPI     = (*Group)(nil)
	_ Transport      = (*StreamTransport)(nil)
	_ Transport      = (*HTTPTransport)(nil)
	_ GroupTransport = (*GroupStreamTransport)(nil)
	_ GroupTransport = (*GroupHTTPTransport)(nil)
	_ GroupHost      = (*Runtime)(nil)
	_ ConnServer     = (*GroupStreamTransport)(nil)
)

// testRuntime is one runtime of an in-process cluster of runtimes on
// loopback, with a counterSM per group.
type testRuntime struct {
	t         *testing.T
	id        uint64
	dir       string
	rt        *Runtime
	transport *GroupStreamTransport
	listener  net.Listener

	mu  sync.Mutex
	sms map[uint64]*counterSM
}

// runtimeCluster is a set of runtimes listening on fixed loopback
// addresses, so that a runtime restarts on its address.
type runtimeCluster struct {
	t *testing.T
	// cfg is every runtime's configuration but its id and directory.
	cfg   Config
	tick  time.Duration
	addrs map[uint64]string
	dirs  map[uint64]string

	mu    sync.Mutex
	nodes map[uint64]*testRuntime
}

// node returns runtime id as last started.
func (c *runtimeCluster) node(id uint64) *testRuntime {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// list returns the runtimes as last started, by id.
func (c *runtimeCluster) list() []*testRuntime {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]*testRuntime, 0, len(c.nodes))
	for _, n := range c.nodes {
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *testRuntime) int { return cmp.Compare(a.id, b.id) })
	return out
}

func newRuntimeCluster(t *testing.T, ids ...uint64) *runtimeCluster {
	return newRuntimeClusterWith(t, Config{SegmentSize: testSegmentSize, Sync: SyncNever, LogLevel: LogInfo}, testTick, ids...)
}

func newRuntimeClusterWith(t *testing.T, cfg Config, tick time.Duration, ids ...uint64) *runtimeCluster {
	c := &runtimeCluster{t: t, cfg: cfg, tick: tick, addrs: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*testRuntime{}}
	listeners := map[uint64]net.Listener{}
	for _, id := range ids {
		l := listen(t)
		listeners[id] = l
		c.addrs[id] = l.Addr().String()
		c.dirs[id] = t.TempDir()
	}
	for _, id := range ids {
		c.start(id, listeners[id])
	}
	t.Cleanup(func() {
		for _, n := range c.list() {
			n.stop()
		}
	})
	return c
}

// start starts runtime id on l (nil: listen again on its address).
func (c *runtimeCluster) start(id uint64, l net.Listener) *testRuntime {
	t := c.t
	t.Helper()
	if l == nil {
		var err error
		// The port was ours a moment ago; retry while the old socket
		// lingers.
		deadline := time.Now().Add(5 * time.Second)
		for {
			l, err = net.Listen("tcp", c.addrs[id])
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	tr := NewGroupStreamTransport(7, id, 0, testLogger(t))
	for pid, a := range c.addrs {
		if pid != id {
			tr.SetPeer(pid, a)
		}
	}
	go tr.Serve(l)
	cfg := c.cfg
	cfg.ID, cfg.DataDir = id, c.dirs[id]
	rt, err := StartRuntime(RuntimeOptions{Config: cfg, Transport: tr, TickInterval: c.tick, Logger: testLogger(t)})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	n := &testRuntime{t: t, id: id, dir: c.dirs[id], rt: rt, transport: tr, listener: l, sms: map[uint64]*counterSM{}}
	c.mu.Lock()
	c.nodes[id] = n
	c.mu.Unlock()
	return n
}

func (n *testRuntime) stop() {
	n.listener.Close()
	n.rt.Close()
}

func (n *testRuntime) startGroup(group uint64, members []uint64) *Group {
	n.t.Helper()
	sm := &counterSM{}
	g, err := n.rt.StartGroup(group, GroupOptions{Members: members, StateMachine: sm})
	if err != nil {
		n.t.Fatalf("runtime %d: start group %d: %v", n.id, group, err)
	}
	n.mu.Lock()
	n.sms[group] = sm
	n.mu.Unlock()
	return g
}

func (n *testRuntime) sm(group uint64) *counterSM {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sms[group]
}

// leaderOf returns the runtime that leads group, waiting for one.
func (c *runtimeCluster) leaderOf(group uint64) *testRuntime {
	c.t.Helper()
	deadline := time.Now().Add(testTimeout)
	for time.Now().Before(deadline) {
		for _, n := range c.list() {
			if g := n.rt.Group(group); g != nil && g.State().Role == Leader {
				return n
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	c.t.Fatalf("no leader in group %d", group)
	return nil
}

// proposeToLeader proposes data in group through its leader, retrying
// while leadership moves or a runtime stops; it returns once a leader
// applied it.
func (c *runtimeCluster) proposeToLeader(ctx context.Context, group uint64, data []byte) error {
	var last error
	for {
		for _, n := range c.list() {
			if g := n.rt.Group(group); g != nil && g.State().Role == Leader {
				attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
				_, last = g.Propose(attempt, data)
				cancel()
				if last == nil {
					return nil
				}
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %d: %w (last error: %v)", group, ctx.Err(), last)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// balanceLeaders moves leaderships of groups 1..groups with TransferLeader
// until the runtimes lead as many groups each as can be (within one), and
// returns how many each leads.
func (c *runtimeCluster) balanceLeaders(ctx context.Context, groups uint64) map[uint64]int {
	c.t.Helper()
	for ctx.Err() == nil {
		led := map[uint64][]uint64{}
		for _, n := range c.list() {
			led[n.id] = nil
		}
		for g := uint64(1); g <= groups; g++ {
			n := c.leaderOf(g)
			led[n.id] = append(led[n.id], g)
		}
		most, least := uint64(0), uint64(0)
		for id, gs := range led {
			if most == 0 || len(gs) > len(led[most]) {
				most = id
			}
			if least == 0 || len(gs) < len(led[least]) {
				least = id
			}
		}
		if len(led[most])-len(led[least]) <= 1 {
			counts := map[uint64]int{}
			for id, gs := range led {
				counts[id] = len(gs)
			}
			return counts
		}
		c.t.Logf("moving group %d from runtime %d (leads %d) to %d (leads %d)", led[most][0], most, len(led[most]), least, len(led[least]))
		if g := c.node(most).rt.Group(led[most][0]); g != nil {
			attempt, cancel := context.WithTimeout(ctx, 2*time.Second)
			// A failed transfer (the target lagging, leadership moving
			// meanwhile) is retried from the next count.
			g.TransferLeader(attempt, least)
			cancel()
		}
	}
	c.t.Fatalf("leaders not balanced: %v", ctx.Err())
	return nil
}

// A few groups on 3 runtimes, threaded and inline (the runtime's work
// done on the goroutines that call it).
func TestRuntimeBasicGroups(t *testing.T) {
	for _, inline := range []bool{false, true} {
		t.Run(fmt.Sprintf("inline=%v", inline), func(t *testing.T) {
			testRuntimeBasicGroups(t, inline)
		})
	}
}

func testRuntimeBasicGroups(t *testing.T, inline bool) {
	const groups = 4
	c := newRuntimeClusterWith(t, Config{SegmentSize: testSegmentSize, Sync: SyncNever, LogLevel: LogInfo, Inline: inline}, testTick, 1, 2, 3)
	members := []uint64{1, 2, 3}
	for _, n := range c.nodes {
		for g := uint64(1); g <= groups; g++ {
			n.startGroup(g, members)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for g := uint64(1); g <= groups; g++ {
		if err := c.proposeToLeader(ctx, g, []byte(fmt.Sprintf("g%d", g))); err != nil {
			t.Fatal(err)
		}
	}
	for g := uint64(1); g <= groups; g++ {
		leader := c.leaderOf(g)
		grp := leader.rt.Group(g)
		if _, err := grp.ReadIndex(ctx); err != nil {
			t.Fatal(err)
		}
		if got := leader.sm(g).snapshotOf(); len(got) != 1 || string(got[0]) != fmt.Sprintf("g%d", g) {
			t.Fatalf("group %d applied %q", g, got)
		}
		st, err := grp.Status()
		if err != nil || st.ID != leader.id || st.Role != Leader {
			t.Fatalf("group %d status %+v, %v", g, st, err)
		}
		if l, err := grp.WaitLeader(ctx); err != nil || l != leader.id {
			t.Fatalf("group %d WaitLeader %d, %v", g, l, err)
		}
	}
}

// A 3-runtime cluster running 100 groups over the real
// GroupStreamTransport: writes to every group, leaders balanced with
// TransferLeader, one runtime closed while writes go on and restarted
// from its data directory, and in the end every acknowledged write
// applied, in the same order, on every replica.
func TestRuntimeHundredGroupsSurviveARestart(t *testing.T) {
	groups := uint64(pick(100, 6))
	// Longer timeouts than the other tests: 300 replicas share two cores
	// under the race detector, and a late heartbeat must not move
	// leaderships the test balanced.
	cfg := Config{SegmentSize: testSegmentSize, Sync: SyncNever, LogLevel: LogInfo, ElectionTicks: 20, HeartbeatTicks: 2}
	c := newRuntimeClusterWith(t, cfg, pick(20*time.Millisecond, 100*time.Millisecond), 1, 2, 3)
	members := []uint64{1, 2, 3}
	for _, n := range c.list() {
		for g := uint64(1); g <= groups; g++ {
			n.startGroup(g, members)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*testTimeout)
	defer cancel()

	var ackedMu sync.Mutex
	acked := map[uint64][]string{}
	// writes makes perGroup writes to every group, each group's in order,
	// groups in parallel.
	writes := func(phase string, perGroup int) error {
		work := make(chan uint64, groups)
		for g := uint64(1); g <= groups; g++ {
			work <- g
		}
		close(work)
		errs := make(chan error, 16)
		for w := 0; w < 16; w++ {
			go func() {
				for g := range work {
					for k := 0; k < perGroup; k++ {
						data := fmt.Sprintf("g%d-%s%d", g, phase, k)
						if err := c.proposeToLeader(ctx, g, []byte(data)); err != nil {
							errs <- err
							return
						}
						ackedMu.Lock()
						acked[g] = append(acked[g], data)
						ackedMu.Unlock()
					}
				}
				errs <- nil
			}()
		}
		var first error
		for w := 0; w < 16; w++ {
			if err := <-errs; err != nil && first == nil {
				first = err
			}
		}
		return first
	}

	if err := writes("a", 2); err != nil {
		t.Fatal(err)
	}
	assertBalanced := func(counts map[uint64]int) {
		t.Helper()
		low, high := int(groups)/3, (int(groups)+2)/3
		total := 0
		for id, n := range counts {
			if n < low || n > high {
				t.Fatalf("runtime %d leads %d groups, want %d to %d: %v", id, n, low, high, counts)
			}
			total += n
		}
		if total != int(groups) || len(counts) != 3 {
			t.Fatalf("leaders %v", counts)
		}
	}
	assertBalanced(c.balanceLeaders(ctx, groups))

	// Runtime 3, leading a third of the groups, goes away while writes go
	// on; the others elect new leaders and the writes complete.
	during := make(chan error, 1)
	ackedCount := func() int {
		ackedMu.Lock()
		defer ackedMu.Unlock()
		n := 0
		for _, w := range acked {
			n += len(w)
		}
		return n
	}
	before := ackedCount()
	go func() { during <- writes("b", 6) }()
	// Stopped once a quarter of the phase's writes are acknowledged, so
	// that some are in flight in its groups.
	for ackedCount() < before+int(groups)*6/4 && ctx.Err() == nil {
		time.Sleep(time.Millisecond)
	}
	before = ackedCount()
	c.node(3).stop()
	t.Logf("runtime 3 stopped after %d acknowledged writes", before)
	if err := <-during; err != nil {
		t.Fatal(err)
	}
	t.Logf("%d writes acknowledged after runtime 3 stopped", ackedCount()-before)
	for g := uint64(1); g <= groups; g++ {
		if c.leaderOf(g).id == 3 {
			t.Fatalf("group %d still led by the stopped runtime", g)
		}
	}

	// Restarted from its directory, it finds every group in its WAL and
	// catches up.
	n3 := c.start(3, nil)
	stored, err := n3.rt.StoredGroups()
	if err != nil || uint64(len(stored)) != groups || stored[0] != 1 || stored[len(stored)-1] != groups {
		t.Fatalf("stored groups %v, %v", stored, err)
	}
	for _, g := range stored {
		n3.startGroup(g, nil)
	}
	if err := writes("c", 1); err != nil {
		t.Fatal(err)
	}
	assertBalanced(c.balanceLeaders(ctx, groups))

	// Every acknowledged write is applied on every replica, and the
	// replicas applied the same sequence.
	for g := uint64(1); g <= groups; g++ {
		ackedMu.Lock()
		want := append([]string(nil), acked[g]...)
		ackedMu.Unlock()
		var ref [][]byte
		for _, n := range c.list() {
			var got [][]byte
			for {
				got = n.sm(g).snapshotOf()
				if containsAll(got, want) {
					break
				}
				if ctx.Err() != nil {
					t.Fatalf("runtime %d group %d applied %q, want all of %q", n.id, g, got, want)
				}
				time.Sleep(10 * time.Millisecond)
			}
			if ref == nil || len(got) > len(ref) {
				got, ref = ref, got
			}
			for i := range got {
				if string(got[i]) != string(ref[i]) {
					t.Fatalf("group %d: replicas differ at entry %d: %q and %q", g, i, got[i], ref[i])
				}
			}
		}
	}
}

// containsAll tells whether every string of want is among got.
func containsAll(got [][]byte, want []string) bool {
	have := make(map[string]bool, len(got))
	for _, e := range got {
		have[string(e)] = true
	}
	for _, w := range want {
		if !have[w] {
			return false
		}
	}
	return true
}

// A runtime joins running groups: it starts them with no members and
// each group's leader adds it (ProposeConfChange), then it catches up.
func TestRuntimeJoinsGroups(t *testing.T) {
	const groups = 3
	c := newRuntimeCluster(t, 1, 2, 3)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	for _, id := range []uint64{1, 2} {
		for g := uint64(1); g <= groups; g++ {
			c.node(id).startGroup(g, []uint64{1, 2})
		}
	}
	for g := uint64(1); g <= groups; g++ {
		if err := c.proposeToLeader(ctx, g, []byte("before")); err != nil {
			t.Fatal(err)
		}
	}
	joiner := c.node(3)
	for g := uint64(1); g <= groups; g++ {
		joiner.startGroup(g, nil)
	}
	for g := uint64(1); g <= groups; g++ {
		leader := c.leaderOf(g).rt.Group(g)
		if _, err := leader.ProposeConfChange(ctx, AddVoter, 3); err != nil {
			t.Fatalf("group %d: %v", g, err)
		}
		if err := c.proposeToLeader(ctx, g, []byte("after")); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the joiner catches up", func() bool {
			got := joiner.sm(g).snapshotOf()
			return len(got) == 2 && string(got[0]) == "before" && string(got[1]) == "after"
		})
		st, err := joiner.rt.Group(g).Status()
		if err != nil || !slices.Equal(st.Voters, []uint64{1, 2, 3}) {
			t.Fatalf("group %d on the joiner: voters %v, %v", g, st.Voters, err)
		}
	}
}
