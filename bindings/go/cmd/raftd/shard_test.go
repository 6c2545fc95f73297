package main

import (
	"encoding/json"
	"hash/fnv"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"strings"
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

// TestNodeFileShards: node.json's "shards" is absent for one group (as
// before sharding existed) and N otherwise; a restart takes it from
// there whatever -shards says, and a count out of 1 … 65536 or not a
// whole number is refused with a message naming the file.
func TestNodeFileShards(t *testing.T) {
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	write := func(dir, text string) {
		t.Helper()
		if err := os.WriteFile(filepath.Join(dir, "node.json"), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(dir string) map[string]any {
		t.Helper()
		var out map[string]any
		data, err := os.ReadFile(filepath.Join(dir, "node.json"))
		if err == nil {
			err = json.Unmarshal(data, &out)
		}
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	for _, c := range []struct {
		flag int
		want map[string]any
	}{
		{1, map[string]any{}},
		{8, map[string]any{"shards": 8.0}},
	} {
		dir := t.TempDir()
		ident, err := identify(config{dataDir: dir, shards: c.flag, logger: quiet})
		if err != nil || !ident.founding || ident.shards != c.flag {
			t.Fatalf("founding with -shards %d: %+v, %v", c.flag, ident, err)
		}
		file := read(dir)
		delete(file, "id")
		delete(file, "cluster_id")
		if !maps.Equal(file, c.want) {
			t.Fatalf("-shards %d: node.json %v, want %v besides the ids", c.flag, file, c.want)
		}
		// A restart ignores -shards.
		ident, err = identify(config{dataDir: dir, shards: 3, logger: quiet})
		if err != nil || ident.founding || ident.joined || ident.shards != c.flag {
			t.Fatalf("restart of a %d-group node with -shards 3: %+v, %v", c.flag, ident, err)
		}
	}
	for text, message := range map[string]string{
		`{"id": "5", "cluster_id": "7", "shards": 0}`:     "the cluster's shard count: 0 shards (allowed: 1 to 65536)",
		`{"id": "5", "cluster_id": "7", "shards": 70000}`: "the cluster's shard count: 70000 shards",
		`{"id": "5", "cluster_id": "7", "shards": "8"}`:   "cannot unmarshal string",
		`{"id": "5", "cluster_id": "7", "shards": 2.5}`:   "cannot unmarshal number 2.5",
		`{"id": "five", "cluster_id": "7"}`:               "invalid syntax",
	} {
		dir := t.TempDir()
		write(dir, text)
		_, err := identify(config{dataDir: dir, shards: 1, logger: quiet})
		if err == nil || !strings.Contains(err.Error(), message) || !strings.Contains(err.Error(), "node.json") {
			t.Fatalf("node.json %s: %v, want an error saying %q", text, err, message)
		}
		if got, _ := os.ReadFile(filepath.Join(dir, "node.json")); string(got) != text {
			t.Fatalf("node.json %s rewritten as %s", text, got)
		}
	}
}

// TestMemberRequests: /join and /leave bodies name a node id and, on a
// sharded node, maybe one of its groups; anything else is refused with
// a reason (the handlers answer 400 with it).
func TestMemberRequests(t *testing.T) {
	s := &server{}
	for id := uint64(1); id <= 8; id++ {
		s.groups = append(s.groups, &group{id: id})
	}
	for body, want := range map[string]uint64{
		`{"id": "12", "addr": "h:1"}`:             0,
		`{"id": "12", "addr": "h:1", "group": 8}`: 8,
		`{"id": "12", "group": 1}`:                1,
		`{"id": "12", "group": 0}`:                0,
	} {
		_, id, g, err := s.parseMember([]byte(body))
		if err != nil || id != 12 || (g == nil) != (want == 0) || g != nil && g.id != want {
			t.Fatalf("%s: id %d, group %v, %v", body, id, g, err)
		}
	}
	for body, reason := range map[string]string{
		`{"id": "12", "group": 9}`:   "no group 9 (this cluster has 8)",
		`{"id": "12", "group": -1}`:  "cannot unmarshal number -1",
		`{"id": "12", "group": "2"}`: "cannot unmarshal string",
		`{"id": "0"}`:                "not a node id",
		`{"id": 12}`:                 "cannot unmarshal number",
		`{"addr": "h:1"}`:            "not a node id",
		`not json`:                   "invalid character",
	} {
		if _, _, _, err := s.parseMember([]byte(body)); err == nil || !strings.Contains(err.Error(), reason) {
			t.Fatalf("%s: %v, want an error saying %q", body, err, reason)
		}
	}
}
