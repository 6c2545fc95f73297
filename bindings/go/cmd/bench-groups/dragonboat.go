package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4"
	"github.com/lni/dragonboat/v4/client"
	dbconfig "github.com/lni/dragonboat/v4/config"
	"github.com/lni/dragonboat/v4/logger"
	sm "github.com/lni/dragonboat/v4/statemachine"
)

// dragonboat's side: three NodeHosts in this process, each with its own
// directory and this version's default LogDB (sharded Pebble: 16 Pebble
// instances, pure Go, every write batch synced; its tan log is an
// experimental plugin), talking over its default TCP transport on
// 127.0.0.1.

type dbKV struct{ kv *kvStore }

func (s *dbKV) Update(e sm.Entry) (sm.Result, error) {
	if err := s.kv.apply(e.Cmd); err != nil {
		return sm.Result{}, err
	}
	return sm.Result{Value: e.Index}, nil
}

func (s *dbKV) Lookup(any) (any, error) { return nil, errors.New("kv: no lookups") }

func (s *dbKV) SaveSnapshot(w io.Writer, _ sm.ISnapshotFileCollection, _ <-chan struct{}) error {
	return s.kv.save(w)
}

func (s *dbKV) RecoverFromSnapshot(r io.Reader, _ []sm.SnapshotFile, _ <-chan struct{}) error {
	return s.kv.load(r)
}

func (s *dbKV) Close() error { return nil }

type dragonboatCluster struct {
	hosts    [3]*dragonboat.NodeHost
	stores   [3][]*kvStore     // [host][group-1], set by the create function
	sessions []*client.Session // the no-op session of each group
	leaders  []atomic.Int32    // [group-1]: index of the host that leads it
	mu       sync.Mutex
}

var quietDragonboat sync.Once

// dragonboatLogger drops dragonboat's informational logging, which would
// otherwise print a few lines per replica started.
type dragonboatLogger struct {
	pkg     string
	verbose bool
}

func (l dragonboatLogger) SetLevel(logger.LogLevel) {}
func (l dragonboatLogger) Debugf(string, ...any)    {}
func (l dragonboatLogger) Infof(f string, a ...any) {
	if l.verbose {
		fmt.Fprintf(os.Stderr, "dragonboat %s: "+f+"\n", append([]any{l.pkg}, a...)...)
	}
}
func (l dragonboatLogger) Warningf(f string, a ...any) {
	if l.verbose {
		fmt.Fprintf(os.Stderr, "dragonboat %s: warning: "+f+"\n", append([]any{l.pkg}, a...)...)
	}
}
func (l dragonboatLogger) Errorf(f string, a ...any) {
	// Closing one NodeHost resets its peers' connections, which they
	// report as errors: not worth a line unless asked.
	if l.pkg == "transport" && !l.verbose {
		return
	}
	fmt.Fprintf(os.Stderr, "dragonboat %s: error: "+f+"\n", append([]any{l.pkg}, a...)...)
}
func (l dragonboatLogger) Panicf(f string, a ...any) {
	panic(fmt.Sprintf("dragonboat %s: "+f, append([]any{l.pkg}, a...)...))
}

func startDragonboat(s settings, dir string, groups int) (cluster, error) {
	quietDragonboat.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger {
			return dragonboatLogger{pkg: pkg, verbose: s.Verbose}
		})
	})
	ports, err := freePorts(3)
	if err != nil {
		return nil, err
	}
	members := make(map[uint64]string, 3)
	for i, p := range ports {
		members[uint64(i+1)] = fmt.Sprintf("127.0.0.1:%d", p)
	}
	c := &dragonboatCluster{
		sessions: make([]*client.Session, groups),
		leaders:  make([]atomic.Int32, groups),
	}
	for h := 0; h < 3; h++ {
		c.stores[h] = make([]*kvStore, groups)
		hostDir := filepath.Join(dir, fmt.Sprintf("nh%d", h+1))
		nhc := dbconfig.NodeHostConfig{
			NodeHostDir:    hostDir,
			WALDir:         hostDir,
			RTTMillisecond: uint64(s.Tick / time.Millisecond),
			RaftAddress:    members[uint64(h+1)],
		}
		// The default LogDB budget (GetLargeMemLogDBConfig: up to 8 GB of
		// memory per NodeHost) does not fit three NodeHosts on a 24 GiB
		// machine, and its Pebble shards preallocate WAL files by the
		// size of their 128 MiB write buffers, which filled 65 GB of disk
		// here within seconds. The medium budget keeps 64 MiB buffers:
		// same storage, same syncs.
		nhc.Expert.LogDB = dbconfig.GetMediumMemLogDBConfig()
		if s.DragonboatLogDBShards > 0 {
			nhc.Expert.LogDB.Shards = s.DragonboatLogDBShards
		}
		nh, err := dragonboat.NewNodeHost(nhc)
		if err != nil {
			c.close()
			return nil, fmt.Errorf("dragonboat NodeHost %d: %w", h+1, err)
		}
		c.hosts[h] = nh
	}
	for g := 1; g <= groups; g++ {
		for h, nh := range c.hosts {
			h := h
			create := func(shardID, replicaID uint64) sm.IStateMachine {
				kv := newKVStore()
				c.mu.Lock()
				c.stores[h][shardID-1] = kv
				c.mu.Unlock()
				return &dbKV{kv: kv}
			}
			cfg := dbconfig.Config{
				ReplicaID:          uint64(h + 1),
				ShardID:            uint64(g),
				ElectionRTT:        uint64(s.ElectionTicks),
				HeartbeatRTT:       uint64(s.HeartbeatTicks),
				CheckQuorum:        true,
				PreVote:            true,
				SnapshotEntries:    s.SnapshotEntries,
				CompactionOverhead: s.CompactKeep,
			}
			if err := nh.StartReplica(members, false, create, cfg); err != nil {
				c.close()
				return nil, fmt.Errorf("dragonboat group %d on host %d: %w", g, h+1, err)
			}
		}
		c.sessions[g-1] = c.hosts[0].GetNoOPSession(uint64(g))
	}
	err = waitFor(5*time.Minute, "dragonboat leaders", func() (bool, error) {
		for g := 1; g <= groups; g++ {
			if c.leaders[g-1].Load() == 0 {
				if !c.findLeader(uint64(g)) {
					return false, nil
				}
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

// findLeader records which host leads group g: one whose own replica
// says it leads (another host's view may lag behind an election).
func (c *dragonboatCluster) findLeader(g uint64) bool {
	for h, nh := range c.hosts {
		id, _, ok, err := nh.GetLeaderID(g)
		if err == nil && ok && id == uint64(h+1) {
			c.leaders[g-1].Store(int32(id))
			return true
		}
	}
	return false
}

func (c *dragonboatCluster) propose(ctx context.Context, g uint64, data []byte) error {
	return retryTransient(ctx, func() (bool, error) {
		h := c.leaders[g-1].Load()
		if h == 0 {
			c.findLeader(g)
			return true, errors.New("no leader known")
		}
		_, err := c.hosts[h-1].SyncPropose(ctx, c.sessions[g-1], data)
		if err == nil {
			return false, nil
		}
		// Leadership moved, or the group is busy or catching up: find the
		// leader again and retry, as an application would.
		transient := errors.Is(err, dragonboat.ErrSystemBusy) || errors.Is(err, dragonboat.ErrShardNotReady) ||
			errors.Is(err, dragonboat.ErrTimeout) || errors.Is(err, dragonboat.ErrShardNotFound)
		if transient {
			c.leaders[g-1].Store(0)
		}
		return transient, fmt.Errorf("dragonboat propose: %w", err)
	})
}

func (c *dragonboatCluster) applied(g uint64) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	var most uint64
	for h := range c.stores {
		if kv := c.stores[h][g-1]; kv != nil {
			most = max(most, kv.applied.Load())
		}
	}
	return most
}

func (c *dragonboatCluster) close() error {
	for _, nh := range c.hosts {
		if nh != nil {
			nh.Close()
		}
	}
	return nil
}
