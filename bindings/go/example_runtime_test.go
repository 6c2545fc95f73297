package embraft_test

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"log"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

// shard is the state machine of one group: the keys that hash to it.
// Apply runs on the group's apply goroutine while Get runs on the
// caller's, hence the lock.
type shard struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *shard) Apply(e embraft.Entry) {
	k, v, _ := strings.Cut(string(e.Data), "=")
	s.mu.Lock()
	s.m[k] = v
	s.mu.Unlock()
}

func (s *shard) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.NewEncoder(w).Encode(s.m)
}

func (s *shard) Restore(r io.Reader) error {
	m := map[string]string{}
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return err
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

func (s *shard) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok
}

// groupOf is the group holding key among n (docs/RAFTD.md, "Shards"):
// 1 + FNV-1a-64(key) mod n.
func groupOf(key string, n uint64) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return 1 + h.Sum64()%n
}

// shardedKV is a key/value store split into groups of one runtime.
type shardedKV struct {
	rt     *embraft.Runtime
	shards map[uint64]*shard
}

// Put writes through the key's group; it returns once the write is
// committed and applied here. On a runtime that does not lead the group
// it fails with ErrNotLeader: send the request to Group.State().Leader.
func (kv *shardedKV) Put(ctx context.Context, key, value string) error {
	g := kv.rt.Group(groupOf(key, uint64(len(kv.shards))))
	_, err := g.Propose(ctx, []byte(key+"="+value))
	return err
}

// Get is a linearizable read of the key's group.
func (kv *shardedKV) Get(ctx context.Context, key string) (string, bool, error) {
	id := groupOf(key, uint64(len(kv.shards)))
	if _, err := kv.rt.Group(id).ReadIndex(ctx); err != nil {
		return "", false, err
	}
	v, ok := kv.shards[id].get(key)
	return v, ok, nil
}

// A sharded key/value store: 8 groups on one runtime. In a cluster each
// runtime also gets a GroupStreamTransport (see docs/GO.md) and every
// group the same Members.
func Example_shardedKV() {
	dir, err := os.MkdirTemp("", "embraft-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	rt, err := embraft.StartRuntime(embraft.RuntimeOptions{
		Config:       embraft.Config{ID: 1, DataDir: dir, SnapshotEntries: 10000},
		TickInterval: 10 * time.Millisecond,
	})
	if err != nil {
		log.Fatal(err)
	}
	defer rt.Close()

	kv := &shardedKV{rt: rt, shards: map[uint64]*shard{}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for id := uint64(1); id <= 8; id++ {
		kv.shards[id] = &shard{m: map[string]string{}}
		// A restart finds the groups in the WAL (rt.StoredGroups) and
		// ignores Members.
		g, err := rt.StartGroup(id, embraft.GroupOptions{
			Members: []uint64{1}, StateMachine: kv.shards[id], AutoSnapshot: true,
		})
		if err != nil {
			log.Fatal(err)
		}
		if _, err := g.WaitLeader(ctx); err != nil {
			log.Fatal(err)
		}
	}
	for _, key := range []string{"foo", "a"} {
		if err := kv.Put(ctx, key, "value of "+key); err != nil {
			log.Fatal(err)
		}
	}
	v, _, err := kv.Get(ctx, "foo")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(groupOf("foo", 8), groupOf("a", 8), v)
	// Output: 8 5 value of foo
}

// The test vectors of docs/RAFTD.md, "Shards".
func TestShardHashVectors(t *testing.T) {
	for key, want := range map[string]uint64{"": 0xcbf29ce484222325, "a": 0xaf63dc4c8601ec8c, "foo": 0xdcb27518fed9d577} {
		h := fnv.New64a()
		h.Write([]byte(key))
		if got := h.Sum64(); got != want {
			t.Errorf("FNV-1a-64(%q) = %#x, want %#x", key, got, want)
		}
	}
	if groupOf("foo", 8) != 8 || groupOf("a", 8) != 5 {
		t.Errorf("foo in group %d, a in group %d; want 8 and 5", groupOf("foo", 8), groupOf("a", 8))
	}
}
