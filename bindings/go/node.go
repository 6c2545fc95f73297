package embraft

/*
#include <stdlib.h>
#include <embraft.h>
*/
import "C"

import (
	"log/slog"
	"os"
	"runtime"
	"syscall"
	"unsafe"
)

// Role of a node.
type Role uint32

const (
	Follower     Role = C.EMBRAFT_ROLE_FOLLOWER
	PreCandidate Role = C.EMBRAFT_ROLE_PRE_CANDIDATE
	Candidate    Role = C.EMBRAFT_ROLE_CANDIDATE
	Leader       Role = C.EMBRAFT_ROLE_LEADER
)

func (r Role) String() string {
	switch r {
	case Follower:
		return "follower"
	case PreCandidate:
		return "pre-candidate"
	case Candidate:
		return "candidate"
	case Leader:
		return "leader"
	}
	return "unknown"
}

// EntryKind is the kind of a committed entry.
type EntryKind uint32

const (
	EntryNormal     EntryKind = C.EMBRAFT_ENTRY_NORMAL
	EntryNoop       EntryKind = C.EMBRAFT_ENTRY_NOOP
	EntryConfChange EntryKind = C.EMBRAFT_ENTRY_CONF_CHANGE
)

// ConfChange is a single membership change.
type ConfChange uint32

const (
	AddVoter       ConfChange = C.EMBRAFT_CONF_ADD_VOTER
	PromoteLearner ConfChange = C.EMBRAFT_CONF_PROMOTE_LEARNER
	AddLearner     ConfChange = C.EMBRAFT_CONF_ADD_LEARNER
	RemoveNode     ConfChange = C.EMBRAFT_CONF_REMOVE_NODE
)

// LogLevel selects which of the library's log lines reach the host.
type LogLevel uint32

const (
	LogOff   LogLevel = C.EMBRAFT_LOG_OFF
	LogInfo  LogLevel = C.EMBRAFT_LOG_INFO
	LogDebug LogLevel = C.EMBRAFT_LOG_DEBUG
	LogTrace LogLevel = C.EMBRAFT_LOG_TRACE
)

// SlogLevelTrace is the slog level the library's trace lines are logged at.
const SlogLevelTrace = slog.LevelDebug - 4

// SyncMode is the durability of the write-ahead log.
type SyncMode uint32

const (
	SyncAlways SyncMode = C.EMBRAFT_SYNC_ALWAYS
	// SyncNever is for tests and benchmarks: a crash can lose acknowledged
	// entries.
	SyncNever SyncMode = C.EMBRAFT_SYNC_NEVER
)

// WALWriteMethod is how the write-ahead log writes batches. Both are
// equally durable and write the same files, so a data directory can be
// reopened with either. The values are the binding's own, not the C
// constants, so that the zero value can mean "whatever the library
// defaults to" as every other zero field of Config does.
type WALWriteMethod uint32

const (
	// WALWriteDefault leaves the choice to the library (pwrite, see
	// docs/BENCHMARKS.md).
	WALWriteDefault WALWriteMethod = iota
	// WALWriteMmap copies batches into the segment's shared mapping and
	// syncs them with msync.
	WALWriteMmap
	// WALWritePwrite writes batches with pwrite and syncs them with
	// fdatasync, sparing the kernel the page faults and TLB shootdowns of
	// a written mapping; reads still go through the mapping.
	WALWritePwrite
)

// cValue is the method's EMBRAFT_WAL_WRITE_* constant; a value outside the
// constants above goes through unchanged for the library to refuse.
func (m WALWriteMethod) cValue() C.uint32_t {
	switch m {
	case WALWriteMmap:
		return C.EMBRAFT_WAL_WRITE_MMAP
	case WALWritePwrite:
		return C.EMBRAFT_WAL_WRITE_PWRITE
	}
	return C.uint32_t(m)
}

// Config configures a node. Zero values keep the library's defaults.
type Config struct {
	ID      uint64
	Peers   []uint64 // founding voters; empty for a node that joins later
	DataDir string

	ElectionTicks  uint32
	HeartbeatTicks uint32
	// DisablePreVote and DisableCheckQuorum turn off what the library enables
	// by default.
	DisablePreVote     bool
	DisableCheckQuorum bool
	LeaseReads         bool
	// QuiesceTicks is how many idle ticks pass before a leader and its
	// followers go quiet (no heartbeats, no election timers) until work
	// arrives; 0 never does.
	QuiesceTicks uint32
	Sync         SyncMode
	WALWrite     WALWriteMethod
	LogLevel     LogLevel
	// AppliedIndex is what the state machine has durably applied; committed
	// entries after it are delivered again on restart.
	AppliedIndex       uint64
	MaxEntryBytes      uint64
	MaxInflightMsgs    int
	InputQueueCapacity int
	// CompactKeepEntries is how many entries before a snapshot's index
	// stay in the log, so a follower lagging by less catches up without
	// a snapshot.
	CompactKeepEntries uint64
	SegmentSize        uint64
	RandomSeed         uint64
	// SnapshotEntries and SnapshotBytes make the node ask for a snapshot
	// (Ready.SnapshotWanted) after that many entries, or bytes of log,
	// since the last one; 0 never asks on that account.
	SnapshotEntries uint64
	SnapshotBytes   uint64
	// SnapshotChunkSize is the size of the snapshot chunks the library
	// streams to followers (default and maximum 1 MiB).
	SnapshotChunkSize uint64
	// Inline runs the node on its callers' threads
	// (EMBRAFT_THREADING_INLINE): each input call (Tick, Step, Propose,
	// AckApplied, ...) does the node's work, WAL write included, on the
	// calling goroutine's thread and returns with the resulting batch
	// ready to Poll. With SyncAlways the node's one thread waits for the
	// WAL syncs, and what waited for one (a follower's answer, a commit)
	// becomes ready after the call. It spares the OS thread wake-ups a
	// threaded node pays per hand-off.
	Inline bool
}

// configError reads the config handle's last error message.
func configError(op string, code C.embraft_status, cfg *C.embraft_config) error {
	var buf [512]C.char
	C.embraft_config_last_error(cfg, &buf[0], C.size_t(len(buf)), nil)
	return &CallError{Op: op, Code: Code(code), Message: C.GoString(&buf[0])}
}

// build turns the Go configuration into a C one, owned by the caller.
func (c *Config) build() (*C.embraft_config, error) {
	var cfg *C.embraft_config
	if code := C.embraft_config_new(&cfg); code != C.EMBRAFT_OK {
		return nil, &CallError{Op: "embraft_config_new", Code: Code(code)}
	}
	type setter struct {
		op   string
		skip bool
		set  func() C.embraft_status
	}
	setters := []setter{
		{"set_id", false, func() C.embraft_status { return C.embraft_config_set_id(cfg, C.uint64_t(c.ID)) }},
		{"set_peers", len(c.Peers) == 0, func() C.embraft_status {
			// A C copy: the array must not be Go memory kept by C, and the
			// call copies it anyway.
			ids := (*C.uint64_t)(C.malloc(C.size_t(8 * len(c.Peers))))
			defer C.free(unsafe.Pointer(ids))
			for i, id := range c.Peers {
				*(*C.uint64_t)(unsafe.Add(unsafe.Pointer(ids), 8*i)) = C.uint64_t(id)
			}
			return C.embraft_config_set_peers(cfg, ids, C.size_t(len(c.Peers)))
		}},
		{"set_data_dir", false, func() C.embraft_status {
			path := C.CString(c.DataDir)
			defer C.free(unsafe.Pointer(path))
			return C.embraft_config_set_data_dir(cfg, path)
		}},
		{"set_election_ticks", c.ElectionTicks == 0, func() C.embraft_status {
			return C.embraft_config_set_election_ticks(cfg, C.uint32_t(c.ElectionTicks))
		}},
		{"set_heartbeat_ticks", c.HeartbeatTicks == 0, func() C.embraft_status {
			return C.embraft_config_set_heartbeat_ticks(cfg, C.uint32_t(c.HeartbeatTicks))
		}},
		{"set_pre_vote", !c.DisablePreVote, func() C.embraft_status { return C.embraft_config_set_pre_vote(cfg, false) }},
		{"set_check_quorum", !c.DisableCheckQuorum, func() C.embraft_status { return C.embraft_config_set_check_quorum(cfg, false) }},
		{"set_lease_reads", !c.LeaseReads, func() C.embraft_status { return C.embraft_config_set_lease_reads(cfg, true) }},
		{"set_sync_mode", false, func() C.embraft_status { return C.embraft_config_set_sync_mode(cfg, C.uint32_t(c.Sync)) }},
		{"set_wal_write_method", c.WALWrite == WALWriteDefault, func() C.embraft_status {
			return C.embraft_config_set_wal_write_method(cfg, c.WALWrite.cValue())
		}},
		{"set_log_level", false, func() C.embraft_status { return C.embraft_config_set_log_level(cfg, C.uint32_t(c.LogLevel)) }},
		{"set_applied_index", false, func() C.embraft_status {
			return C.embraft_config_set_applied_index(cfg, C.uint64_t(c.AppliedIndex))
		}},
		{"set_max_entry_bytes", c.MaxEntryBytes == 0, func() C.embraft_status {
			return C.embraft_config_set_max_entry_bytes(cfg, C.uint64_t(c.MaxEntryBytes))
		}},
		{"set_max_inflight_msgs", c.MaxInflightMsgs == 0, func() C.embraft_status {
			return C.embraft_config_set_max_inflight_msgs(cfg, C.size_t(c.MaxInflightMsgs))
		}},
		{"set_input_queue_capacity", c.InputQueueCapacity == 0, func() C.embraft_status {
			return C.embraft_config_set_input_queue_capacity(cfg, C.size_t(c.InputQueueCapacity))
		}},
		{"set_quiesce_ticks", c.QuiesceTicks == 0, func() C.embraft_status {
			return C.embraft_config_set_quiesce_ticks(cfg, C.uint32_t(c.QuiesceTicks))
		}},
		{"set_compact_keep_entries", c.CompactKeepEntries == 0, func() C.embraft_status {
			return C.embraft_config_set_compact_keep_entries(cfg, C.uint64_t(c.CompactKeepEntries))
		}},
		{"set_segment_size", c.SegmentSize == 0, func() C.embraft_status {
			return C.embraft_config_set_segment_size(cfg, C.uint64_t(c.SegmentSize))
		}},
		{"set_snapshot_entries", c.SnapshotEntries == 0, func() C.embraft_status {
			return C.embraft_config_set_snapshot_entries(cfg, C.uint64_t(c.SnapshotEntries))
		}},
		{"set_snapshot_bytes", c.SnapshotBytes == 0, func() C.embraft_status {
			return C.embraft_config_set_snapshot_bytes(cfg, C.uint64_t(c.SnapshotBytes))
		}},
		{"set_snapshot_chunk_size", c.SnapshotChunkSize == 0, func() C.embraft_status {
			return C.embraft_config_set_snapshot_chunk_size(cfg, C.uint64_t(c.SnapshotChunkSize))
		}},
		{"set_threading", !c.Inline, func() C.embraft_status {
			return C.embraft_config_set_threading(cfg, C.EMBRAFT_THREADING_INLINE)
		}},
		{"set_random_seed", c.RandomSeed == 0, func() C.embraft_status {
			return C.embraft_config_set_random_seed(cfg, C.uint64_t(c.RandomSeed))
		}},
	}
	for _, s := range setters {
		if s.skip {
			continue
		}
		if code := s.set(); code != C.EMBRAFT_OK {
			err := configError("embraft_config_"+s.op, code, cfg)
			C.embraft_config_free(cfg)
			return nil, err
		}
	}
	return cfg, nil
}

// Node is a handle on one embraft node: the thin, complete wrapper of the
// C API. Most hosts use Raft, which drives a Node; Node is for hosts that
// run their own loop.
//
// Every method may be called from any goroutine, concurrently. Close frees
// the node once no call is running; calls after Close return ErrClosed.
type Node struct {
	handle[*C.embraft_node]
	id uint64
	// inputs, for an inline node that does not sync, gets a token after
	// every input call: a batch may be ready to poll. A goroutine wake-up,
	// where waiting for the readiness descriptor would go through the
	// network poller.
	inputs chan struct{}
}

// NewNode starts a node: it bootstraps a new cluster from cfg.Peers, or
// restarts from cfg.DataDir when it holds state.
func NewNode(cfg Config) (*Node, error) {
	if abiMismatch != nil {
		return nil, abiMismatch
	}
	ccfg, err := cfg.build()
	if err != nil {
		return nil, err
	}
	defer C.embraft_config_free(ccfg)
	var ptr *C.embraft_node
	if code := C.embraft_node_new(ccfg, &ptr); code != C.EMBRAFT_OK {
		return nil, configError("embraft_node_new", code, ccfg)
	}
	n := &Node{id: cfg.ID}
	n.handle = handle[*C.embraft_node]{ptr: ptr,
		lastErrorOf: func(p *C.embraft_node, buf *C.char, size C.size_t) {
			C.embraft_node_last_error(p, buf, size, nil)
		},
		release: func(p *C.embraft_node) { C.embraft_node_free(p) },
	}
	if cfg.Inline && cfg.Sync == SyncNever {
		n.inputs = make(chan struct{}, 1)
	}
	// The safety net for a forgotten Close: the node's threads and its
	// directory lock go away with the wrapper.
	runtime.SetFinalizer(n, (*Node).Close)
	return n, nil
}

// ID returns the node's id.
func (n *Node) ID() uint64 { return n.id }

// Close stops the node (syncing what is queued) and frees it. It is
// idempotent and waits for calls in progress.
func (n *Node) Close() error {
	if n.free() {
		runtime.SetFinalizer(n, nil)
	}
	return nil
}

// input is call for the calls that feed the node: an inline node has
// done the work when it returns, and the driver is told a batch may wait.
func (n *Node) input(op string, f func(*C.embraft_node) C.embraft_status) error {
	err := n.call(op, f)
	n.notify()
	return err
}

// notify wakes a goroutine waiting in Inputs, if any; never blocks.
func (n *Node) notify() {
	if n.inputs != nil {
		select {
		case n.inputs <- struct{}{}:
		default:
		}
	}
}

// Inputs, for an inline node that does not sync (Config.Inline with
// SyncNever), receives a token after input calls on the node (coalesced):
// poll then. A batch can also come from a received snapshot's
// verification, which signals only the readiness descriptor, so a loop
// waiting here should also poll now and then (every tick does: Tick is an
// input call). Nil for other nodes, whose batches come from the node's
// own threads too: wait for the readiness descriptor.
func (n *Node) Inputs() <-chan struct{} { return n.inputs }

// bytesArg returns a C view of Go bytes for the duration of one call; cgo
// pins them, and they hold no Go pointers.
func bytesArg(b []byte) (*C.uint8_t, C.size_t) {
	if len(b) == 0 {
		return nil, 0
	}
	return (*C.uint8_t)(unsafe.Pointer(&b[0])), C.size_t(len(b))
}

// Tick advances the node's logical clock by one tick.
func (n *Node) Tick() error {
	return n.input("embraft_node_tick", func(p *C.embraft_node) C.embraft_status { return C.embraft_node_tick(p) })
}

// Step hands the node a message received from a peer (copied).
func (n *Node) Step(msg []byte) error {
	err := n.input("embraft_node_step", func(p *C.embraft_node) C.embraft_status {
		data, size := bytesArg(msg)
		return C.embraft_node_step(p, data, size)
	})
	runtime.KeepAlive(msg)
	return err
}

// Propose queues data for the log and returns the proposal id; the outcome
// comes in a later Ready.
func (n *Node) Propose(data []byte) (uint64, error) {
	var id C.uint64_t
	err := n.input("embraft_node_propose", func(p *C.embraft_node) C.embraft_status {
		ptr, size := bytesArg(data)
		return C.embraft_node_propose(p, ptr, size, &id)
	})
	runtime.KeepAlive(data)
	return uint64(id), err
}

// ProposeConfChange proposes one membership change.
func (n *Node) ProposeConfChange(change ConfChange, node uint64) (uint64, error) {
	var id C.uint64_t
	err := n.input("embraft_node_propose_conf_change", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_propose_conf_change(p, C.uint32_t(change), C.uint64_t(node), &id)
	})
	return uint64(id), err
}

// ProposeMembership proposes moving to exactly these voters and learners.
func (n *Node) ProposeMembership(voters, learners []uint64) (uint64, error) {
	var id C.uint64_t
	err := n.input("embraft_node_propose_membership", func(p *C.embraft_node) C.embraft_status {
		v, vn := idsArg(voters)
		l, ln := idsArg(learners)
		return C.embraft_node_propose_membership(p, v, vn, l, ln, &id)
	})
	runtime.KeepAlive(voters)
	runtime.KeepAlive(learners)
	return uint64(id), err
}

func idsArg(ids []uint64) (*C.uint64_t, C.size_t) {
	if len(ids) == 0 {
		return nil, 0
	}
	return (*C.uint64_t)(unsafe.Pointer(&ids[0])), C.size_t(len(ids))
}

// ReadIndex asks for a linearizable read point tagged with context.
func (n *Node) ReadIndex(context uint64) error {
	return n.input("embraft_node_read_index", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_read_index(p, C.uint64_t(context))
	})
}

// TransferLeader asks this node, if it leads, to hand leadership to to.
func (n *Node) TransferLeader(to uint64) error {
	return n.input("embraft_node_transfer_leader", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_transfer_leader(p, C.uint64_t(to))
	})
}

// ReportUnreachable tells the node the transport could not reach peer.
func (n *Node) ReportUnreachable(peer uint64) error {
	return n.input("embraft_node_report_unreachable", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_report_unreachable(p, C.uint64_t(peer))
	})
}

// AckApplied tells the node the state machine applied through index.
func (n *Node) AckApplied(index uint64) error {
	return n.input("embraft_node_ack_applied", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_ack_applied(p, C.uint64_t(index))
	})
}

// SetLogLevel changes the level of the log lines in later batches.
func (n *Node) SetLogLevel(level LogLevel) error {
	return n.call("embraft_node_set_log_level", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_set_log_level(p, C.uint32_t(level))
	})
}

// Status returns a snapshot of the node's status.
func (n *Node) Status() (Status, error) {
	var report *C.embraft_status_report
	err := n.call("embraft_node_status", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_status(p, &report)
	})
	if err != nil {
		return Status{}, err
	}
	defer C.embraft_status_report_free(report)
	return copyStatus(report), nil
}

// ReadinessFile returns a duplicate of the node's readiness descriptor as
// an *os.File registered with Go's network poller: it becomes readable when
// a batch waits. The caller owns (and closes) the duplicate; the node's
// own descriptor stays untouched, as the C API requires.
func (n *Node) ReadinessFile() (*os.File, error) {
	var fd C.int
	err := n.call("embraft_node_readiness_fd", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_readiness_fd(p, &fd)
	})
	if err != nil {
		return nil, err
	}
	return dupReadiness(fd)
}

// dupReadiness duplicates a readiness descriptor the library owns, as a
// file registered with Go's network poller and owned by the caller.
func dupReadiness(fd C.int) (*os.File, error) {
	dup, err := syscall.Dup(int(fd))
	if err != nil {
		return nil, err
	}
	syscall.CloseOnExec(dup)
	// Non-blocking, so that os.NewFile hands it to the network poller.
	if err := syscall.SetNonblock(dup, true); err != nil {
		syscall.Close(dup)
		return nil, err
	}
	return os.NewFile(uintptr(dup), "embraft-readiness"), nil
}
