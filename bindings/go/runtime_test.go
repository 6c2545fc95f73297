package embraft

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"
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
	t     *testing.T
	addrs map[uint64]string
	dirs  map[uint64]string
	nodes map[uint64]*testRuntime
}

func newRuntimeCluster(t *testing.T, ids ...uint64) *runtimeCluster {
	c := &runtimeCluster{t: t, addrs: map[uint64]string{}, dirs: map[uint64]string{}, nodes: map[uint64]*testRuntime{}}
	listeners := map[uint64]net.Listener{}
	for _, id := range ids {
		l := listen(t)
		listeners[id] = l
		c.addrs[id] = l.Addr().String()
		c.dirs[id] = t.TempDir()
	}
	for _, id := range ids {
		c.nodes[id] = c.start(id, listeners[id])
	}
	t.Cleanup(func() {
		for _, n := range c.nodes {
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
	rt, err := StartRuntime(RuntimeOptions{
		Config:    Config{SegmentSize: testSegmentSize, ID: id, DataDir: c.dirs[id], Sync: SyncNever, LogLevel: LogInfo},
		Transport: tr, TickInterval: testTick, Logger: testLogger(t),
	})
	if err != nil {
		l.Close()
		t.Fatal(err)
	}
	n := &testRuntime{t: t, id: id, dir: c.dirs[id], rt: rt, transport: tr, listener: l, sms: map[uint64]*counterSM{}}
	c.nodes[id] = n
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
		for _, n := range c.nodes {
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
// while leadership moves; it returns once a leader applied it.
func (c *runtimeCluster) proposeToLeader(ctx context.Context, group uint64, data []byte) error {
	for {
		var g *Group
		for _, n := range c.nodes {
			if gg := n.rt.Group(group); gg != nil && gg.State().Role == Leader {
				g = gg
				break
			}
		}
		if g != nil {
			_, err := g.Propose(ctx, data)
			if err == nil {
				return nil
			}
			if !errors.Is(err, ErrNotLeader) && !errors.Is(err, ErrDropped) && !errors.Is(err, ErrClosed) {
				return err
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %d: %w", group, ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func TestRuntimeBasicGroups(t *testing.T) {
	const groups = 4
	c := newRuntimeCluster(t, 1, 2, 3)
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
