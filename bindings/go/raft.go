package embraft

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
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
	// Snapshot serializes the state as of the last applied entry.
	Snapshot() ([]byte, error)
	// Restore replaces the state with a snapshot's.
	Restore(data []byte) error
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
	// SnapshotChunkSize is the size of the chunks snapshots are streamed in
	// (default and maximum 1 MiB, per WIRE.md).
	SnapshotChunkSize int
}

const maxSnapshotChunk = 1 << 20

// Raft runs a Node: a driver goroutine polls its batches, sends messages
// through the transport, applies committed entries to the state machine
// and acknowledges them, and completes the futures of Propose and
// ReadIndex; a ticker goroutine drives its clock.
type Raft struct {
	node    *Node
	opts    Options
	log     *slog.Logger
	snaps   *snapshotStore
	closing chan struct{}
	done    sync.WaitGroup
	closeMu sync.Once

	readContext atomic.Uint64

	// mu guards the driver's bookkeeping shared with callers.
	mu        sync.Mutex
	applied   uint64
	appliedT  uint64 // term of the entry at applied
	state     State
	proposals map[uint64]chan proposalResult
	reads     map[uint64]chan readResult
	// readsPending wait for the state machine to reach their index.
	readsPending []pendingRead
	stateWaiters []chan struct{}
	snapshotReq  chan chan error
	failed       error
	// incoming is the snapshot being received from the leader.
	incoming *incomingSnapshot
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
	if opts.SnapshotChunkSize <= 0 || opts.SnapshotChunkSize > maxSnapshotChunk {
		opts.SnapshotChunkSize = maxSnapshotChunk
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.Default()
	}
	logger = logger.With("node", opts.ID)
	snaps, err := openSnapshotStore(opts.DataDir)
	if err != nil {
		return nil, err
	}
	node, err := NewNode(opts.Config)
	if err != nil {
		return nil, err
	}
	r := &Raft{
		node: node, opts: opts, log: logger, snaps: snaps,
		closing:     make(chan struct{}),
		proposals:   make(map[uint64]chan proposalResult),
		reads:       make(map[uint64]chan readResult),
		snapshotReq: make(chan chan error),
		applied:     opts.AppliedIndex,
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

// Snapshot saves a snapshot of the state machine at the applied index and
// compacts the log through it. It runs on the driver goroutine, between
// batches, so the snapshot is consistent with the index it is taken at.
func (r *Raft) Snapshot(ctx context.Context) error {
	done := make(chan error, 1)
	select {
	case r.snapshotReq <- done:
	case <-r.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
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
	for {
		select {
		case <-r.closing:
			return
		case done := <-r.snapshotReq:
			done <- r.takeSnapshot()
			continue
		default:
		}
		ready, err := r.node.Poll(0)
		if err != nil {
			r.log.Error("embraft node stopped", "err", err)
			r.fail(err)
			<-r.closing
			return
		}
		if ready != nil {
			r.handle(ready)
			continue
		}
		// Nothing pending: wait for the descriptor to become readable. The
		// poller remembers a readiness edge that came after the Poll above,
		// so no batch is missed; a stale edge only costs one empty Poll.
		if readiness.SetReadDeadline(time.Now().Add(wakeInterval)) != nil {
			// Not pollable by the runtime (not expected on Linux, where it
			// is an eventfd): wait in C instead.
			if ready, err := r.node.Poll(wakeInterval); err == nil && ready != nil {
				r.handle(ready)
			}
			continue
		}
		waited := false
		raw.Read(func(uintptr) bool {
			if waited {
				return true
			}
			waited = true
			return false
		})
	}
}

func (r *Raft) handle(rd *Ready) {
	for _, line := range rd.Logs {
		r.log.Log(context.Background(), slogLevel(line.Level), line.Text)
	}
	if r.opts.Transport != nil {
		for _, m := range rd.Messages {
			r.opts.Transport.Send(m.To, m.Data)
		}
	}
	for _, chunk := range rd.SnapshotChunks {
		r.receiveChunk(chunk)
	}
	if rd.Restore != nil {
		r.restore(*rd.Restore)
	}
	var last, lastTerm uint64
	for _, e := range rd.Entries {
		if e.Kind == EntryNormal {
			r.opts.StateMachine.Apply(e)
		}
		last, lastTerm = e.Index, e.Term
	}
	if last > 0 {
		r.node.AckApplied(last)
	}
	for _, s := range rd.SnapshotSends {
		go r.sendSnapshot(s)
	}

	r.mu.Lock()
	if last > 0 {
		r.applied, r.appliedT = last, lastTerm
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

// takeSnapshot runs on the driver goroutine.
func (r *Raft) takeSnapshot() error {
	r.mu.Lock()
	index, term := r.applied, r.appliedT
	r.mu.Unlock()
	if index == 0 {
		return errors.New("embraft: nothing applied to snapshot")
	}
	data, err := r.opts.StateMachine.Snapshot()
	if err != nil {
		return fmt.Errorf("embraft: state machine snapshot: %w", err)
	}
	if err := r.snaps.save(SnapshotRef{index, term}, data); err != nil {
		return err
	}
	return r.node.Compact(index)
}

// restore runs on the driver goroutine, before the batch's entries.
func (r *Raft) restore(ref SnapshotRef) {
	data, err := r.snaps.load(ref.Index)
	if err == nil {
		err = r.opts.StateMachine.Restore(data)
	}
	if err != nil {
		// The state machine cannot go on without it; stop rather than
		// apply entries on top of the wrong state.
		r.log.Error("embraft: restoring snapshot failed", "index", ref.Index, "err", err)
		r.fail(err)
		return
	}
	r.node.AckApplied(ref.Index)
	r.mu.Lock()
	r.applied, r.appliedT = ref.Index, ref.Term
	r.mu.Unlock()
	r.log.Info("restored snapshot", "index", ref.Index, "term", ref.Term)
}

// sendSnapshot streams the saved snapshot to a peer, off the driver
// goroutine since it may be large.
func (r *Raft) sendSnapshot(s SnapshotSend) {
	data, err := r.snaps.load(s.Index)
	if err != nil {
		r.log.Warn("embraft: no snapshot to send", "peer", s.Peer, "index", s.Index, "err", err)
		r.node.ReportSnapshot(s.Peer, false)
		return
	}
	sum := crc32.ChecksumIEEE(data)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for offset := 0; offset < len(data) || offset == 0; {
		end := min(offset+r.opts.SnapshotChunkSize, len(data))
		chunk := data[offset:end]
		err := retryBusy(ctx, func() error {
			return r.node.SendSnapshotChunk(s.Peer, s.Index, uint64(offset), uint64(len(data)), sum, chunk)
		})
		if err != nil {
			r.node.ReportSnapshot(s.Peer, false)
			return
		}
		if end == len(data) {
			break
		}
		offset = end
	}
	r.node.ReportSnapshot(s.Peer, true)
}

type incomingSnapshot struct {
	index uint64
	total uint64
	sum   uint32
	data  []byte
}

// receiveChunk assembles a streamed snapshot; once complete and verified
// it is saved durably and handed to the node.
func (r *Raft) receiveChunk(c SnapshotChunk) {
	in := r.incoming
	if in == nil || in.index != c.Index || c.Offset == 0 {
		in = &incomingSnapshot{index: c.Index, total: c.Total, sum: c.Checksum}
		r.incoming = in
	}
	if c.Offset != uint64(len(in.data)) {
		return // out of order: the leader resends from what we answered
	}
	in.data = append(in.data, c.Data...)
	if uint64(len(in.data)) < in.total {
		return
	}
	r.incoming = nil
	if crc32.ChecksumIEEE(in.data) != in.sum {
		r.log.Warn("embraft: snapshot checksum mismatch", "index", in.index)
		return
	}
	// The term is not known here; the restore request carries it and the
	// store keys snapshots by index.
	if err := r.snaps.save(SnapshotRef{Index: in.index}, in.data); err != nil {
		r.log.Error("embraft: saving received snapshot", "err", err)
		return
	}
	r.node.RestoreSnapshot(in.index)
}
