package main

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// cluster is three replicas of every group of one library, with each
// group's leader known to the harness.
type cluster interface {
	// propose replicates data in group (1-based) and returns once the
	// group's leader has applied it.
	propose(ctx context.Context, group uint64, data []byte) error
	// applied is the most proposals any replica of group has applied.
	applied(group uint64) uint64
	close() error
}

// settings are the knobs both libraries get the same way.
type settings struct {
	Tick           time.Duration `json:"-"`
	TickMillis     int64         `json:"tick_ms"`
	ElectionTicks  int           `json:"election_ticks"`
	HeartbeatTicks int           `json:"heartbeat_ticks"`
	// SnapshotEntries and CompactKeep bound each log the way etcd's
	// raftexample does; with many groups no group reaches them in a run.
	SnapshotEntries uint64 `json:"snapshot_entries"`
	CompactKeep     uint64 `json:"compact_keep_entries"`
	Workers         int    `json:"embraft_workers"`
	DragonboatLogDB string `json:"dragonboat_logdb"`
	// DragonboatLogDBShards overrides the number of Pebble instances per
	// NodeHost (0: dragonboat's default, 16).
	DragonboatLogDBShards uint64 `json:"dragonboat_logdb_shards,omitempty"`
	Verbose               bool   `json:"-"`
}

// measurement is one library's figures for one configuration in one run.
type measurement struct {
	Proposals        int64   `json:"proposals"`
	Seconds          float64 `json:"seconds"`
	ProposalsPerSec  float64 `json:"proposals_per_sec"`
	P50Micros        float64 `json:"p50_us"`
	P99Micros        float64 `json:"p99_us"`
	CPUMicrosPerProp float64 `json:"cpu_us_per_proposal"`
	// Error is why the measurement failed (then the figures are zero and
	// the run has no ratio).
	Error string `json:"error,omitempty"`
}

// proposerGroup spreads proposers over groups: with fewer groups than
// proposers each proposer sticks to one group (an equal share each);
// with more, proposer p's i-th proposal goes to group p + i*proposers
// (mod groups), so every group gets proposals and no two proposers race
// for the same one.
func proposerGroup(p, i, proposers, groups int) uint64 {
	if groups <= proposers {
		return uint64(p%groups) + 1
	}
	return uint64((p+i*proposers)%groups) + 1
}

// keysPerProposer bounds the state machines' key space (see kvStore).
const keysPerProposer = 64

// measure keeps proposers proposals in flight against c for warmup, then
// counts what completes in the next dur. completed[g-1] accumulates the
// proposals acknowledged in group g, for the check after the run.
func measure(c cluster, groups, payload, proposers int, warmup, dur time.Duration, completed []atomic.Uint64) (measurement, error) {
	if payload < 8 {
		return measurement{}, fmt.Errorf("payload of %d bytes: the key alone takes 8", payload)
	}
	const (
		phaseWarmup = iota
		phaseMeasure
		phaseStop
	)
	var phase atomic.Int32
	var firstErr error
	var errOnce sync.Once
	fail := func(err error) {
		errOnce.Do(func() { firstErr = err })
		phase.Store(phaseStop)
	}
	ctx, cancel := context.WithTimeout(context.Background(), warmup+dur+2*time.Minute)
	defer cancel()
	latencies := make([][]time.Duration, proposers)
	counts := make([]int64, proposers)
	var wg sync.WaitGroup
	for p := 0; p < proposers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			lat := make([]time.Duration, 0, 4096)
			for i := 0; phase.Load() != phaseStop; i++ {
				// A fresh buffer each time: a library may hold on to the
				// proposal's bytes after it returns.
				data := make([]byte, payload)
				binary.LittleEndian.PutUint64(data, uint64(p)*keysPerProposer+uint64(i%keysPerProposer))
				for j := 8; j < payload; j++ {
					data[j] = byte(i)
				}
				g := proposerGroup(p, i, proposers, groups)
				before := phase.Load()
				t0 := time.Now()
				if err := c.propose(ctx, g, data); err != nil {
					fail(fmt.Errorf("group %d: %w", g, err))
					break
				}
				took := time.Since(t0)
				completed[g-1].Add(1)
				// Only proposals made and acknowledged inside the window
				// count; the ones straddling its edges roughly cancel out.
				if before == phaseMeasure && phase.Load() == phaseMeasure {
					lat = append(lat, took)
					counts[p]++
				}
			}
			latencies[p] = lat
		}(p)
	}
	time.Sleep(warmup)
	cpu0 := processCPU()
	t0 := time.Now()
	if phase.CompareAndSwap(phaseWarmup, phaseMeasure) {
		time.Sleep(dur)
	}
	elapsed := time.Since(t0)
	cpu := processCPU() - cpu0
	phase.Store(phaseStop)
	wg.Wait()
	if firstErr != nil {
		return measurement{}, firstErr
	}
	var all []time.Duration
	var n int64
	for p := range latencies {
		all = append(all, latencies[p]...)
		n += counts[p]
	}
	if n == 0 {
		return measurement{}, fmt.Errorf("no proposal completed in %v", dur)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	m := measurement{
		Proposals:        n,
		Seconds:          elapsed.Seconds(),
		ProposalsPerSec:  float64(n) / elapsed.Seconds(),
		P50Micros:        micros(percentile(all, 0.50)),
		P99Micros:        micros(percentile(all, 0.99)),
		CPUMicrosPerProp: micros(cpu) / float64(n),
	}
	return m, nil
}

// retryTransient calls try until it succeeds, fails for good, or a
// transient failure (no leader known, leadership moving, a busy group)
// has lasted transientLimit; it backs off from 1 ms to 20 ms between
// tries. Both libraries' proposals go through it.
func retryTransient(ctx context.Context, try func() (transient bool, err error)) error {
	const transientLimit = 30 * time.Second
	deadline := time.Now().Add(transientLimit)
	pause := time.Millisecond
	for {
		transient, err := try()
		if err == nil || !transient || ctx.Err() != nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(pause)
		pause = min(2*pause, 20*time.Millisecond)
	}
}

// checkApplied fails when a group's replicas applied fewer proposals than
// the harness saw acknowledged: an acknowledged proposal was lost.
func checkApplied(c cluster, completed []atomic.Uint64) error {
	for i := range completed {
		g := uint64(i) + 1
		if got, want := c.applied(g), completed[i].Load(); got < want {
			return fmt.Errorf("group %d: %d proposals acknowledged, at most %d applied on any replica", g, want, got)
		}
	}
	return nil
}

func percentile(sorted []time.Duration, q float64) time.Duration {
	i := int(q*float64(len(sorted))+0.5) - 1
	if i < 0 {
		i = 0
	}
	if i >= len(sorted) {
		i = len(sorted) - 1
	}
	return sorted[i]
}

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }

// processCPU is the process's user and system CPU time so far: only one
// library runs at a time, so the difference over a window is its cost,
// harness included (the same harness for both).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// freePorts reserves n distinct loopback ports by listening on them all
// at once, then frees them for the library to bind.
func freePorts(n int) ([]int, error) {
	ls := make([]net.Listener, 0, n)
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	ports := make([]int, 0, n)
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(timeout time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return err
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not done after %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
