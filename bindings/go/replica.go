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

// replicaInputs are the library calls of one replica: a Node's, or one
// group's of a Runtime.
type replicaInputs interface {
	propose(data []byte) (uint64, error)
	proposeConfChange(change ConfChange, node uint64) (uint64, error)
	proposeMembership(voters, learners []uint64) (uint64, error)
	readIndex(context uint64) error
	transferLeader(to uint64) error
	ackApplied(index uint64) error
	beginSnapshot(index uint64) (*SnapshotWriter, error)
	status() (Status, error)
	metrics() (Metrics, error)
}

// replica is the bookkeeping one Raft replica needs on the host's side,
// shared by Raft (a node) and Group (a group of a Runtime): the futures of
// proposals and reads, the applied index, the state and its watchers, and
// snapshots taken and restored. Its applier (Raft's driver goroutine, a
// Group's apply goroutine) calls handle with the replica's part of each
// batch, in order, and runs the functions given to onApplier between
// batches.
type replica struct {
	self          uint64 // this replica's node id (a runtime's id for a group)
	in            replicaInputs
	sm            StateMachine
	onStateChange func(State)
	autoSnapshots bool
	log           *slog.Logger
	// onApplier runs f on the applier between batches; it fails when the
	// replica stopped or ctx ended first.
	onApplier func(ctx context.Context, f func()) error

	// finishing counts the goroutines finishing snapshots; the owner
	// waits for them before it frees the library's handle.
	finishing sync.WaitGroup
	// autoSnapshot is set while a snapshot asked for by the library runs,
	// so that repeated asks do not pile snapshots up.
	autoSnapshot atomic.Bool
	// acked is the highest index acknowledged to the library (applier
	// only).
	acked uint64

	readContext atomic.Uint64

	// mu guards the bookkeeping shared between the applier and callers.
	mu        sync.Mutex
	applied   uint64
	state     State
	proposals map[uint64]chan proposalResult
	reads     map[uint64]chan readResult
	// readsPending wait for the state machine to reach their index.
	readsPending []pendingRead
	stateWaiters []chan struct{}
	failed       error
	// stopped is closed with the first fail: a request queued for the
	// applier may then never run.
	stopped chan struct{}
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

func newReplica(self uint64, in replicaInputs, sm StateMachine, onStateChange func(State),
	autoSnapshots bool, applied uint64, log *slog.Logger) *replica {
	return &replica{
		self: self, in: in, sm: sm, onStateChange: onStateChange, autoSnapshots: autoSnapshots, log: log,
		proposals: make(map[uint64]chan proposalResult),
		reads:     make(map[uint64]chan readResult),
		applied:   applied,
		acked:     applied,
		stopped:   make(chan struct{}),
	}
}

// fail completes every waiting call with err; later calls fail with the
// first error given.
func (p *replica) fail(err error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failed == nil {
		p.failed = err
		close(p.stopped)
	}
	for id, ch := range p.proposals {
		ch <- proposalResult{err: err}
		delete(p.proposals, id)
	}
	for ctx, ch := range p.reads {
		ch <- readResult{err: err}
		delete(p.reads, ctx)
	}
	for _, r := range p.readsPending {
		r.done <- readResult{err: err}
	}
	p.readsPending = nil
}

// err returns why the replica stopped, nil while it runs.
func (p *replica) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.failed
}

// retryBusy repeats an input while the library's queue is full: the
// driver is draining it, so the wait is short.
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
// here (so the caller reads its own write afterwards).
func (p *replica) propose(ctx context.Context, submit func() (uint64, error)) (uint64, error) {
	ch := make(chan proposalResult, 1)
	err := retryBusy(ctx, func() error {
		// The lock is held across the submission so that the applier,
		// which takes it to complete outcomes, cannot see the outcome
		// before the waiter is registered.
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.failed != nil {
			return p.failed
		}
		id, err := submit()
		if err == nil {
			p.proposals[id] = ch
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
// and applied here. On ctx's end the outcome is unknown.
func (p *replica) Propose(ctx context.Context, data []byte) (uint64, error) {
	return p.propose(ctx, func() (uint64, error) { return p.in.propose(data) })
}

// ProposeConfChange proposes one membership change and waits until it is
// applied here.
func (p *replica) ProposeConfChange(ctx context.Context, change ConfChange, node uint64) (uint64, error) {
	return p.propose(ctx, func() (uint64, error) { return p.in.proposeConfChange(change, node) })
}

// ProposeMembership moves to exactly these voters and learners and waits
// until the (joint) change is applied here.
func (p *replica) ProposeMembership(ctx context.Context, voters, learners []uint64) (uint64, error) {
	return p.propose(ctx, func() (uint64, error) { return p.in.proposeMembership(voters, learners) })
}

// ReadIndex returns once the state machine here has applied everything
// committed before the call, so a read of local state that follows is
// linearizable. It returns the read index.
func (p *replica) ReadIndex(ctx context.Context) (uint64, error) {
	ch := make(chan readResult, 1)
	readCtx := p.readContext.Add(1)
	p.mu.Lock()
	if p.failed != nil {
		p.mu.Unlock()
		return 0, p.failed
	}
	p.reads[readCtx] = ch
	p.mu.Unlock()
	err := retryBusy(ctx, func() error { return p.in.readIndex(readCtx) })
	if err == nil {
		select {
		case res := <-ch:
			return res.index, res.err
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	p.mu.Lock()
	delete(p.reads, readCtx)
	p.mu.Unlock()
	return 0, err
}

// TransferLeader asks this replica (the leader) to hand leadership to to
// and waits until it sees to lead.
func (p *replica) TransferLeader(ctx context.Context, to uint64) error {
	if err := p.in.transferLeader(to); err != nil {
		return err
	}
	for {
		state, changed := p.watchState()
		if state.Leader == to && state.Role != Leader || to == p.self && state.Role == Leader {
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
func (p *replica) State() State {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.state
}

// watchState returns the current state and a channel closed at its next
// change.
func (p *replica) watchState() (State, chan struct{}) {
	p.mu.Lock()
	defer p.mu.Unlock()
	ch := make(chan struct{})
	p.stateWaiters = append(p.stateWaiters, ch)
	return p.state, ch
}

// WaitLeader waits until some leader is known and returns it.
func (p *replica) WaitLeader(ctx context.Context) (uint64, error) {
	for {
		state, changed := p.watchState()
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
func (p *replica) Applied() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.applied
}

// Status returns the replica's status report.
func (p *replica) Status() (Status, error) { return p.in.status() }

// Metrics returns what the library measured of this replica since it
// started (Node.Metrics, Runtime.Metrics).
func (p *replica) Metrics() (Metrics, error) { return p.in.metrics() }

// Snapshot takes a snapshot of the state machine at the applied index and
// returns that index once the snapshot's file is durable and queued for
// the library, which then records it in its WAL and compacts the log
// (Status().SnapshotIndex shows it shortly after), streams it to
// followers that need it, and restores from it after a restart.
//
// The state machine writes the snapshot on the goroutine that applies
// entries, between batches, so it matches the index exactly
// (StateMachine.Snapshot; see SnapshotPreparer for writing it off that
// goroutine); the file is then finished on another goroutine, so applying
// does not wait for it. ErrStaleSnapshot means there already is a
// snapshot at or beyond the applied index (nothing new was applied since,
// or one was installed from the leader). If ctx ends first the snapshot
// may still complete.
func (p *replica) Snapshot(ctx context.Context) (uint64, error) {
	if err := p.err(); err != nil {
		return 0, err
	}
	done := make(chan snapshotResult, 1)
	reply := func(res snapshotResult) { done <- res }
	if err := p.onApplier(ctx, func() { p.startSnapshot(reply) }); err != nil {
		return 0, err
	}
	select {
	case res := <-done:
		return res.index, res.err
	case <-p.stopped:
		return 0, p.err()
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

// handle runs the replica's part of one batch on its applier: the
// restore, the entries, then the futures and the state. An error (a
// snapshot that cannot be restored) stops the replica.
func (p *replica) handle(rd *Ready) error {
	if rd.Restore != nil {
		if err := p.restore(rd.Restore); err != nil {
			return err
		}
	}
	var last uint64
	for _, e := range rd.Entries {
		if e.Kind == EntryNormal {
			p.sm.Apply(e)
		}
		last = e.Index
	}
	if last > 0 {
		p.ack(last)
	}

	p.mu.Lock()
	if last > 0 {
		p.applied = last
	}
	for _, o := range rd.Outcomes {
		if ch, ok := p.proposals[o.ProposalID]; ok {
			delete(p.proposals, o.ProposalID)
			ch <- proposalResult{o.Index, outcomeError(o.Outcome)}
		}
	}
	for _, read := range rd.Reads {
		ch, ok := p.reads[read.Context]
		if !ok {
			continue
		}
		delete(p.reads, read.Context)
		if err := readError(read.Result); err != nil {
			ch <- readResult{err: err}
		} else {
			p.readsPending = append(p.readsPending, pendingRead{read.Index, ch})
		}
	}
	kept := p.readsPending[:0]
	for _, r := range p.readsPending {
		if r.index <= p.applied {
			r.done <- readResult{index: r.index}
		} else {
			kept = append(kept, r)
		}
	}
	p.readsPending = kept
	changed := rd.StateChanged || rd.State != p.state
	p.state = rd.State
	var waiters []chan struct{}
	if changed {
		waiters, p.stateWaiters = p.stateWaiters, nil
	}
	p.mu.Unlock()
	for _, ch := range waiters {
		close(ch)
	}
	if changed && p.onStateChange != nil {
		p.onStateChange(rd.State)
	}
	if rd.SnapshotWanted && p.autoSnapshots && p.autoSnapshot.CompareAndSwap(false, true) {
		p.startSnapshot(func(res snapshotResult) {
			p.autoSnapshot.Store(false)
			if res.err != nil && !errors.Is(res.err, ErrStaleSnapshot) {
				p.log.Warn("embraft: snapshot the library asked for failed", "err", res.err)
			} else if res.err == nil {
				p.log.Info("snapshot taken", "index", res.index)
			}
		})
	}
	return nil
}

// ack acknowledges applied entries. A full input queue leaves the ack to
// the next batch's (acks may lag and cover earlier ones), or to ackThrough.
func (p *replica) ack(index uint64) {
	if p.in.ackApplied(index) == nil && index > p.acked {
		p.acked = index
	}
}

// ackThrough makes sure the library was told about everything applied
// through index, as a snapshot at index requires.
func (p *replica) ackThrough(index uint64) error {
	if p.acked >= index {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := retryBusy(ctx, func() error { return p.in.ackApplied(index) }); err != nil {
		return err
	}
	p.acked = index
	return nil
}

// snapshotBuffer is the buffer between a state machine's snapshot writes
// and the library's file.
const snapshotBuffer = 256 << 10

// startSnapshot runs on the applier: it begins a snapshot at the applied
// index and has the state machine write it (or capture it, for a
// SnapshotPreparer) right away, between batches; a goroutine then
// finishes it. reply gets the outcome, on whichever goroutine is last.
func (p *replica) startSnapshot(reply func(snapshotResult)) {
	index := p.Applied()
	if index == 0 {
		reply(snapshotResult{err: errors.New("embraft: nothing applied to snapshot")})
		return
	}
	if err := p.ackThrough(index); err != nil {
		reply(snapshotResult{err: err})
		return
	}
	w, err := p.in.beginSnapshot(index)
	if err != nil {
		reply(snapshotResult{err: err})
		return
	}
	var write func(io.Writer) error
	if prep, ok := p.sm.(SnapshotPreparer); ok {
		write, err = prep.PrepareSnapshot()
	} else {
		err = writeSnapshot(w, p.sm.Snapshot)
	}
	if err != nil {
		w.Abort()
		reply(snapshotResult{err: fmt.Errorf("embraft: state machine snapshot: %w", err)})
		return
	}
	p.finishing.Add(1)
	go func() {
		defer p.finishing.Done()
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

// restore runs on the applier, before the batch's entries.
func (p *replica) restore(s *SnapshotRestore) error {
	defer s.File.Close()
	if err := p.sm.Restore(bufio.NewReaderSize(s.File, snapshotBuffer)); err != nil {
		return fmt.Errorf("embraft: restoring the snapshot at index %d: %w", s.Index, err)
	}
	p.ack(s.Index)
	p.mu.Lock()
	p.applied = s.Index
	p.mu.Unlock()
	p.log.Info("restored snapshot", "index", s.Index, "term", s.Term)
	return nil
}
