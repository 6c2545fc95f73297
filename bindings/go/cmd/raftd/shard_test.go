package main

import (
	"hash/fnv"
	"testing"
)

// TestShardOfFollowsTheDocVectors pins the key → group mapping of
// docs/RAFTD.md "Shards", which every raftd must compute alike.
func TestShardOfFollowsTheDocVectors(t *testing.T) {
	for key, want := range map[string]uint64{"": 0xcbf29ce484222325, "a": 0xaf63dc4c8601ec8c, "foo": 0xdcb27518fed9d577} {
		h := fnv.New64a()
		h.Write([]byte(key))
		if got := h.Sum64(); got != want {
			t.Fatalf("FNV-1a-64(%q) = %#x, want %#x", key, got, want)
		}
	}
	for _, c := range []struct {
		key  string
		n    int
		want uint64
	}{
		{"foo", 8, 8}, {"a", 8, 5},
		{"foo", 1, 1}, {"a", 1, 1},
		// 0xdcb27518fed9d577 mod 3 = 1, 0xaf63dc4c8601ec8c mod 65536 = 0xec8c.
		{"foo", 3, 2}, {"a", maxShards, 0xec8c + 1},
	} {
		if got := shardOf(c.key, c.n); got != c.want {
			t.Errorf("shardOf(%q, %d) = %d, want %d", c.key, c.n, got, c.want)
		}
	}
}

func TestShardTableRoutesKeysAndRefusesOtherGroups(t *testing.T) {
	table := shardTable{}
	for id := uint64(1); id <= 8; id++ {
		table = append(table, &group{id: id})
	}
	if g := table.forKey("foo"); g.id != 8 {
		t.Fatalf("foo in group %d", g.id)
	}
	if g := table.forKey("a"); g.id != 5 {
		t.Fatalf("a in group %d", g.id)
	}
	for _, id := range []uint64{0, 9, 1 << 63} {
		if table.group(id) != nil {
			t.Fatalf("group %d of 8 exists", id)
		}
	}
	if table.group(3).id != 3 || !table.sharded() || table[:1].sharded() {
		t.Fatal("table lookups")
	}
	for _, n := range []int{0, -1, maxShards + 1} {
		if checkShards(n, "-shards") == nil {
			t.Fatalf("%d shards accepted", n)
		}
	}
	if checkShards(1, "-shards") != nil || checkShards(maxShards, "-shards") != nil {
		t.Fatal("1 and 65536 shards refused")
	}
}
