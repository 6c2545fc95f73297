package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

// embraft's side: three runtimes in this process, each with its own data
// directory and shared WAL (SyncAlways: every write synced before it
// counts), two workers each by default, talking over the group stream
// transport (docs/WIRE.md, one TCP connection per peer runtime) on
// 127.0.0.1.

type ebKV struct{ kv *kvStore }

func (s *ebKV) Apply(e embraft.Entry) {
	if err := s.kv.apply(e.Data); err != nil {
		// The harness only proposes well-formed entries; one that is not
		// is a bug the applied-count check then reports.
		fmt.Fprintln(os.Stderr, "embraft:", err)
	}
}

func (s *ebKV) Snapshot(w io.Writer) error { return s.kv.save(w) }
func (s *ebKV) Restore(r io.Reader) error  { return s.kv.load(r) }

type embraftCluster struct {
	runtimes   [3]*embraft.Runtime
	transports [3]*embraft.GroupStreamTransport
	listeners  [3]net.Listener
	groups     [3][]*embraft.Group // [runtime][group-1]
	stores     [3][]*kvStore
	leaders    []atomic.Int32 // [group-1]: the leading runtime's id, 0 while unknown
}

func startEmbraft(s settings, dir string, groups int) (cluster, error) {
	level := slog.LevelWarn
	if s.Verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	c := &embraftCluster{leaders: make([]atomic.Int32, groups)}
	for i := range c.listeners {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			c.close()
			return nil, err
		}
		c.listeners[i] = l
	}
	for i := range c.runtimes {
		id := uint64(i + 1)
		t := embraft.NewGroupStreamTransport(1, id, 0, log)
		for j, l := range c.listeners {
			if j != i {
				t.SetPeer(uint64(j+1), l.Addr().String())
			}
		}
		c.transports[i] = t
		rt, err := embraft.StartRuntime(embraft.RuntimeOptions{
			Config: embraft.Config{
				ID:                 id,
				DataDir:            filepath.Join(dir, fmt.Sprintf("rt%d", id)),
				ElectionTicks:      uint32(s.ElectionTicks),
				HeartbeatTicks:     uint32(s.HeartbeatTicks),
				Sync:               embraft.SyncAlways,
				SnapshotEntries:    s.SnapshotEntries,
				CompactKeepEntries: s.CompactKeep,
			},
			Workers:      s.Workers,
			Transport:    t,
			TickInterval: s.Tick,
			Logger:       log,
		})
		if err != nil {
			c.close()
			return nil, fmt.Errorf("embraft runtime %d: %w", id, err)
		}
		c.runtimes[i] = rt
		go t.Serve(c.listeners[i])
	}
	members := []uint64{1, 2, 3}
	for i, rt := range c.runtimes {
		c.groups[i] = make([]*embraft.Group, groups)
		c.stores[i] = make([]*kvStore, groups)
		for g := 1; g <= groups; g++ {
			kv := newKVStore()
			grp, err := rt.StartGroup(uint64(g), embraft.GroupOptions{
				Members:      members,
				StateMachine: &ebKV{kv: kv},
				AutoSnapshot: true,
			})
			if err != nil {
				c.close()
				return nil, fmt.Errorf("embraft group %d on runtime %d: %w", g, i+1, err)
			}
			c.groups[i][g-1], c.stores[i][g-1] = grp, kv
		}
	}
	err := waitFor(5*time.Minute, "embraft leaders", func() (bool, error) {
		for g := 1; g <= groups; g++ {
			if c.leaders[g-1].Load() == 0 && !c.findLeader(uint64(g)) {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		c.close()
		return nil, err
	}
	return c, nil
}

// findLeader records which runtime's replica of group g leads it.
func (c *embraftCluster) findLeader(g uint64) bool {
	for i := range c.groups {
		if c.groups[i][g-1].State().Role == embraft.Leader {
			c.leaders[g-1].Store(int32(i + 1))
			return true
		}
	}
	return false
}

func (c *embraftCluster) propose(ctx context.Context, g uint64, data []byte) error {
	return retryTransient(ctx, func() (bool, error) {
		id := c.leaders[g-1].Load()
		if id == 0 {
			c.findLeader(g)
			return true, errors.New("no leader known")
		}
		_, err := c.groups[id-1][g-1].Propose(ctx, data)
		if err == nil {
			return false, nil
		}
		// Leadership moved: find the leader again and retry, as an
		// application would.
		transient := errors.Is(err, embraft.ErrNotLeader)
		if transient {
			c.leaders[g-1].Store(0)
		}
		return transient, fmt.Errorf("embraft propose: %w", err)
	})
}

func (c *embraftCluster) applied(g uint64) uint64 {
	var most uint64
	for i := range c.stores {
		if c.stores[i] != nil && c.stores[i][g-1] != nil {
			most = max(most, c.stores[i][g-1].applied.Load())
		}
	}
	return most
}

func (c *embraftCluster) close() error {
	var first error
	for _, rt := range c.runtimes {
		if rt != nil {
			if err := rt.Close(); err != nil && first == nil {
				first = err
			}
		}
	}
	for i, t := range c.transports {
		if t != nil {
			t.Close()
		}
		if c.listeners[i] != nil {
			c.listeners[i].Close()
		}
	}
	return first
}
