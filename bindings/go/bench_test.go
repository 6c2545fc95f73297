package embraft

// go test -run '^$' -bench Raft -benchtime 3s .
//
// embraft through cgo against etcd raft (go.etcd.io/raft/v3), each as a
// three-node cluster in this process with an in-memory transport that
// carries encoded messages (etcd raft's are marshalled for it); every
// entry is applied on every node, and a proposal counts as done when its
// proposer's node (the leader) has applied it. Durability is equal on
// both sides: no disk sync (etcd raft's MemoryStorage; embraft with
// SyncNever), or a sync of every write before it counts (etcd raft with a
// preallocated log file, written and fdatasync-ed per Ready before its
// messages leave; embraft with SyncAlways).

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	etcdraft "go.etcd.io/raft/v3"
	"go.etcd.io/raft/v3/raftpb"
)

// benchCluster is a three-node cluster of either implementation.
type benchCluster interface {
	// propose replicates data and returns once the leader applied it.
	propose(ctx context.Context, data []byte) error
	close()
}

// Both libraries compact their logs the way etcd's raftexample does: a
// snapshot every benchSnapshotEntries applied entries, keeping the last
// benchCompactKeep entries for followers that lag a little. Without it
// both would hold every proposal of the run in memory, and the later
// cases would measure the heap's growth more than the consensus.
const (
	benchSnapshotEntries = 10000
	benchCompactKeep     = 1024
)

var (
	benchSizes     = []int{16, 1024}
	benchProposers = []int{1, 16, 256}
)

func BenchmarkRaft(b *testing.B) {
	for _, durable := range []bool{false, true} {
		sync := map[bool]string{false: "nosync", true: "sync"}[durable]
		// Both clusters run side by side and take turns per
		// configuration, so that each ratio compares runs a few seconds
		// apart, under the same disk and machine weather.
		embraftDir, etcdDir := benchDir(b), benchDir(b)
		dirs := []string{embraftDir, etcdDir}
		clusters := map[string]benchCluster{
			"embraft": newEmbraftBench(b, durable, embraftDir),
			"etcd":    newEtcdBench(b, durable, etcdDir),
		}
		for _, size := range benchSizes {
			for _, proposers := range benchProposers {
				for _, system := range []string{"embraft", "etcd"} {
					name := fmt.Sprintf("%s/%s/%dB/p%d", sync, system, size, proposers)
					b.Run(name, func(b *testing.B) {
						runProposers(b, clusters[system], size, proposers)
					})
				}
			}
		}
		for _, c := range clusters {
			c.close()
		}
		// The next durability's runs should not share the disk with the
		// write-back of this one's files: deleted, their dirty pages are
		// dropped instead.
		for _, dir := range dirs {
			os.RemoveAll(dir)
		}
	}
}

// runProposers spreads b.N proposals over concurrent proposers and reports
// throughput and the 99th percentile commit latency.
func runProposers(b *testing.B, c benchCluster, size, proposers int) {
	var next atomic.Int64
	latencies := make([][]time.Duration, proposers)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	b.ResetTimer()
	cpuStart := processCPU()
	start := time.Now()
	var wg sync.WaitGroup
	for p := 0; p < proposers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			data := make([]byte, size)
			for next.Add(1) <= int64(b.N) {
				t0 := time.Now()
				if err := c.propose(ctx, data); err != nil {
					b.Error(err)
					return
				}
				latencies[p] = append(latencies[p], time.Since(t0))
			}
		}(p)
	}
	wg.Wait()
	elapsed := time.Since(start)
	cpu := processCPU() - cpuStart
	b.StopTimer()
	var all []time.Duration
	for _, l := range latencies {
		all = append(all, l...)
	}
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	if len(all) > 0 {
		b.ReportMetric(float64(len(all))/elapsed.Seconds(), "proposals/s")
		b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(cpu.Microseconds())/float64(len(all)), "cpu-us/op")
	}
}

// processCPU is the CPU time (user and system) the process has used: per
// proposal, the cost of one on this machine whatever else runs on it, a
// steadier figure than throughput on a shared machine. The process runs
// only the cluster under test (the other one is idle), plus the Go
// runtime's own work (the garbage collector's included).
func processCPU() time.Duration {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// countingSM applies every entry by counting it.
type countingSM struct{ applied atomic.Int64 }

func (s *countingSM) Apply(Entry)              { s.applied.Add(1) }
func (s *countingSM) Snapshot(io.Writer) error { return nil }
func (s *countingSM) Restore(io.Reader) error  { return nil }

// queuedNetwork is the in-memory network of embraft's cluster: each node
// has an inbox, drained by a goroutine of its own that steps what arrives,
// the same shape as etcd raft's side of the benchmark (and as a socket
// transport, whose reader steps what it reads). A full inbox drops, like
// a lossy network. The receiving goroutine, not the sender, runs an
// inline node's work for the message, so the three nodes' work spreads
// over the cores as etcd raft's goroutines do.
type queuedNetwork struct {
	inboxes map[uint64]chan []byte
}

type queuedEndpoint struct {
	net  *queuedNetwork
	id   uint64
	stop chan struct{}
	done sync.WaitGroup
}

func (e *queuedEndpoint) Start(h Host) error {
	inbox := e.net.inboxes[e.id]
	e.done.Add(1)
	go func() {
		defer e.done.Done()
		for {
			select {
			case msg := <-inbox:
				h.Step(msg)
			case <-e.stop:
				return
			}
		}
	}()
	return nil
}

func (e *queuedEndpoint) Close() error {
	close(e.stop)
	e.done.Wait()
	return nil
}

func (e *queuedEndpoint) Send(to uint64, msg []byte) {
	select {
	case e.net.inboxes[to] <- msg:
	default: // lost, as on a network; raft retransmits
	}
}

// benchInline chooses embraft's threading: inline nodes (Config.Inline),
// whose input calls do the node's work on the calling goroutine, and
// whose one thread (with SyncAlways) waits for the WAL syncs; no thread
// wake-up per hand-off, which is most of a threaded node's cost here.
// EMBRAFT_BENCH_THREADING=node runs threaded nodes instead (a driver and a
// persistence thread each).
func benchInline() bool {
	return os.Getenv("EMBRAFT_BENCH_THREADING") != "node"
}

// benchWALWrite chooses how embraft writes its WAL: the library's default,
// or EMBRAFT_BENCH_WAL_WRITE=mmap|pwrite to compare the two.
func benchWALWrite() WALWriteMethod {
	switch os.Getenv("EMBRAFT_BENCH_WAL_WRITE") {
	case "mmap":
		return WALWriteMmap
	case "pwrite":
		return WALWritePwrite
	}
	return WALWriteDefault
}

type embraftBench struct {
	leader *Raft
	nodes  []*Raft
}

func newEmbraftBench(b *testing.B, durable bool, dir string) *embraftBench {
	ids := []uint64{1, 2, 3}
	mode := SyncNever
	if durable {
		mode = SyncAlways
	}
	network := &queuedNetwork{inboxes: map[uint64]chan []byte{}}
	for _, id := range ids {
		network.inboxes[id] = make(chan []byte, 65536)
	}
	c := &embraftBench{}
	for _, id := range ids {
		r, err := Start(Options{
			Config: Config{ID: id, Peers: ids, DataDir: filepath.Join(dir, fmt.Sprint(id)), Sync: mode,
				WALWrite: benchWALWrite(), InputQueueCapacity: 65536, MaxInflightMsgs: 256, Inline: benchInline(),
				SnapshotEntries: benchSnapshotEntries, CompactKeepEntries: benchCompactKeep},
			StateMachine: &countingSM{}, Transport: &queuedEndpoint{net: network, id: id, stop: make(chan struct{})},
			TickInterval: 100 * time.Millisecond, AutoSnapshot: true,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
		})
		if err != nil {
			b.Fatal(err)
		}
		c.nodes = append(c.nodes, r)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	leader, err := c.nodes[0].WaitLeader(ctx)
	if err != nil {
		b.Fatal(err)
	}
	c.leader = c.nodes[leader-1]
	return c
}

// benchDir is a fresh directory on the same file system for both
// implementations (EMBRAFT_BENCH_DIR, default the system's temporary one).
func benchDir(b *testing.B) string {
	dir, err := os.MkdirTemp(os.Getenv("EMBRAFT_BENCH_DIR"), "embraft-bench")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (c *embraftBench) propose(ctx context.Context, data []byte) error {
	_, err := c.leader.Propose(ctx, data)
	return err
}

func (c *embraftBench) close() {
	for _, r := range c.nodes {
		r.Close()
	}
}

// etcdBench drives etcd raft's Node the way its documentation shows: per
// Ready, persist (optionally to a synced file), send, apply, Advance.
type etcdBench struct {
	nodes   []*etcdNode
	nextID  atomic.Uint64
	stop    chan struct{}
	wg      sync.WaitGroup
	waitMu  sync.Mutex
	waiters map[uint64]chan struct{}
}

type etcdNode struct {
	id      uint64
	node    etcdraft.Node
	storage *etcdraft.MemoryStorage
	inbox   chan []byte
	log     *os.File // nil without sync
	logAt   int64
	applied atomic.Int64
}

// etcdLogSize is the preallocated size of etcd raft's synced log file.
const etcdLogSize = 64 << 20

func newEtcdBench(b *testing.B, durable bool, dir string) *etcdBench {
	c := &etcdBench{stop: make(chan struct{}), waiters: map[uint64]chan struct{}{}}
	peers := []etcdraft.Peer{{ID: 1}, {ID: 2}, {ID: 3}}
	for _, p := range peers {
		storage := etcdraft.NewMemoryStorage()
		n := &etcdNode{id: p.ID, storage: storage, inbox: make(chan []byte, 65536)}
		if durable {
			f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%d.log", p.ID)))
			if err != nil {
				b.Fatal(err)
			}
			// Preallocated, like embraft's segments (and etcd's own WAL), so
			// that a sync is an fdatasync of data, not a file-size update.
			if err := syscall.Fallocate(int(f.Fd()), 0, 0, etcdLogSize); err != nil {
				b.Fatal(err)
			}
			n.log = f
		}
		n.node = etcdraft.StartNode(&etcdraft.Config{
			ID: p.ID, ElectionTick: 10, HeartbeatTick: 1, Storage: storage,
			MaxSizePerMsg: 1 << 20, MaxInflightMsgs: 256, CheckQuorum: true, PreVote: true,
			Logger: &etcdraft.DefaultLogger{Logger: log.New(io.Discard, "", 0)},
		}, peers)
		c.nodes = append(c.nodes, n)
	}
	for _, n := range c.nodes {
		c.wg.Add(2)
		go c.run(n)
		go c.receive(n)
	}
	// Node 1 campaigns (again, until it wins: the bootstrap membership
	// must be applied first) so that the leader is known.
	deadline := time.Now().Add(30 * time.Second)
	for c.nodes[0].node.Status().RaftState != etcdraft.StateLeader {
		if time.Now().After(deadline) {
			b.Fatal("etcd raft elected no leader")
		}
		c.nodes[0].node.Campaign(context.Background())
		time.Sleep(200 * time.Millisecond)
	}
	return c
}

func (c *etcdBench) receive(n *etcdNode) {
	defer c.wg.Done()
	for {
		select {
		case data := <-n.inbox:
			var m raftpb.Message
			if m.Unmarshal(data) == nil {
				n.node.Step(context.Background(), m)
			}
		case <-c.stop:
			return
		}
	}
}

func (c *etcdBench) run(n *etcdNode) {
	defer c.wg.Done()
	ticker := time.NewTicker(100 * time.Millisecond)
	defer ticker.Stop()
	var buf []byte
	var prev raftpb.HardState
	var confState raftpb.ConfState
	var applied, snapshotAt uint64
	leader := false
	for {
		select {
		case <-ticker.C:
			n.node.Tick()
		case rd := <-n.node.Ready():
			if rd.SoftState != nil {
				leader = rd.SoftState.RaftState == etcdraft.StateLeader
			}
			// As embraft does (Raft thesis 10.2.1; etcd raft's README allows
			// it too): a leader sends while it persists, a follower only after.
			if leader {
				c.send(rd.Messages)
			}
			if !etcdraft.IsEmptyHardState(rd.HardState) {
				n.storage.SetHardState(rd.HardState)
			}
			n.storage.Append(rd.Entries)
			if n.log != nil {
				n.persist(rd, &prev, &buf)
			}
			if !leader {
				c.send(rd.Messages)
			}
			for _, e := range rd.CommittedEntries {
				applied = e.Index
				switch e.Type {
				case raftpb.EntryNormal:
					n.applied.Add(1)
					if len(e.Data) >= 8 && n.id == 1 {
						c.complete(binary.LittleEndian.Uint64(e.Data))
					}
				case raftpb.EntryConfChange:
					var cc raftpb.ConfChange
					cc.Unmarshal(e.Data)
					confState = *n.node.ApplyConfChange(cc)
				}
			}
			if applied-snapshotAt >= benchSnapshotEntries {
				n.compact(applied, &confState)
				snapshotAt = applied
			}
			n.node.Advance()
		case <-c.stop:
			return
		}
	}
}

// compact takes a snapshot at applied (the counting state machine has no
// state to put in it) and drops the entries before it but the last
// benchCompactKeep, as raftexample's maybeTriggerSnapshot does.
// With sync, the snapshot is written to a file and synced first, as
// raftexample's snapshotter does, so that both libraries pay for a
// durable snapshot.
func (n *etcdNode) compact(applied uint64, cs *raftpb.ConfState) {
	snap, err := n.storage.CreateSnapshot(applied, cs, nil)
	if err != nil {
		return
	}
	if n.log != nil {
		data, _ := snap.Marshal()
		path := filepath.Join(filepath.Dir(n.log.Name()), fmt.Sprintf("%d.snap", n.id))
		if f, err := os.Create(path); err == nil {
			f.Write(data)
			f.Sync()
			f.Close()
		}
	}
	if applied > benchCompactKeep {
		n.storage.Compact(applied - benchCompactKeep)
	}
}

func (c *etcdBench) send(msgs []raftpb.Message) {
	for _, m := range msgs {
		c.nodes[m.To-1].deliver(m)
	}
}

// persist appends the batch's entries and hard state to the log file and
// syncs it when etcd's server would: a commit index that moved alone
// needs no sync (Raft recovers it).
func (n *etcdNode) persist(rd etcdraft.Ready, prev *raftpb.HardState, buf *[]byte) {
	hs := rd.HardState
	if etcdraft.IsEmptyHardState(hs) {
		if len(rd.Entries) == 0 {
			return
		}
		hs = *prev
	}
	b := (*buf)[:0]
	for _, e := range rd.Entries {
		b = binary.LittleEndian.AppendUint64(b, e.Index)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(e.Data)))
		b = append(b, e.Data...)
	}
	hsBytes, _ := hs.Marshal()
	b = append(b, hsBytes...)
	if n.logAt+int64(len(b)) > etcdLogSize {
		n.logAt = 0 // a ring: the benchmark never reads it back
	}
	n.log.WriteAt(b, n.logAt)
	n.logAt += int64(len(b))
	if etcdraft.MustSync(hs, *prev, len(rd.Entries)) {
		syscall.Fdatasync(int(n.log.Fd()))
	}
	*prev = hs
	*buf = b
}

// deliver carries a message as bytes, as any real transport would (and as
// embraft's messages always travel), so both sides pay for encoding.
func (n *etcdNode) deliver(m raftpb.Message) {
	data, err := m.Marshal()
	if err != nil {
		return
	}
	select {
	case n.inbox <- data:
	default: // lost, as on a network; raft retransmits
	}
}

func (c *etcdBench) complete(id uint64) {
	c.waitMu.Lock()
	ch := c.waiters[id]
	delete(c.waiters, id)
	c.waitMu.Unlock()
	if ch != nil {
		close(ch)
	}
}

// propose tags the payload with a unique id in its first 8 bytes so the
// leader's apply loop can complete the waiter.
func (c *etcdBench) propose(ctx context.Context, data []byte) error {
	id := c.nextID.Add(1)
	payload := make([]byte, max(len(data), 8))
	copy(payload, data)
	binary.LittleEndian.PutUint64(payload, id)
	done := make(chan struct{})
	c.waitMu.Lock()
	c.waiters[id] = done
	c.waitMu.Unlock()
	if err := c.nodes[0].node.Propose(ctx, payload); err != nil {
		return err
	}
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (c *etcdBench) close() {
	close(c.stop)
	for _, n := range c.nodes {
		n.node.Stop()
	}
	c.wg.Wait()
	for _, n := range c.nodes {
		if n.log != nil {
			n.log.Close()
		}
	}
}
