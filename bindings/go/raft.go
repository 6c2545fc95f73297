package embraft

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// StateMachine is the host's replicated state. The driver goroutine calls
// its methods one at a time, in log order.
type StateMachine interface {
	// Apply applies one committed normal entry (noop and membership
	// entries are handled by the library and not passed on).
	Apply(e Entry)
	// Snapshot writes the state as of the last applied entry to w, in any
	// format Restore reads back. The driver calls it on its own goroutine,
	// between batches, so no Apply runs meanwhile and the state is exactly
	// the one at the snapshot's index; w is buffered and goes straight to
	// the library's snapshot file. Batches wait while it runs: a large
	// state machine that can capture a consistent view cheaply implements
	// SnapshotPreparer as well.
	Snapshot(w io.Writer) error
	// Restore replaces the whole state with the one a Snapshot (on this
	// node or another) wrote, read from r. The driver calls it before
	// applying the entries that follow the snapshot: after the node
	// installed a snapshot from the leader, or on a restart from a
	// compacted log. An error stops the Raft (entries cannot be applied
	// on top of the wrong state).
	Restore(r io.Reader) error
}

// SnapshotPreparer is optionally implemented by a StateMachine that can be
// serialized concurrently with Apply. PrepareSnapshot runs on the driver
// goroutine between batches, like Snapshot would, and captures the state
// as of the last applied entry cheaply (a copy of a small index, a
// copy-on-write view, a database read transaction); the function it
// returns then writes that captured state to w on another goroutine while
// the driver goes on applying entries. The driver calls the function
// exactly once.
type SnapshotPreparer interface {
	PrepareSnapshot() (write func(w io.Writer) error, err error)
}

// Host is what a transport delivers to: the Raft it was started with.
type Host interface {
	// Step hands a received message to the node.
	Step(msg []byte) error
	// ReportUnreachable tells the node a peer could not be reached.
	ReportUnreachable(peer uint64)
}

// Transport carries encoded messages between nodes.
type Transport interface {
	// Start begins delivering received messages to host.
	Start(host Host) error
	// Send queues msg (owned by the transport from now on) for peer to. It
	// must not block: a transport drops what it cannot queue.
	Send(to uint64, msg []byte)
	// Close stops the transport.
	Close() error
}

// Options configures a Raft.
type Options struct {
	Config
	// StateMachine receives committed entries (required).
	StateMachine StateMachine
	// Transport carries messages (required for clusters of more than one).
	Transport Transport
	// TickInterval is the time between ticks (default 100 ms).
	TickInterval time.Duration
	// Logger receives the library's log lines and the driver's (default
	// slog.Default()).
	Logger *slog.Logger
	// OnStateChange, if set, is called on the driver goroutine whenever
	// the role, leader or term changes. It must not block.
	OnStateChange func(State)
	// AutoSnapshot takes a snapshot, as Raft.Snapshot does, whenever the
	// node asks for one (after Config.SnapshotEntries entries or
	// Config.SnapshotBytes bytes of log since the last). Off by default:
	// the host decides when to call Snapshot.
	AutoSnapshot bool
}

// Raft runs a Node: a driver goroutine polls its batches, sends messages
// through the transport, applies committed entries to the state machine
// and acknowledges them, and completes the futures of Propose and
// ReadIndex; a ticker goroutine drives its clock.
type Raft struct {
	node    *Node
	opts    Options
	log     *slog.Logger
	closing chan struct{}
	done    sync.WaitGroup
	closeMu sync.Once
	// finishing counts the goroutines finishing snapshots; Close waits for
	// them before it frees the node.
	finishing sync.WaitGroup
	// autoSnapshot is set while a snapshot asked for by the node runs, so
	// that repeated asks do not pile snapshots up.
	autoSnapshot atomic.Bool
	// acked is the highest index acknowledged to the node (driver only).
	acked uint64

	readContext atomic.Uint64

	// mu guards the driver's bookkeeping shared with callers.
	mu        sync.Mutex
	applied   uint64
	state     State
	proposals map[uint64]chan proposalResult
	reads     map[uint64]chan readResult
	// readsPending wait for the state machine to reach their index.
	readsPending []pendingRead
	stateWaiters []chan struct{}
	snapshotReq  chan func(snapshotResult)
	failed       error
}

type snapshotResult struct {
	index uint64
	err   error
}

type proposalResult struct {
	index uint64
	err   error
}

type readResult struct {
	index uint64
	err   error
}

type pendingRead struct {
	index uint64
	done  chan readResult
}

// Start starts a node with opts and its driver.
func Start(opts Options) (*Raft, error) {
	if opts.StateMachine == nil {
		return nil, errors.New("embraft: Options.StateMachine is required")
	}
	if opts.TickInterval == 0 {
		opts.TickInterval = 100 * time.Millisecond
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node", opts.ID)
	node, err := NewNode(opts.Config)
	if err != nil {
		return nil, err
	}
	r := &Raft{
		node: node, opts: opts, log: logger,
		closing:     make(chan struct{}),
		proposals:   make(map[uint64]chan proposalResult),
		reads:       make(map[uint64]chan readResult),
		snapshotReq: make(chan func(snapshotResult)),
		applied:     opts.AppliedIndex,
		acked:       opts.AppliedIndex,
	}
	if opts.Transport != nil {
		if err := opts.Transport.Start(r); err != nil {
			node.Close()
			return nil, err
		}
	}
	r.done.Add(2)
	go r.tickLoop()
	go r.driveLoop()
	return r, nil
}

// Node returns the underlying node, for the calls Raft does not wrap.
func (r *Raft) Node() *Node { return r.node }

// ID returns this node's id.
func (r *Raft) ID() uint64 { return r.opts.ID }

// Close stops the driver, the transport and the node. Idempotent.
func (r *Raft) Close() error {
	r.closeMu.Do(func() {
		close(r.closing)
		r.done.Wait()
		// A snapshot being finished needs the node to record it.
		r.finishing.Wait()
		if r.opts.Transport != nil {
			r.opts.Transport.Close()
		}
		r.node.Close()
		r.fail(ErrClosed)
	})
	return nil
}

// fail completes every waiting call with err.
func (r *Raft) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.failed == nil {
		r.failed = err
	}
	for id, ch := range r.proposals {
		ch <- proposalResult{err: err}
		delete(r.proposals, id)
	}
	for ctx, ch := range r.reads {
		ch <- readResult{err: err}
		delete(r.reads, ctx)
	}
	for _, p := range r.readsPending {
		p.done <- readResult{err: err}
	}
	r.readsPending = nil
}

// Step implements Host.
func (r *Raft) Step(msg []byte) error { return r.node.Step(msg) }

// ReportUnreachable implements Host.
func (r *Raft) ReportUnreachable(peer uint64) { r.node.ReportUnreachable(peer) }

// retryBusy repeats an input while the node's queue is full: the driver is
// draining it, so the wait is short.
func retryBusy(ctx context.Context, f func() error) error {
	for {
		err := f()
		if !errors.Is(err, ErrBusy) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Millisecond):
		}
	}
}

// propose submits one proposal and waits until it is committed and applied
// on this node (so the caller reads its own write afterwards).
func (r *Raft) propose(ctx context.Context, submit func() (uint64, error)) (uint64, error) {
	ch := make(chan proposalResult, 1)
	err := retryBusy(ctx, func() error {
		// The lock is held across the submission so that the driver, which
		// takes it to complete outcomes, cannot see the outcome before the
		// waiter is registered.
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.failed != nil {
			return r.failed
		}
		id, err := submit()
		if err == nil {
			r.proposals[id] = ch
		}
		return err
	})
	if err != nil {
		return 0, err
	}
	select {
	case res := <-ch:
		return res.index, res.err
	case <-ctx.Done():
		// The proposal may still commit; its outcome is then discarded.
		return 0, ctx.Err()
	}
}

// Propose replicates data and returns its log index once it is committed
// and applied on this node. On ctx's end the outcome is unknown.
func (r *Raft) Propose(ctx context.Context, data []byte) (uint64, error) {
	return r.propose(ctx, func() (uint64, error) { return r.node.Propose(data) })
}

// ProposeConfChange proposes one membership change and waits until it is
// applied here.
func (r *Raft) ProposeConfChange(ctx context.Context, change ConfChange, node uint64) (uint64, error) {
	return r.propose(ctx, func() (uint64, error) { return r.node.ProposeConfChange(change, node) })
}

// ProposeMembership moves to exactly these voters and learners and waits
// until the (joint) change is applied here.
func (r *Raft) ProposeMembership(ctx context.Context, voters, learners []uint64) (uint64, error) {
	return r.propose(ctx, func() (uint64, error) { return r.node.ProposeMembership(voters, learners) })
}

// ReadIndex returns once this node's state machine has applied everything
// committed before the call, so a read of local state that follows is
// linearizable. It returns the read index.
func (r *Raft) ReadIndex(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	readCtx := r.readContext.Add(1)
	r.mu.Lock()
	if r.failed != nil {
		r.mu.Unlock()
		return 0, r.failed
	}
	r.reads[readCtx] = ch
	r.mu.Unlock()
	err := retryBusy(ctx, func() error { return r.node.ReadIndex(readCtx) })
	if err == nil {
		select {
		case res := <-ch:
			return res.index, res.err
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	r.mu.Lock()
	delete(r.reads, readCtx)
	r.mu.Unlock()
	return 0, err
}

// TransferLeader asks this node (the leader) to hand leadership to to and
// waits until this node sees to lead.
func (r *Raft) TransferLeader(ctx context.Context, to uint64) error {
	if err := r.node.TransferLeader(to); err != nil {
		return err
	}
	for {
		state, changed := r.watchState()
		if state.Leader == to && state.Role != Leader || to == r.opts.ID && state.Role == Leader {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State returns the role, leader and term as of the latest batch.
func (r *Raft) State() State {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state
}

// watchState returns the current state and a channel closed at its next
// change.
func (r *Raft) watchState() (State, chan struct{}) {
	r.mu.Lock()
	defer r.mu.Unlock()
	ch := make(chan struct{})
	r.stateWaiters = append(r.stateWaiters, ch)
	return r.state, ch
}

// WaitLeader waits until some leader is known and returns it.
func (r *Raft) WaitLeader(ctx context.Context) (uint64, error) {
	for {
		state, changed := r.watchState()
		if state.Leader != 0 {
			return state.Leader, nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Applied returns the index the state machine has applied through.
func (r *Raft) Applied() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.applied
}

// Status returns the node's status report.
func (r *Raft) Status() (Status, error) { return r.node.Status() }

// Metrics returns what the node measured since it started (Node.Metrics).
func (r *Raft) Metrics() (Metrics, error) { return r.node.Metrics() }

// Snapshot takes a snapshot of the state machine at the applied index and
// returns that index once the snapshot's file is durable and queued for
// the node, which then records it in its WAL and compacts the log
// (Status().SnapshotIndex shows it shortly after), streams it to
// followers that need it, and restores from it after a restart.
//
// The state machine writes the snapshot on the driver goroutine, between
// batches, so it matches the index exactly (StateMachine.Snapshot; see
// SnapshotPreparer for writing it off the driver); the file is then
// finished on another goroutine, so the driver does not wait for it.
// ErrStaleSnapshot means the node already has a snapshot at or beyond the
// applied index (nothing new was applied since, or one was installed from
// the leader). If ctx ends first the snapshot may still complete.
func (r *Raft) Snapshot(ctx context.Context) (uint64, error) {
	r.mu.Lock()
	failed := r.failed
	r.mu.Unlock()
	if failed != nil {
		return 0, failed
	}
	done := make(chan snapshotResult, 1)
	reply := func(res snapshotResult) { done <- res }
	select {
	case r.snapshotReq <- reply:
	case <-r.closing:
		return 0, ErrClosed
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	select {
	case res := <-done:
		return res.index, res.err
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (r *Raft) tickLoop() {
	defer r.done.Done()
	ticker := time.NewTicker(r.opts.TickInterval)
	defer ticker.Stop()
	for {
		select {
		case <-r.closing:
			return
		case <-ticker.C:
			// A full queue drops the tick: the driver is behind anyway.
			r.node.Tick()
		}
	}
}

// wakeInterval bounds how long the driver waits for a batch before it
// looks at Close and snapshot requests.
const wakeInterval = 50 * time.Millisecond

// driveLoop takes batches without waiting in C: it waits for the readiness
// descriptor in Go's network poller, so no OS thread sits blocked in a cgo
// call and the wake-up is an ordinary goroutine wake-up.
func (r *Raft) driveLoop() {
	defer r.done.Done()
	if r.node.Inputs() != nil {
		r.driveInline()
		return
	}
	readiness, err := r.node.ReadinessFile()
	if err != nil {
		r.log.Error("embraft: readiness descriptor", "err", err)
		r.fail(err)
		return
	}
	defer readiness.Close()
	raw, err := readiness.SyscallConn()
	if err != nil {
		r.log.Error("embraft: readiness descriptor", "err", err)
		r.fail(err)
		return
	}
	r.driveWith(func() bool {
		// Wait for the descriptor to become readable. The poller remembers
		// a readiness edge that came after the last Poll, so no batch is
		// missed; a stale edge only costs one empty Poll.
		if readiness.SetReadDeadline(time.Now().Add(wakeInterval)) != nil {
			// Not pollable by the runtime (not expected on Linux, where it
			// is an eventfd): wait in C instead.
			_, ok := r.pollAndHandle(wakeInterval)
			return ok
		}
		waited := false
		raw.Read(func(uintptr) bool {
			if waited {
				return true
			}
			waited = true
			return false
		})
		return true
	})
}

// driveWith is the driver's loop: it starts requested snapshots, polls
// and handles batches, and when none is pending calls wait, which returns
// false once the driver must stop.
func (r *Raft) driveWith(wait func() bool) {
	for {
		select {
		case <-r.closing:
			return
		case reply := <-r.snapshotReq:
			r.startSnapshot(reply)
			continue
		default:
		}
		got, ok := r.pollAndHandle(0)
		if !ok {
			return
		}
		if !got && !wait() {
			return
		}
	}
}

// driveInline drives an inline node that does not sync (Config.Inline,
// SyncNever; one that syncs also gets batches from its sync thread, and
// driveLoop waits for those). Its batches come
// from input calls, which prepare them before they return: the driver
// polls after its own calls (acks, snapshot calls) and when another
// goroutine's call (Propose, the transport's Step, the ticker's Tick)
// signals Inputs, a goroutine wake-up. A batch from a received
// snapshot's verification waits for the next of these (a tick at most).
func (r *Raft) driveInline() {
	timer := time.NewTimer(wakeInterval)
	defer timer.Stop()
	r.driveWith(func() bool {
		timer.Reset(wakeInterval)
		select {
		case <-r.closing:
			return false
		case reply := <-r.snapshotReq:
			r.startSnapshot(reply)
		case <-r.node.Inputs():
		case <-timer.C:
		}
		return true
	})
}

// pollAndHandle polls for a batch, waiting up to timeout, and handles it.
// got tells whether a batch came; ok is false once the driver has failed
// (it then waits for Close before returning).
func (r *Raft) pollAndHandle(timeout time.Duration) (got, ok bool) {
	ready, err := r.node.Poll(timeout)
	if err == nil && ready != nil {
		err = r.handle(ready)
	}
	if err != nil {
		r.log.Error("embraft: driver stopped", "err", err)
		r.fail(err)
		<-r.closing
		return false, false
	}
	return ready != nil, true
}

// handle runs one batch on the driver goroutine. An error (a snapshot
// that cannot be restored) stops the driver.
func (r *Raft) handle(rd *Ready) error {
	for _, line := range rd.Logs {
		r.log.Log(context.Background(), slogLevel(line.Level), line.Text)
	}
	if r.opts.Transport != nil {
		for _, m := range rd.Messages {
			r.opts.Transport.Send(m.To, m.Data)
		}
	}
	if rd.Restore != nil {
		if err := r.restore(rd.Restore); err != nil {
			return err
		}
	}
	var last uint64
	for _, e := range rd.Entries {
		if e.Kind == EntryNormal {
			r.opts.StateMachine.Apply(e)
		}
		last = e.Index
	}
	if last > 0 {
		r.ack(last)
	}

	r.mu.Lock()
	if last > 0 {
		r.applied = last
	}
	for _, o := range rd.Outcomes {
		if ch, ok := r.proposals[o.ProposalID]; ok {
			delete(r.proposals, o.ProposalID)
			ch <- proposalResult{o.Index, outcomeError(o.Outcome)}
		}
	}
	for _, read := range rd.Reads {
		ch, ok := r.reads[read.Context]
		if !ok {
			continue
		}
		delete(r.reads, read.Context)
		if err := readError(read.Result); err != nil {
			ch <- readResult{err: err}
		} else {
			r.readsPending = append(r.readsPending, pendingRead{read.Index, ch})
		}
	}
	kept := r.readsPending[:0]
	for _, p := range r.readsPending {
		if p.index <= r.applied {
			p.done <- readResult{index: p.index}
		} else {
			kept = append(kept, p)
		}
	}
	r.readsPending = kept
	changed := rd.StateChanged || rd.State != r.state
	r.state = rd.State
	var waiters []chan struct{}
	if changed {
		waiters, r.stateWaiters = r.stateWaiters, nil
	}
	r.mu.Unlock()
	for _, ch := range waiters {
		close(ch)
	}
	if changed && r.opts.OnStateChange != nil {
		r.opts.OnStateChange(rd.State)
	}
	if rd.SnapshotWanted && r.opts.AutoSnapshot && r.autoSnapshot.CompareAndSwap(false, true) {
		r.startSnapshot(func(res snapshotResult) {
			r.autoSnapshot.Store(false)
			if res.err != nil && !errors.Is(res.err, ErrStaleSnapshot) {
				r.log.Warn("embraft: snapshot the node asked for failed", "err", res.err)
			} else if res.err == nil {
				r.log.Info("snapshot taken", "index", res.index)
			}
		})
	}
	return nil
}

func slogLevel(l LogLevel) slog.Level {
	switch l {
	case LogDebug:
		return slog.LevelDebug
	case LogTrace:
		return SlogLevelTrace
	}
	return slog.LevelInfo
}

// ack acknowledges applied entries. A full input queue leaves the ack to
// the next batch's (acks may lag and cover earlier ones), or to ackThrough.
func (r *Raft) ack(index uint64) {
	if r.node.AckApplied(index) == nil && index > r.acked {
		r.acked = index
	}
}

// ackThrough makes sure the node was told about everything applied
// through index, as a snapshot at index requires.
func (r *Raft) ackThrough(index uint64) error {
	if r.acked >= index {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := retryBusy(ctx, func() error { return r.node.AckApplied(index) }); err != nil {
		return err
	}
	r.acked = index
	return nil
}

// snapshotBuffer is the buffer between a state machine's snapshot writes
// and the library's file.
const snapshotBuffer = 256 << 10

// startSnapshot runs on the driver goroutine: it begins a snapshot at the
// applied index and has the state machine write it (or capture it, for a
// SnapshotPreparer) right away, between batches; a goroutine then
// finishes it. reply gets the outcome, on whichever goroutine is last.
func (r *Raft) startSnapshot(reply func(snapshotResult)) {
	index := r.Applied()
	if index == 0 {
		reply(snapshotResult{err: errors.New("embraft: nothing applied to snapshot")})
		return
	}
	if err := r.ackThrough(index); err != nil {
		reply(snapshotResult{err: err})
		return
	}
	w, err := r.node.BeginSnapshot(index)
	if err != nil {
		reply(snapshotResult{err: err})
		return
	}
	var write func(io.Writer) error
	if p, ok := r.opts.StateMachine.(SnapshotPreparer); ok {
		write, err = p.PrepareSnapshot()
	} else {
		err = writeSnapshot(w, r.opts.StateMachine.Snapshot)
	}
	if err != nil {
		w.Abort()
		reply(snapshotResult{err: fmt.Errorf("embraft: state machine snapshot: %w", err)})
		return
	}
	r.finishing.Add(1)
	go func() {
		defer r.finishing.Done()
		if write != nil {
			if err := writeSnapshot(w, write); err != nil {
				w.Abort()
				reply(snapshotResult{err: fmt.Errorf("embraft: state machine snapshot: %w", err)})
				return
			}
		}
		if err := w.Finish(); err != nil {
			reply(snapshotResult{err: err})
			return
		}
		reply(snapshotResult{index: index})
	}()
}

// writeSnapshot has write serialize the state into w, buffered.
func writeSnapshot(w *SnapshotWriter, write func(io.Writer) error) error {
	bw := bufio.NewWriterSize(w, snapshotBuffer)
	if err := write(bw); err != nil {
		return err
	}
	return bw.Flush()
}

// restore runs on the driver goroutine, before the batch's entries.
func (r *Raft) restore(s *SnapshotRestore) error {
	defer s.File.Close()
	if err := r.opts.StateMachine.Restore(bufio.NewReaderSize(s.File, snapshotBuffer)); err != nil {
		return fmt.Errorf("embraft: restoring the snapshot at index %d: %w", s.Index, err)
	}
	r.ack(s.Index)
	r.mu.Lock()
	r.applied = s.Index
	r.mu.Unlock()
	r.log.Info("restored snapshot", "index", s.Index, "term", s.Term)
	return nil
}
