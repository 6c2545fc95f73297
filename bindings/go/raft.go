package embraft

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"sync"
	"time"
)

// StateMachine is the host's replicated state. Its methods are called one
// at a time, in log order: by the driver goroutine of a Raft, by the apply
// goroutine of a Runtime's Group (each group has its own, so different
// groups' state machines run concurrently).
type StateMachine interface {
	// Apply applies one committed normal entry (noop and membership
	// entries are handled by the library and not passed on).
	Apply(e Entry)
	// Snapshot writes the state as of the last applied entry to w, in any
	// format Restore reads back. It is called on the goroutine that
	// applies (see above), between batches, so no Apply runs meanwhile and
	// the state is exactly the one at the snapshot's index; w is buffered
	// and goes straight to the library's snapshot file. Batches wait
	// while it runs: a large
	// state machine that can capture a consistent view cheaply implements
	// SnapshotPreparer as well.
	Snapshot(w io.Writer) error
	// Restore replaces the whole state with the one a Snapshot (on this
	// node or another) wrote, read from r. It is called before the
	// entries that follow the snapshot are applied: after the node (or
	// group) installed a snapshot from the leader, or on a restart from a
	// compacted log. An error stops the Raft, or the Group (entries cannot
	// be applied on top of the wrong state).
	Restore(r io.Reader) error
}

// SnapshotPreparer is optionally implemented by a StateMachine that can be
// serialized concurrently with Apply. PrepareSnapshot runs on the
// goroutine that applies, between batches, like Snapshot would, and
// captures the state as of the last applied entry cheaply (a copy of a
// small index, a copy-on-write view, a database read transaction); the
// function it returns then writes that captured state to w on another
// goroutine while entries go on being applied. The function is called
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
// ReadIndex; a ticker goroutine drives its clock. Its methods Propose,
// ProposeConfChange, ProposeMembership, ReadIndex, TransferLeader, State,
// WaitLeader, Applied, Status, Metrics and Snapshot are those of a Group
// of a Runtime too.
type Raft struct {
	*replica
	node    *Node
	opts    Options
	closing chan struct{}
	done    sync.WaitGroup
	closeMu sync.Once
	// calls are functions to run on the driver goroutine between batches
	// (snapshots).
	calls chan func()
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
		replica: newReplica(opts.ID, nodeInputs{node}, opts.StateMachine, opts.OnStateChange,
			opts.AutoSnapshot, opts.AppliedIndex, logger),
		node: node, opts: opts,
		closing: make(chan struct{}),
		calls:   make(chan func()),
	}
	r.onApplier = r.onDriver
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

// onDriver runs f on the driver goroutine between batches.
func (r *Raft) onDriver(ctx context.Context, f func()) error {
	select {
	case r.calls <- f:
		return nil
	case <-r.closing:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
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

// Step implements Host.
func (r *Raft) Step(msg []byte) error { return r.node.Step(msg) }

// ReportUnreachable implements Host.
func (r *Raft) ReportUnreachable(peer uint64) { r.node.ReportUnreachable(peer) }

func (r *Raft) tickLoop() {
	defer r.done.Done()
	tickEvery(r.opts.TickInterval, r.closing, func() {
		// A full queue drops the tick: the driver is behind anyway.
		r.node.Tick()
	})
}

// tickEvery calls tick every interval until closing is closed.
func tickEvery(interval time.Duration, closing <-chan struct{}, tick func()) {
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		select {
		case <-closing:
			return
		case <-ticker.C:
			tick()
		}
	}
}

// wakeInterval bounds how long a driver waits for a batch before it looks
// at Close and snapshot requests.
const wakeInterval = 50 * time.Millisecond

// readinessWaiter waits for a readiness descriptor (a node's or a
// runtime's duplicate) in Go's network poller, so no OS thread sits
// blocked in a cgo call and the wake-up is an ordinary goroutine wake-up.
// wait returns false when the descriptor cannot be polled by Go (not
// expected on Linux, where it is an eventfd): the caller then waits in C.
func readinessWaiter(f *os.File) (wait func() bool, err error) {
	raw, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	return func() bool {
		// The poller remembers a readiness edge that came after the last
		// poll, so no batch is missed; a stale edge only costs one empty
		// poll.
		if f.SetReadDeadline(time.Now().Add(wakeInterval)) != nil {
			return false
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
	}, nil
}

// driveLoop takes batches without waiting in C: see readinessWaiter.
func (r *Raft) driveLoop() {
	defer r.done.Done()
	if r.node.Inputs() != nil {
		r.driveInline()
		return
	}
	readiness, err := r.node.ReadinessFile()
	var wait func() bool
	if err == nil {
		defer readiness.Close()
		wait, err = readinessWaiter(readiness)
	}
	if err != nil {
		r.log.Error("embraft: readiness descriptor", "err", err)
		r.fail(err)
		return
	}
	r.driveWith(func() bool {
		if !wait() {
			_, ok := r.pollAndHandle(wakeInterval)
			return ok
		}
		return true
	})
}

// driveWith is the driver's loop: it runs requested calls, polls and
// handles batches, and when none is pending calls wait, which returns
// false once the driver must stop.
func (r *Raft) driveWith(wait func() bool) {
	for {
		select {
		case <-r.closing:
			return
		case f := <-r.calls:
			f()
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
		case f := <-r.calls:
			f()
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

// handle runs one batch on the driver goroutine: the log lines and
// messages, then the replica's part. An error (a snapshot that cannot be
// restored) stops the driver.
func (r *Raft) handle(rd *Ready) error {
	logLines(r.log, rd.Logs)
	if r.opts.Transport != nil {
		for _, m := range rd.Messages {
			r.opts.Transport.Send(m.To, m.Data)
		}
	}
	return r.replica.handle(rd)
}

// logLines passes the library's log lines on to log.
func logLines(log *slog.Logger, lines []LogLine) {
	for _, line := range lines {
		log.Log(context.Background(), slogLevel(line.Level), line.Text)
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

// nodeInputs are a Node's calls as a replica makes them.
type nodeInputs struct{ n *Node }

func (i nodeInputs) propose(data []byte) (uint64, error) { return i.n.Propose(data) }
func (i nodeInputs) proposeConfChange(change ConfChange, node uint64) (uint64, error) {
	return i.n.ProposeConfChange(change, node)
}
func (i nodeInputs) proposeMembership(voters, learners []uint64) (uint64, error) {
	return i.n.ProposeMembership(voters, learners)
}
func (i nodeInputs) readIndex(context uint64) error { return i.n.ReadIndex(context) }
func (i nodeInputs) transferLeader(to uint64) error { return i.n.TransferLeader(to) }
func (i nodeInputs) ackApplied(index uint64) error  { return i.n.AckApplied(index) }
func (i nodeInputs) status() (Status, error)        { return i.n.Status() }
func (i nodeInputs) metrics() (Metrics, error)      { return i.n.Metrics() }
func (i nodeInputs) beginSnapshot(index uint64) (*SnapshotWriter, error) {
	return i.n.BeginSnapshot(index)
}
