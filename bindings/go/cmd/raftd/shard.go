package main

// The groups a node serves its keys from (docs/RAFTD.md "Shards"): one
// *embraft.Raft with -shards 1, groups 1 … N of one *embraft.Runtime
// otherwise. The handlers see only the shard interface and the table, so
// both modes run the same code.

import (
	"context"
	"fmt"
	"hash/fnv"

	embraft "github.com/embraft/embraft/bindings/go"
)

// maxShards is the largest -shards RAFTD.md allows.
const maxShards = 65536

// shard is one Raft group as the server uses it: a one-group node's
// *embraft.Raft or a sharded node's *embraft.Group, which have these
// methods with the same meaning.
type shard interface {
	Propose(ctx context.Context, data []byte) (uint64, error)
	ProposeConfChange(ctx context.Context, change embraft.ConfChange, node uint64) (uint64, error)
	ReadIndex(ctx context.Context) (uint64, error)
	TransferLeader(ctx context.Context, to uint64) error
	WaitLeader(ctx context.Context) (uint64, error)
	State() embraft.State
	Applied() uint64
	Status() (embraft.Status, error)
	Metrics() (embraft.Metrics, error)
	Snapshot(ctx context.Context) (uint64, error)
}

var _ shard = (*embraft.Raft)(nil)

// group is one of the node's groups with its key/value state.
type group struct {
	id    uint64
	raft  shard
	store *store
}

// shardTable holds groups 1 … N, group g at index g-1.
type shardTable []*group

// group returns group id, or nil when the node has no such group.
func (t shardTable) group(id uint64) *group {
	if id == 0 || id > uint64(len(t)) {
		return nil
	}
	return t[id-1]
}

// forKey returns the group that holds key.
func (t shardTable) forKey(key string) *group { return t[shardOf(key, len(t))-1] }

// sharded tells whether the node runs a runtime of several groups rather
// than the one-group server.
func (t shardTable) sharded() bool { return len(t) > 1 }

// shardOf is the group of key among n: 1 + FNV-1a-64(key) mod n, the
// same in every raftd.
func shardOf(key string, n int) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	return 1 + h.Sum64()%uint64(n)
}

// checkShards refuses a group count RAFTD.md does not allow; where says
// where the count came from.
func checkShards(n int, where string) error {
	if n < 1 || n > maxShards {
		return fmt.Errorf("%s: %d shards (allowed: 1 to %d)", where, n, maxShards)
	}
	return nil
}
