package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"fmt"
	"os"
	"unsafe"
)

// Message is an encoded message for peer To, to be delivered unchanged.
type Message struct {
	To   uint64
	Data []byte
}

// Entry is a committed log entry.
type Entry struct {
	Index, Term uint64
	Kind        EntryKind
	Data        []byte
	ProposalID  uint64 // non-zero when proposed on this node
}

// Outcome is the fate of one of this node's proposals.
type Outcome struct {
	ProposalID uint64
	Outcome    uint32 // EMBRAFT_PROPOSAL_*
	Index      uint64
}

// ReadResult answers a read index request.
type ReadResult struct {
	Context uint64
	Result  uint32 // EMBRAFT_READ_*
	Index   uint64
}

// SnapshotRestore asks the host to replace its state machine with a
// snapshot before it applies the batch's entries (after the node installed
// a snapshot streamed by the leader, or restarted from a compacted log).
type SnapshotRestore struct {
	// Index and Term are the log position the snapshot stands for; entries
	// through Index count as delivered.
	Index, Term uint64
	// File is the snapshot's file, opened read-only while the C batch still
	// held it: the bytes a host wrote with a SnapshotWriter (here or on the
	// leader), verified by the library against their CRC-32. The library
	// never rewrites a snapshot file, it only unlinks obsolete ones, so the
	// open file stays readable after the batch is gone. The receiver owns
	// it: read it, then Close it.
	File *os.File
}

// LogLine is one of the library's log lines.
type LogLine struct {
	Level LogLevel
	Text  string
}

// State is the role, leader and term of a node.
type State struct {
	Role   Role
	Leader uint64
	Term   uint64
}

// Ready is a Go copy of one batch of work.
type Ready struct {
	State        State
	StateChanged bool
	Messages     []Message
	Entries      []Entry
	Outcomes     []Outcome
	Reads        []ReadResult
	// Restore, when non-nil, asks the host to restore its state machine
	// from this snapshot before applying Entries.
	Restore *SnapshotRestore
	// SnapshotWanted: the log grew past Config.SnapshotEntries or
	// SnapshotBytes since the last snapshot, and the node asks for one at
	// applied index SnapshotWantedIndex (any later applied index will do).
	SnapshotWanted      bool
	SnapshotWantedIndex uint64
	Logs                []LogLine
}

// goBytes copies a library-owned view; views are never NULL.
func goBytes(p *C.uint8_t, n C.size_t) []byte {
	return C.GoBytes(unsafe.Pointer(p), C.int(n))
}

// copyReady copies everything out of a batch. The getters cannot fail for
// indexes below their counts, so their codes are not checked. It fails only
// when the batch asks for a restore whose file cannot be opened; the rest
// of the batch is returned all the same.
func copyReady(r *C.embraft_ready) (out *Ready, restoreErr error) {
	out = &Ready{}
	var changed C.bool
	C.embraft_ready_state_changed(r, &changed)
	out.StateChanged = bool(changed)
	var role C.uint32_t
	var leader, term C.uint64_t
	C.embraft_ready_state(r, &role, &leader, &term)
	out.State = State{Role(role), uint64(leader), uint64(term)}

	var count C.size_t
	C.embraft_ready_message_count(r, &count)
	if count > 0 {
		out.Messages = make([]Message, count)
		for i := range out.Messages {
			var to C.uint64_t
			var data *C.uint8_t
			var size C.size_t
			C.embraft_ready_message(r, C.size_t(i), &to, &data, &size)
			out.Messages[i] = Message{uint64(to), goBytes(data, size)}
		}
	}
	count = 0
	C.embraft_ready_entry_count(r, &count)
	if count > 0 {
		out.Entries = make([]Entry, count)
		for i := range out.Entries {
			var index, eterm, proposal C.uint64_t
			var kind C.uint32_t
			var data *C.uint8_t
			var size C.size_t
			C.embraft_ready_entry(r, C.size_t(i), &index, &eterm, &kind, &data, &size, &proposal)
			out.Entries[i] = Entry{uint64(index), uint64(eterm), EntryKind(kind), goBytes(data, size), uint64(proposal)}
		}
	}
	count = 0
	C.embraft_ready_outcome_count(r, &count)
	if count > 0 {
		out.Outcomes = make([]Outcome, count)
		for i := range out.Outcomes {
			var id, index C.uint64_t
			var outcome C.uint32_t
			C.embraft_ready_outcome(r, C.size_t(i), &id, &outcome, &index)
			out.Outcomes[i] = Outcome{uint64(id), uint32(outcome), uint64(index)}
		}
	}
	count = 0
	C.embraft_ready_read_count(r, &count)
	if count > 0 {
		out.Reads = make([]ReadResult, count)
		for i := range out.Reads {
			var ctx, index C.uint64_t
			var result C.uint32_t
			C.embraft_ready_read(r, C.size_t(i), &ctx, &result, &index)
			out.Reads[i] = ReadResult{uint64(ctx), uint32(result), uint64(index)}
		}
	}
	var present C.bool
	var sindex, sterm C.uint64_t
	C.embraft_ready_snapshot_to_restore(r, &present, &sindex, &sterm)
	if present {
		// The path is the batch's and the file is pinned only until the
		// batch is freed: open it now, keep only the Go copy of the name.
		var path *C.char
		if code := C.embraft_ready_snapshot_path(r, &path); code != C.EMBRAFT_OK {
			restoreErr = &CallError{Op: "embraft_ready_snapshot_path", Code: Code(code)}
		} else if f, err := os.Open(C.GoString(path)); err != nil {
			restoreErr = fmt.Errorf("embraft: opening the snapshot to restore (index %d): %w", uint64(sindex), err)
		} else {
			out.Restore = &SnapshotRestore{Index: uint64(sindex), Term: uint64(sterm), File: f}
		}
	}
	var wanted C.bool
	var windex C.uint64_t
	C.embraft_ready_snapshot_wanted(r, &wanted, &windex)
	if wanted {
		out.SnapshotWanted, out.SnapshotWantedIndex = true, uint64(windex)
	}
	count = 0
	C.embraft_ready_log_count(r, &count)
	for i := C.size_t(0); i < count; i++ {
		var level C.uint32_t
		var text *C.char
		C.embraft_ready_log(r, i, &level, &text)
		out.Logs = append(out.Logs, LogLine{LogLevel(level), C.GoString(text)})
	}
	return out, restoreErr
}

// PeerProgress is a leader's view of one peer.
type PeerProgress struct {
	ID, Match, Next uint64
	Replicating     bool
	Inflight        uint64
	RecentActive    bool
}

// Status is a snapshot of a node's status.
type Status struct {
	ID, Term, Vote, Leader           uint64
	Role                             Role
	Commit, Applied, Persisted       uint64
	FirstIndex, LastIndex            uint64
	SnapshotIndex, LeadTransferee    uint64
	Voters, Learners, VotersOutgoing []uint64
	LearnersNext                     []uint64
	Peers                            []PeerProgress
}

func copyStatus(r *C.embraft_status_report) Status {
	get := func(field C.uint32_t) uint64 {
		var v C.uint64_t
		C.embraft_status_report_get(r, field, &v)
		return uint64(v)
	}
	members := func(list C.uint32_t) []uint64 {
		var count C.size_t
		C.embraft_status_report_member_count(r, list, &count)
		ids := make([]uint64, count)
		for i := range ids {
			var id C.uint64_t
			C.embraft_status_report_member(r, list, C.size_t(i), &id)
			ids[i] = uint64(id)
		}
		return ids
	}
	s := Status{
		ID: get(C.EMBRAFT_FIELD_ID), Role: Role(get(C.EMBRAFT_FIELD_ROLE)), Term: get(C.EMBRAFT_FIELD_TERM),
		Vote: get(C.EMBRAFT_FIELD_VOTE), Leader: get(C.EMBRAFT_FIELD_LEADER), Commit: get(C.EMBRAFT_FIELD_COMMIT),
		Applied: get(C.EMBRAFT_FIELD_APPLIED), Persisted: get(C.EMBRAFT_FIELD_PERSISTED),
		FirstIndex: get(C.EMBRAFT_FIELD_FIRST_INDEX), LastIndex: get(C.EMBRAFT_FIELD_LAST_INDEX),
		SnapshotIndex: get(C.EMBRAFT_FIELD_SNAPSHOT_INDEX), LeadTransferee: get(C.EMBRAFT_FIELD_LEAD_TRANSFEREE),
		Voters: members(C.EMBRAFT_MEMBERS_VOTERS), Learners: members(C.EMBRAFT_MEMBERS_LEARNERS),
		VotersOutgoing: members(C.EMBRAFT_MEMBERS_VOTERS_OUTGOING), LearnersNext: members(C.EMBRAFT_MEMBERS_LEARNERS_NEXT),
	}
	var count C.size_t
	C.embraft_status_report_peer_count(r, &count)
	for i := C.size_t(0); i < count; i++ {
		peer := func(field C.uint32_t) uint64 {
			var v C.uint64_t
			C.embraft_status_report_peer_get(r, i, field, &v)
			return uint64(v)
		}
		s.Peers = append(s.Peers, PeerProgress{
			ID: peer(C.EMBRAFT_PEER_ID), Match: peer(C.EMBRAFT_PEER_MATCH_INDEX), Next: peer(C.EMBRAFT_PEER_NEXT_INDEX),
			Replicating: peer(C.EMBRAFT_PEER_REPLICATING) != 0, Inflight: peer(C.EMBRAFT_PEER_INFLIGHT_MSGS),
			RecentActive: peer(C.EMBRAFT_PEER_RECENT_ACTIVE) != 0,
		})
	}
	return s
}
