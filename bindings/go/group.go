package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"context"
	"runtime"
	"sync"
)

// Group is one Raft group running on a Runtime. Its methods Propose,
// ProposeConfChange, ProposeMembership, ReadIndex, TransferLeader, State,
// WaitLeader, Applied, Status, Metrics and Snapshot are those of Raft,
// with the same meaning for this group (node ids are runtime ids), so a
// host can code against an interface both satisfy.
//
// The group's state machine is called on the group's apply goroutine, one
// call at a time, in log order; different groups apply concurrently.
type Group struct {
	*replica
	id uint64
	rt *Runtime
	// lastState is the state the driver last saw (driver only): a batch
	// names a group's state only when it changed.
	lastState State

	// The apply queue: the driver appends each batch's part, and
	// functions to run between batches (snapshots); one goroutine, started
	// when work arrives and gone when the queue is empty, runs them in
	// order.
	qmu     sync.Mutex
	queue   []func()
	running bool
	stopped bool
	drained sync.WaitGroup
}

// groupPart is one group's share of a runtime batch.
type groupPart struct {
	ready      Ready
	hasState   bool
	restoreErr error
}

// ID returns the group's id.
func (g *Group) ID() uint64 { return g.id }

// Runtime returns the runtime the group runs on.
func (g *Group) Runtime() *Runtime { return g.rt }

// dispatch queues the group's part of a batch (driver only).
func (g *Group) dispatch(p *groupPart) {
	if !p.hasState {
		p.ready.State = g.lastState
	}
	g.lastState = p.ready.State
	if !g.enqueue(func() { g.apply(p) }) && p.ready.Restore != nil {
		p.ready.Restore.File.Close()
	}
}

// apply runs on the apply goroutine.
func (g *Group) apply(p *groupPart) {
	err := p.restoreErr
	if err == nil && g.err() == nil {
		err = g.handle(&p.ready)
	}
	if err != nil {
		if p.ready.Restore != nil {
			p.ready.Restore.File.Close()
		}
		g.halt(err)
	}
}

// halt stops a group whose state machine cannot follow its log (a
// snapshot that cannot be restored): entries must not be applied on top
// of the wrong state. Calls on the group fail with err; StartGroup may run
// it again.
func (g *Group) halt(err error) {
	g.log.Error("embraft: group stopped", "err", err)
	g.fail(err)
	g.qmu.Lock()
	g.stopped = true
	g.queue = nil
	g.qmu.Unlock()
	if g.rt.forget(g) {
		g.rt.h.call("embraft_runtime_stop_group", func(p *C.embraft_runtime) C.embraft_status {
			return C.embraft_runtime_stop_group(p, C.uint64_t(g.id))
		})
	}
}

// enqueue adds f to the apply queue, starting the apply goroutine if it is
// not running; false once the group stopped.
func (g *Group) enqueue(f func()) bool {
	g.qmu.Lock()
	defer g.qmu.Unlock()
	if g.stopped {
		return false
	}
	g.queue = append(g.queue, f)
	if !g.running {
		g.running = true
		g.drained.Add(1)
		go g.drain()
	}
	return true
}

func (g *Group) drain() {
	defer g.drained.Done()
	for {
		g.qmu.Lock()
		if len(g.queue) == 0 || g.stopped {
			g.running = false
			g.qmu.Unlock()
			return
		}
		f := g.queue[0]
		g.queue[0] = nil
		g.queue = g.queue[1:]
		g.qmu.Unlock()
		f()
	}
}

// stop ends the apply queue and waits for the apply goroutine and the
// snapshots being finished. Not on the apply goroutine.
func (g *Group) stop() {
	g.qmu.Lock()
	g.stopped = true
	g.queue = nil
	g.qmu.Unlock()
	g.drained.Wait()
	g.finishing.Wait()
}

// onApplyGoroutine runs f on the apply goroutine between batches.
func (g *Group) onApplyGoroutine(_ context.Context, f func()) error {
	if !g.enqueue(f) {
		if err := g.err(); err != nil {
			return err
		}
		return ErrClosed
	}
	return nil
}

// groupInputs are one group's calls of a runtime, as a replica makes them.
type groupInputs struct {
	h     *runtimeHandle
	group uint64
}

func (i groupInputs) call(op string, f func(p *C.embraft_runtime, group C.uint64_t) C.embraft_status) error {
	return i.h.call(op, func(p *C.embraft_runtime) C.embraft_status { return f(p, C.uint64_t(i.group)) })
}

func (i groupInputs) propose(data []byte) (uint64, error) {
	var id C.uint64_t
	err := i.call("embraft_runtime_propose", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		ptr, size := bytesArg(data)
		return C.embraft_runtime_propose(p, g, ptr, size, &id)
	})
	runtime.KeepAlive(data)
	return uint64(id), err
}

func (i groupInputs) proposeConfChange(change ConfChange, node uint64) (uint64, error) {
	var id C.uint64_t
	err := i.call("embraft_runtime_propose_conf_change", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_propose_conf_change(p, g, C.uint32_t(change), C.uint64_t(node), &id)
	})
	return uint64(id), err
}

func (i groupInputs) proposeMembership(voters, learners []uint64) (uint64, error) {
	var id C.uint64_t
	err := i.call("embraft_runtime_propose_membership", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		v, vn := idsArg(voters)
		l, ln := idsArg(learners)
		return C.embraft_runtime_propose_membership(p, g, v, vn, l, ln, &id)
	})
	runtime.KeepAlive(voters)
	runtime.KeepAlive(learners)
	return uint64(id), err
}

func (i groupInputs) readIndex(context uint64) error {
	return i.call("embraft_runtime_read_index", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_read_index(p, g, C.uint64_t(context))
	})
}

func (i groupInputs) transferLeader(to uint64) error {
	return i.call("embraft_runtime_transfer_leader", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_transfer_leader(p, g, C.uint64_t(to))
	})
}

func (i groupInputs) ackApplied(index uint64) error {
	return i.call("embraft_runtime_ack_applied", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_ack_applied(p, g, C.uint64_t(index))
	})
}

func (i groupInputs) beginSnapshot(index uint64) (*SnapshotWriter, error) {
	var ptr *C.embraft_snapshot_writer
	err := i.call("embraft_runtime_snapshot_begin", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_snapshot_begin(p, g, C.uint64_t(index), &ptr)
	})
	if err != nil {
		return nil, err
	}
	return newSnapshotWriter(ptr, i.h, index), nil
}

func (i groupInputs) status() (Status, error) {
	var report *C.embraft_status_report
	err := i.call("embraft_runtime_status", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_status(p, g, &report)
	})
	if err != nil {
		return Status{}, err
	}
	defer C.embraft_status_report_free(report)
	return copyStatus(report), nil
}

func (i groupInputs) metrics() (Metrics, error) {
	var out C.embraft_metrics
	err := i.call("embraft_runtime_metrics", func(p *C.embraft_runtime, g C.uint64_t) C.embraft_status {
		return C.embraft_runtime_metrics(p, g, &out)
	})
	if err != nil {
		return Metrics{}, err
	}
	return copyMetrics(&out), nil
}
