package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestProposerGroupSpreadsEvenly(t *testing.T) {
	for _, groups := range []int{1, 64, 1024} {
		const proposers, rounds = 256, 16
		hits := make([]int, groups)
		for p := 0; p < proposers; p++ {
			seen := map[uint64]bool{}
			for i := 0; i < rounds; i++ {
				g := proposerGroup(p, i, proposers, groups)
				if g < 1 || g > uint64(groups) {
					t.Fatalf("%d groups: proposer %d got group %d", groups, p, g)
				}
				seen[g] = true
				hits[g-1]++
			}
			// With few groups a proposer stays on one; with many it
			// moves on every proposal.
			if want := min(rounds, max(1, groups/proposers)); len(seen) != want {
				t.Errorf("%d groups: proposer %d used %d groups, want %d", groups, p, len(seen), want)
			}
		}
		for g, n := range hits {
			if n != proposers*rounds/groups {
				t.Fatalf("%d groups: group %d got %d proposals, want %d", groups, g+1, n, proposers*rounds/groups)
			}
		}
	}
}

func TestKVStoreSnapshotRoundTrip(t *testing.T) {
	s := newKVStore()
	for i := 0; i < 100; i++ {
		data := make([]byte, 9+i%5)
		binary.LittleEndian.PutUint64(data, uint64(i%7))
		data[len(data)-1] = byte(i)
		if err := s.apply(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.apply([]byte{1, 2, 3}); err == nil {
		t.Fatal("a proposal shorter than its key was applied")
	}
	var buf bytes.Buffer
	if err := s.save(&buf); err != nil {
		t.Fatal(err)
	}
	r := newKVStore()
	if err := r.load(bytes.NewReader(buf.Bytes())); err != nil {
		t.Fatal(err)
	}
	if r.applied.Load() != 100 || len(r.m) != 7 {
		t.Fatalf("restored %d applied, %d keys; want 100 and 7", r.applied.Load(), len(r.m))
	}
	for k, v := range s.m {
		if !bytes.Equal(r.m[k], v) {
			t.Fatalf("key %d: %v restored as %v", k, v, r.m[k])
		}
	}
	if err := newKVStore().load(bytes.NewReader(buf.Bytes()[:buf.Len()-1])); err == nil {
		t.Fatal("a truncated snapshot loaded")
	}
}

// fakeCluster applies on propose, after a short wait, and can lose
// proposals: the harness must notice.
type fakeCluster struct {
	mu     sync.Mutex
	stores []*kvStore
	lose   bool
}

func (f *fakeCluster) propose(_ context.Context, g uint64, data []byte) error {
	time.Sleep(100 * time.Microsecond)
	if f.lose {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.stores[g-1].apply(data)
}

func (f *fakeCluster) applied(g uint64) uint64 { return f.stores[g-1].applied.Load() }
func (f *fakeCluster) close() error            { return nil }

func newFake(groups int) *fakeCluster {
	f := &fakeCluster{}
	for i := 0; i < groups; i++ {
		f.stores = append(f.stores, newKVStore())
	}
	return f
}

func TestMeasureCountsAndChecks(t *testing.T) {
	const groups = 8
	f := newFake(groups)
	completed := make([]atomic.Uint64, groups)
	m, err := measure(f, groups, 16, 4, 50*time.Millisecond, 200*time.Millisecond, completed)
	if err != nil {
		t.Fatal(err)
	}
	if m.Proposals == 0 || m.ProposalsPerSec <= 0 || m.P50Micros < 100 || m.P99Micros < m.P50Micros {
		t.Fatalf("implausible figures: %+v", m)
	}
	var total uint64
	for i := range completed {
		total += completed[i].Load()
	}
	if total < uint64(m.Proposals) {
		t.Fatalf("%d acknowledged in all, %d counted in the window", total, m.Proposals)
	}
	if err := checkApplied(f, completed); err != nil {
		t.Fatal(err)
	}
	f.lose = true
	if _, err := measure(f, groups, 16, 4, 0, 50*time.Millisecond, completed); err != nil {
		t.Fatal(err)
	}
	if err := checkApplied(f, completed); err == nil || !strings.Contains(err.Error(), "acknowledged") {
		t.Fatalf("lost proposals went unnoticed: %v", err)
	}
}

func TestMedianAndPercentile(t *testing.T) {
	if got := median([]float64{3, 1, 2}); got != 2 {
		t.Errorf("median of 3, 1, 2 = %v", got)
	}
	if got := median([]float64{4, 1, 2, 3}); got != 2.5 {
		t.Errorf("median of 4, 1, 2, 3 = %v", got)
	}
	sorted := make([]time.Duration, 100)
	for i := range sorted {
		sorted[i] = time.Duration(i+1) * time.Millisecond
	}
	if p := percentile(sorted, 0.99); p != 99*time.Millisecond {
		t.Errorf("p99 of 1..100 ms = %v", p)
	}
	if p := percentile(sorted, 0.50); p != 50*time.Millisecond {
		t.Errorf("p50 of 1..100 ms = %v", p)
	}
}
