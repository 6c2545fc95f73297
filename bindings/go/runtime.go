package embraft

/*
#include <embraft.h>

// A runtime batch hands out each list as one array of plain structs
// (docs/FFI.md, "The batch"); one cgo call fetches them all.
typedef struct {
	const uint64_t *peers;
	size_t n_peers;
	const embraft_rt_entry *entries;
	size_t n_entries;
	const embraft_rt_outcome *outcomes;
	size_t n_outcomes;
	const embraft_rt_read *reads;
	size_t n_reads;
	const embraft_rt_state *states;
	size_t n_states;
	const embraft_rt_restore *restores;
	size_t n_restores;
	const embraft_rt_snapshot_wanted *wanted;
	size_t n_wanted;
	const embraft_rt_log *logs;
	size_t n_logs;
} embraft_go_rt_batch;

// embraft_go_rt_poll polls like embraft_runtime_poll and fills b with the
// batch's arrays (valid until the batch is freed). Asking for the peers
// encodes the batch's group frames, which the transport sends.
static embraft_status embraft_go_rt_poll(const embraft_runtime *rt, uint32_t timeout_ms,
		embraft_runtime_ready **out, embraft_go_rt_batch *b) {
	embraft_status status = embraft_runtime_poll(rt, timeout_ms, out);
	if (status != EMBRAFT_OK) {
		return status;
	}
	const embraft_runtime_ready *r = *out;
	embraft_runtime_ready_peers(r, &b->peers, &b->n_peers);
	embraft_runtime_ready_entries(r, &b->entries, &b->n_entries);
	embraft_runtime_ready_outcomes(r, &b->outcomes, &b->n_outcomes);
	embraft_runtime_ready_reads(r, &b->reads, &b->n_reads);
	embraft_runtime_ready_states(r, &b->states, &b->n_states);
	embraft_runtime_ready_restores(r, &b->restores, &b->n_restores);
	embraft_runtime_ready_snapshots_wanted(r, &b->wanted, &b->n_wanted);
	embraft_runtime_ready_logs(r, &b->logs, &b->n_logs);
	return EMBRAFT_OK;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// GroupHost is what a GroupTransport delivers to: the Runtime it was
// started with.
type GroupHost interface {
	// StepFrame hands a group frame received from a peer runtime to the
	// runtime (docs/WIRE.md, "Group frames"). ErrMalformed means the
	// frame is not one; nothing of it was taken.
	StepFrame(frame []byte) error
	// ReportUnreachable tells every group that peer runtime peer could
	// not be reached.
	ReportUnreachable(peer uint64)
}

// GroupTransport carries group frames between runtimes.
type GroupTransport interface {
	// Start begins delivering received frames to host.
	Start(host GroupHost) error
	// Send queues one group frame for peer runtime to (owned by the
	// transport from now on). It must not block: a transport drops what
	// it cannot queue.
	Send(to uint64, frame []byte)
	// Close stops the transport.
	Close() error
}

// RuntimeOptions configures a Runtime.
type RuntimeOptions struct {
	// Config holds the runtime's id (also its replicas' node id in every
	// group), its data directory (one WAL for every group), the WAL's
	// options and the Raft tunables of every group. Peers and
	// AppliedIndex are per group (GroupOptions) and ignored here.
	Config
	// Workers is the number of the library's worker threads (0: 2).
	Workers int
	// Transport carries group frames between runtimes; nil only for a
	// runtime whose groups all have this runtime as their only member.
	Transport GroupTransport
	// TickInterval is the time between ticks of every group (default
	// 100 ms).
	TickInterval time.Duration
	// Logger receives the library's log lines, with a "group" attribute,
	// and the driver's (default slog.Default()).
	Logger *slog.Logger
}

// GroupOptions configures one group of a Runtime.
type GroupOptions struct {
	// Members are the founding voters (runtime ids, this runtime's
	// included) of a group the data directory does not hold yet; empty
	// joins a running group (a member then proposes adding this
	// runtime). Ignored when the group restarts from the WAL.
	Members []uint64
	// StateMachine receives the group's committed entries (required).
	StateMachine StateMachine
	// OnStateChange, if set, is called on the group's apply goroutine
	// whenever the group's role, leader or term changes here. It must not
	// block.
	OnStateChange func(State)
	// AutoSnapshot takes a snapshot, as Group.Snapshot does, whenever the
	// group asks for one (Config.SnapshotEntries, SnapshotBytes, or a
	// shared WAL grown past its segment soft limit).
	AutoSnapshot bool
	// AppliedIndex is what the state machine has durably applied of the
	// group; committed entries after it are delivered again on restart
	// (0, the default for an in-memory state machine: all of them, from
	// the latest snapshot on).
	AppliedIndex uint64
}

// Runtime runs many Raft groups on one embraft runtime (docs/FFI.md,
// "Many groups: the runtime"): one pool of worker threads and one shared
// WAL for every group. One driver goroutine polls the runtime's batches
// (every group's output at once), sends one group frame per peer runtime
// through the transport, and hands each group its part; each group
// applies its entries in log order on its own goroutine (started when it
// has work), so the groups apply concurrently. A ticker goroutine drives
// every group's clock.
type Runtime struct {
	h    *runtimeHandle
	id   uint64
	opts RuntimeOptions
	log  *slog.Logger

	closing   chan struct{}
	done      sync.WaitGroup
	closeOnce sync.Once

	mu     sync.RWMutex
	groups map[uint64]*Group
	failed error
	// warnedNoTransport: the lack of a transport is logged once.
	warnedNoTransport atomic.Bool
}

// runtimeHandle is the C runtime, a separate object from Runtime so that
// its finalizer frees a runtime nobody closed.
type runtimeHandle struct {
	handle[*C.embraft_runtime]
}

// notify implements writerOwner: the driver waits for the readiness
// descriptor, which a finished snapshot's batch signals.
func (h *runtimeHandle) notify() {}

func (h *runtimeHandle) close() {
	if h.free() {
		runtime.SetFinalizer(h, nil)
	}
}

// newRuntimeHandle creates the C runtime.
func newRuntimeHandle(cfg Config, workers int) (*runtimeHandle, error) {
	// The runtime ignores them; a set Peers would only make build check
	// ids that mean nothing here.
	cfg.Peers, cfg.AppliedIndex = nil, 0
	ccfg, err := cfg.build()
	if err != nil {
		return nil, err
	}
	defer C.embraft_config_free(ccfg)
	var ptr *C.embraft_runtime
	if code := C.embraft_runtime_new(ccfg, C.uint32_t(workers), &ptr); code != C.EMBRAFT_OK {
		return nil, configError("embraft_runtime_new", code, ccfg)
	}
	h := &runtimeHandle{handle[*C.embraft_runtime]{ptr: ptr,
		lastErrorOf: func(p *C.embraft_runtime, buf *C.char, size C.size_t) {
			C.embraft_runtime_last_error(p, buf, size, nil)
		},
		release: func(p *C.embraft_runtime) { C.embraft_runtime_free(p) },
	}}
	// The safety net for a forgotten Close: the threads and the directory
	// lock go away with the handle.
	runtime.SetFinalizer(h, (*runtimeHandle).close)
	return h, nil
}

// StartRuntime opens the runtime's data directory (recovering its WAL)
// and starts its driver. No group runs until StartGroup; StoredGroups
// lists those to start again after a restart.
func StartRuntime(opts RuntimeOptions) (*Runtime, error) {
	if abiMismatch != nil {
		return nil, abiMismatch
	}
	if opts.Workers < 0 {
		return nil, fmt.Errorf("embraft: RuntimeOptions.Workers is %d", opts.Workers)
	}
	if opts.Workers == 0 {
		opts.Workers = 2
	}
	if opts.TickInterval == 0 {
		opts.TickInterval = 100 * time.Millisecond
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("runtime", opts.ID)
	h, err := newRuntimeHandle(opts.Config, opts.Workers)
	if err != nil {
		return nil, err
	}
	rt := &Runtime{h: h, id: opts.ID, opts: opts, log: logger,
		closing: make(chan struct{}), groups: map[uint64]*Group{}}
	if opts.Transport != nil {
		if err := opts.Transport.Start(rt); err != nil {
			h.close()
			return nil, err
		}
	}
	rt.done.Add(2)
	go rt.tickLoop()
	go rt.driveLoop()
	return rt, nil
}

// ID returns the runtime's id.
func (rt *Runtime) ID() uint64 { return rt.id }

// StoredGroups lists the groups the data directory holds, running or
// not, ascending: the ones to start again after a restart.
func (rt *Runtime) StoredGroups() ([]uint64, error) {
	return rt.listGroups("embraft_runtime_stored_groups",
		func(p *C.embraft_runtime, ids *C.uint64_t, capacity C.size_t, count *C.size_t) C.embraft_status {
			return C.embraft_runtime_stored_groups(p, ids, capacity, count)
		})
}

// RunningGroups lists the groups the library runs, ascending.
func (rt *Runtime) RunningGroups() ([]uint64, error) {
	return rt.listGroups("embraft_runtime_running_groups",
		func(p *C.embraft_runtime, ids *C.uint64_t, capacity C.size_t, count *C.size_t) C.embraft_status {
			return C.embraft_runtime_running_groups(p, ids, capacity, count)
		})
}

func (rt *Runtime) listGroups(op string,
	list func(*C.embraft_runtime, *C.uint64_t, C.size_t, *C.size_t) C.embraft_status) ([]uint64, error) {
	var ids []uint64
	for {
		var count C.size_t
		err := rt.h.call(op, func(p *C.embraft_runtime) C.embraft_status {
			return list(p, (*C.uint64_t)(unsafe.Pointer(firstOf(ids))), C.size_t(len(ids)), &count)
		})
		if err != nil {
			return nil, err
		}
		if int(count) <= len(ids) {
			return ids[:count], nil
		}
		// Groups started meanwhile: ask again with room for them.
		ids = make([]uint64, int(count)+8)
	}
}

// StartGroup runs group id here: restarted from the data directory when
// it holds the group, otherwise founded with opts.Members or, with no
// members, joining a running group. ErrGroupExists when it already runs.
func (rt *Runtime) StartGroup(id uint64, opts GroupOptions) (*Group, error) {
	if opts.StateMachine == nil {
		return nil, errors.New("embraft: GroupOptions.StateMachine is required")
	}
	if id == 0 {
		return nil, &CallError{Op: "embraft_runtime_start_group", Code: ErrInvalidArgument, Message: "group id 0"}
	}
	g := &Group{id: id, rt: rt}
	g.replica = newReplica(rt.id, groupInputs{rt.h, id}, opts.StateMachine, opts.OnStateChange,
		opts.AutoSnapshot, opts.AppliedIndex, rt.log.With("group", id))
	g.onApplier = g.onApplyGoroutine
	// Registered before the library runs it, so that the driver finds the
	// group for its first batch.
	rt.mu.Lock()
	switch {
	case rt.failed != nil:
		rt.mu.Unlock()
		return nil, rt.failed
	case rt.groups[id] != nil:
		rt.mu.Unlock()
		return nil, &CallError{Op: "embraft_runtime_start_group", Code: ErrGroupExists,
			Message: fmt.Sprintf("group %d already runs on runtime %d", id, rt.id)}
	}
	rt.groups[id] = g
	rt.mu.Unlock()
	err := rt.h.call("embraft_runtime_start_group", func(p *C.embraft_runtime) C.embraft_status {
		members, n := idsArg(opts.Members)
		return C.embraft_runtime_start_group(p, C.uint64_t(id), members, n, C.uint64_t(opts.AppliedIndex))
	})
	runtime.KeepAlive(opts.Members)
	if err != nil {
		rt.forget(g)
		return nil, err
	}
	return g, nil
}

// forget removes g from the running groups, if it is still the one there.
func (rt *Runtime) forget(g *Group) bool {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	if rt.groups[g.id] != g {
		return false
	}
	delete(rt.groups, g.id)
	return true
}

// Group returns the running group id, nil when it does not run here.
func (rt *Runtime) Group(id uint64) *Group {
	rt.mu.RLock()
	defer rt.mu.RUnlock()
	return rt.groups[id]
}

// Groups returns the running groups, by ascending id.
func (rt *Runtime) Groups() []*Group {
	rt.mu.RLock()
	out := make([]*Group, 0, len(rt.groups))
	for _, g := range rt.groups {
		out = append(out, g)
	}
	rt.mu.RUnlock()
	slices.SortFunc(out, func(a, b *Group) int {
		switch {
		case a.id < b.id:
			return -1
		case a.id > b.id:
			return 1
		}
		return 0
	})
	return out
}

// StopGroup stops running group id; its state stays in the data
// directory and StartGroup runs it again. Calls waiting on the group fail
// with ErrClosed. It waits for the group's apply goroutine, so it must
// not be called from the group's state machine or OnStateChange.
func (rt *Runtime) StopGroup(id uint64) error {
	g := rt.Group(id)
	if g == nil || !rt.forget(g) {
		return &CallError{Op: "embraft_runtime_stop_group", Code: ErrUnknownGroup,
			Message: fmt.Sprintf("group %d does not run on runtime %d", id, rt.id)}
	}
	err := rt.h.call("embraft_runtime_stop_group", func(p *C.embraft_runtime) C.embraft_status {
		return C.embraft_runtime_stop_group(p, C.uint64_t(id))
	})
	g.stop()
	g.fail(ErrClosed)
	return err
}

// Metrics returns what group and the shared WAL measured (Group.Metrics).
func (rt *Runtime) Metrics(group uint64) (Metrics, error) {
	return groupInputs{rt.h, group}.metrics()
}

// Stats returns the runtime's work counts since it opened: worker rounds,
// group steps across them and WAL syncs.
func (rt *Runtime) Stats() (rounds, groupSteps, syncs uint64, err error) {
	var r, g, s C.uint64_t
	err = rt.h.call("embraft_runtime_stats", func(p *C.embraft_runtime) C.embraft_status {
		return C.embraft_runtime_stats(p, &r, &g, &s)
	})
	return uint64(r), uint64(g), uint64(s), err
}

// StepFrame implements GroupHost.
func (rt *Runtime) StepFrame(frame []byte) error {
	var report C.embraft_rt_frame_report
	err := rt.h.call("embraft_runtime_step_frame", func(p *C.embraft_runtime) C.embraft_status {
		data, size := bytesArg(frame)
		return C.embraft_runtime_step_frame(p, data, size, &report)
	})
	runtime.KeepAlive(frame)
	if err == nil && report.refused > 0 {
		rt.log.Warn("embraft: messages of a group frame refused", "refused", uint64(report.refused))
	}
	return err
}

// ReportUnreachable implements GroupHost.
func (rt *Runtime) ReportUnreachable(peer uint64) {
	rt.h.call("embraft_runtime_report_unreachable", func(p *C.embraft_runtime) C.embraft_status {
		return C.embraft_runtime_report_unreachable(p, C.uint64_t(peer))
	})
}

// Close stops the driver, every group, the transport and the runtime
// (syncing its WAL). Calls waiting on a group fail with ErrClosed.
// Idempotent.
func (rt *Runtime) Close() error {
	rt.closeOnce.Do(func() {
		rt.mu.Lock()
		if rt.failed == nil {
			// No group starts from now on.
			rt.failed = ErrClosed
		}
		rt.mu.Unlock()
		close(rt.closing)
		rt.done.Wait()
		groups := rt.Groups()
		for _, g := range groups {
			g.stop()
		}
		if rt.opts.Transport != nil {
			rt.opts.Transport.Close()
		}
		rt.h.close()
		rt.mu.Lock()
		rt.groups = map[uint64]*Group{}
		rt.mu.Unlock()
		for _, g := range groups {
			g.fail(ErrClosed)
		}
	})
	return nil
}

func (rt *Runtime) tickLoop() {
	defer rt.done.Done()
	tickEvery(rt.opts.TickInterval, rt.closing, func() {
		rt.h.call("embraft_runtime_tick", func(p *C.embraft_runtime) C.embraft_status {
			return C.embraft_runtime_tick(p)
		})
	})
}

// readinessFile returns a duplicate of the runtime's readiness descriptor
// registered with Go's network poller (Node.ReadinessFile).
func (rt *Runtime) readinessFile() (*os.File, error) {
	var fd C.int
	err := rt.h.call("embraft_runtime_readiness_fd", func(p *C.embraft_runtime) C.embraft_status {
		return C.embraft_runtime_readiness_fd(p, &fd)
	})
	if err != nil {
		return nil, err
	}
	return dupReadiness(fd)
}

// driveLoop is the driver: it polls batches while they come and waits
// for the readiness descriptor when none does.
func (rt *Runtime) driveLoop() {
	defer rt.done.Done()
	readiness, err := rt.readinessFile()
	var wait func() bool
	if err == nil {
		defer readiness.Close()
		wait, err = readinessWaiter(readiness)
	}
	if err != nil {
		rt.stopAll(fmt.Errorf("embraft: readiness descriptor: %w", err))
		return
	}
	for {
		select {
		case <-rt.closing:
			return
		default:
		}
		got, err := rt.pollAndDispatch(0)
		if err == nil && !got && !wait() {
			_, err = rt.pollAndDispatch(wakeInterval)
		}
		if err != nil {
			rt.stopAll(err)
			<-rt.closing
			return
		}
	}
}

// stopAll fails every group after the driver stopped on err (the runtime
// failed): nothing will be applied any more.
func (rt *Runtime) stopAll(err error) {
	rt.log.Error("embraft: runtime driver stopped", "err", err)
	rt.mu.Lock()
	if rt.failed == nil {
		rt.failed = err
	}
	rt.mu.Unlock()
	for _, g := range rt.Groups() {
		g.fail(err)
	}
}

// pollAndDispatch polls one batch, waiting up to timeout, sends its frames
// and queues each group's part for the group. got tells whether the
// batch held anything.
func (rt *Runtime) pollAndDispatch(timeout time.Duration) (got bool, err error) {
	var ready *C.embraft_runtime_ready
	var b C.embraft_go_rt_batch
	err = rt.h.call("embraft_runtime_poll", func(p *C.embraft_runtime) C.embraft_status {
		return C.embraft_go_rt_poll(p, C.uint32_t(timeout/time.Millisecond), &ready, &b)
	})
	if err != nil {
		return false, err
	}
	defer C.embraft_runtime_ready_free(ready)
	got = b.n_peers+b.n_entries+b.n_outcomes+b.n_reads+b.n_states+b.n_restores+b.n_wanted+b.n_logs > 0
	if !got {
		return false, nil
	}
	rt.sendFrames(ready, cItems(b.peers, b.n_peers))
	for _, l := range cItems(b.logs, b.n_logs) {
		rt.log.Log(context.Background(), slogLevel(LogLevel(l.level)), C.GoString(l.text), "group", uint64(l.group))
	}

	// Each group's items, from every list, make its part of the batch.
	parts := map[uint64]*groupPart{}
	part := func(group C.uint64_t) *groupPart {
		p := parts[uint64(group)]
		if p == nil {
			p = &groupPart{}
			parts[uint64(group)] = p
		}
		return p
	}
	for _, s := range cItems(b.states, b.n_states) {
		p := part(s.group)
		p.hasState = true
		p.ready.StateChanged = true
		p.ready.State = State{Role(s.role), uint64(s.leader), uint64(s.term)}
	}
	for _, e := range cItems(b.entries, b.n_entries) {
		p := part(e.group)
		// Each entry gets its own copy: a state machine may keep its data,
		// and must not pin the whole batch by doing so.
		data := append([]byte{}, cView(e.data, e.len)...)
		p.ready.Entries = append(p.ready.Entries,
			Entry{uint64(e.index), uint64(e.term), EntryKind(e.kind), data, uint64(e.proposal_id)})
	}
	for _, o := range cItems(b.outcomes, b.n_outcomes) {
		p := part(o.group)
		p.ready.Outcomes = append(p.ready.Outcomes, Outcome{uint64(o.proposal_id), uint32(o.code), uint64(o.index)})
	}
	for _, r := range cItems(b.reads, b.n_reads) {
		p := part(r.group)
		p.ready.Reads = append(p.ready.Reads, ReadResult{uint64(r.context), uint32(r.code), uint64(r.index)})
	}
	for _, r := range cItems(b.restores, b.n_restores) {
		p := part(r.group)
		// The file is pinned only until the batch is freed: open it now.
		p.ready.Restore, p.restoreErr = openRestore(uint64(r.index), uint64(r.term), r.path)
	}
	for _, w := range cItems(b.wanted, b.n_wanted) {
		p := part(w.group)
		p.ready.SnapshotWanted, p.ready.SnapshotWantedIndex = true, uint64(w.index)
	}
	for id, p := range parts {
		g := rt.Group(id)
		if g == nil {
			// Stopped since the library made the output.
			if p.ready.Restore != nil {
				p.ready.Restore.File.Close()
			}
			continue
		}
		g.dispatch(p)
	}
	return true, nil
}

// sendFrames hands the transport one group frame per peer, copied out of
// the batch.
func (rt *Runtime) sendFrames(ready *C.embraft_runtime_ready, peers []C.uint64_t) {
	if len(peers) == 0 {
		return
	}
	if rt.opts.Transport == nil {
		if rt.warnedNoTransport.CompareAndSwap(false, true) {
			rt.log.Warn("embraft: groups have members on other runtimes but the runtime has no transport; their messages are dropped")
		}
		return
	}
	for _, peer := range peers {
		var data *C.uint8_t
		var size C.size_t
		if C.embraft_runtime_ready_frame(ready, peer, &data, &size) != C.EMBRAFT_OK {
			continue
		}
		frames, dropped := splitGroupFrame(append([]byte(nil), cView(data, size)...), maxFrame)
		if dropped > 0 {
			rt.log.Warn("embraft: messages larger than a frame dropped", "peer", uint64(peer), "dropped", dropped)
		}
		for _, f := range frames {
			rt.opts.Transport.Send(uint64(peer), f)
		}
	}
}

// cItems is a Go view of a batch's array of n items at p, valid while the
// batch lives.
func cItems[T any](p *T, n C.size_t) []T {
	if n == 0 {
		return nil
	}
	return unsafe.Slice(p, int(n))
}
