package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"errors"
	"fmt"
)

// Code is a status code of the C API. Every code is also an error, so
// callers test failures with errors.Is(err, embraft.ErrBusy).
type Code int

// Error describes the code with the library's own text.
func (s Code) Error() string {
	return "embraft: " + C.GoString(C.embraft_status_str(C.embraft_status(s)))
}

// Status codes returned by the library (docs/FFI.md, "Status codes").
const (
	ErrNullArgument    Code = C.EMBRAFT_ERR_NULL_ARGUMENT
	ErrInvalidArgument Code = C.EMBRAFT_ERR_INVALID_ARGUMENT
	ErrInvalidConfig   Code = C.EMBRAFT_ERR_INVALID_CONFIG
	ErrBusy            Code = C.EMBRAFT_ERR_BUSY
	ErrTimedOut        Code = C.EMBRAFT_TIMED_OUT
	ErrMalformed       Code = C.EMBRAFT_ERR_MALFORMED_MESSAGE
	ErrWrongRecipient  Code = C.EMBRAFT_ERR_WRONG_RECIPIENT
	ErrTooLarge        Code = C.EMBRAFT_ERR_TOO_LARGE
	ErrNotDelivered    Code = C.EMBRAFT_ERR_NOT_DELIVERED
	ErrOutOfRange      Code = C.EMBRAFT_ERR_OUT_OF_RANGE
	ErrDirectoryLocked Code = C.EMBRAFT_ERR_DIRECTORY_LOCKED
	ErrStorage         Code = C.EMBRAFT_ERR_STORAGE
	ErrNodeFailed      Code = C.EMBRAFT_ERR_NODE_FAILED
	ErrResource        Code = C.EMBRAFT_ERR_RESOURCE
	ErrPanic           Code = C.EMBRAFT_ERR_PANIC
	// ErrNotApplied: BeginSnapshot named an index not yet acknowledged as
	// applied (Node.AckApplied).
	ErrNotApplied Code = C.EMBRAFT_ERR_NOT_APPLIED
	// ErrStaleSnapshot: a snapshot was begun or finished at an index at or
	// below the node's latest snapshot (taken since, or installed from the
	// leader). Nothing is lost: the newer snapshot covers it.
	ErrStaleSnapshot Code = C.EMBRAFT_ERR_STALE_SNAPSHOT
	// ErrCorrupt: the data directory holds damaged or missing data (a
	// snapshot file the WAL names fails its checks, or the WAL itself).
	ErrCorrupt Code = C.EMBRAFT_ERR_CORRUPT
	// ErrUnknownGroup: a runtime call named a group the runtime does not
	// run.
	ErrUnknownGroup Code = C.EMBRAFT_ERR_UNKNOWN_GROUP
	// ErrGroupExists: a runtime was asked to start a group it already runs.
	ErrGroupExists Code = C.EMBRAFT_ERR_GROUP_EXISTS
)

// Errors of the Go layer.
var (
	// ErrClosed: the node or raft was closed.
	ErrClosed = errors.New("embraft: closed")
	// ErrNotLeader: a proposal was dropped because this node does not lead.
	ErrNotLeader = errors.New("embraft: not the leader")
	// ErrDropped: a proposal was dropped and is certainly not in the log
	// (superseded by another leader's entry, refused membership change...).
	ErrDropped = errors.New("embraft: proposal dropped")
	// ErrUnknownOutcome: whether the proposal committed cannot be known
	// (a snapshot covered its index).
	ErrUnknownOutcome = errors.New("embraft: proposal outcome unknown")
	// ErrNoLeader: a read index could not be had because no leader is known.
	ErrNoLeader = errors.New("embraft: no leader")
	// ErrLeadershipLost: the leader lost leadership while serving a read.
	ErrLeadershipLost = errors.New("embraft: leadership lost")
	// ErrReadRefused: the read was refused (for example a leader that has
	// not committed an entry of its term yet).
	ErrReadRefused = errors.New("embraft: read refused")
	// ErrReadBusy: too many reads were in progress on the node; retry once
	// some have completed.
	ErrReadBusy = errors.New("embraft: too many reads in progress")
)

// CallError is a failed call into the library: the operation, the status
// code and the handle's last error message. It unwraps to its Code.
type CallError struct {
	Op      string
	Code    Code
	Message string
}

func (e *CallError) Error() string {
	if e.Message == "" {
		return fmt.Sprintf("%s: %v", e.Op, e.Code)
	}
	return fmt.Sprintf("%s: %v: %s", e.Op, e.Code, e.Message)
}

func (e *CallError) Unwrap() error { return e.Code }

// ProposalError is a proposal outcome other than committed. It unwraps to
// ErrNotLeader, ErrDropped or ErrUnknownOutcome.
type ProposalError struct {
	Outcome uint32 // EMBRAFT_PROPOSAL_*
	reason  error
}

func (e *ProposalError) Error() string {
	return fmt.Sprintf("%v (outcome %d)", e.reason, e.Outcome)
}

func (e *ProposalError) Unwrap() error { return e.reason }

func outcomeError(outcome uint32) error {
	switch outcome {
	case C.EMBRAFT_PROPOSAL_COMMITTED:
		return nil
	case C.EMBRAFT_PROPOSAL_DROPPED_NOT_LEADER, C.EMBRAFT_PROPOSAL_DROPPED_TRANSFER:
		return &ProposalError{outcome, ErrNotLeader}
	case C.EMBRAFT_PROPOSAL_UNKNOWN:
		return &ProposalError{outcome, ErrUnknownOutcome}
	default:
		return &ProposalError{outcome, ErrDropped}
	}
}

func readError(result uint32) error {
	switch result {
	case C.EMBRAFT_READ_OK:
		return nil
	case C.EMBRAFT_READ_NO_LEADER:
		return ErrNoLeader
	case C.EMBRAFT_READ_LEADERSHIP_LOST:
		return ErrLeadershipLost
	case C.EMBRAFT_READ_BUSY:
		return ErrReadBusy
	default:
		return ErrReadRefused
	}
}
