package embraft

/*
#include <embraft.h>

// A batch is read in two cgo calls, not one per item and field: a call
// into C costs far more from Go than from C, and a batch holds a few
// items per proposal. The loops below call the getters from C instead.
// The getters cannot fail for indexes below their counts.

typedef struct {
	uint32_t role;
	uint64_t leader, term;
	bool changed;
	size_t messages, entries, outcomes, reads, logs;
	bool restore, wanted;
	uint64_t restore_index, restore_term, wanted_index;
} embraft_go_summary;

// embraft_go_poll polls like embraft_node_poll_ready and, when a batch
// came, summarizes it: its state and how many items of each kind it holds.
static embraft_status embraft_go_poll(embraft_node *node, uint32_t timeout_ms,
		embraft_ready **out, embraft_go_summary *s) {
	embraft_status status = embraft_node_poll_ready(node, timeout_ms, out);
	if (status != EMBRAFT_OK) {
		return status;
	}
	embraft_ready *r = *out;
	embraft_ready_state_changed(r, &s->changed);
	embraft_ready_state(r, &s->role, &s->leader, &s->term);
	embraft_ready_message_count(r, &s->messages);
	embraft_ready_entry_count(r, &s->entries);
	embraft_ready_outcome_count(r, &s->outcomes);
	embraft_ready_read_count(r, &s->reads);
	embraft_ready_log_count(r, &s->logs);
	embraft_ready_snapshot_to_restore(r, &s->restore, &s->restore_index, &s->restore_term);
	embraft_ready_snapshot_wanted(r, &s->wanted, &s->wanted_index);
	return EMBRAFT_OK;
}

typedef struct { uint64_t to; const uint8_t *data; size_t size; } embraft_go_message;
typedef struct {
	uint64_t index, term, proposal;
	uint32_t kind;
	const uint8_t *data;
	size_t size;
} embraft_go_entry;
typedef struct { uint64_t id, index; uint32_t outcome; } embraft_go_outcome;
typedef struct { uint64_t context, index; uint32_t result; } embraft_go_read;

// embraft_go_items fills arrays (Go memory) sized by the summary with the
// items and views of their bytes, valid until the batch is freed.
static void embraft_go_items(const embraft_ready *r,
		embraft_go_message *messages, size_t message_count,
		embraft_go_entry *entries, size_t entry_count,
		embraft_go_outcome *outcomes, size_t outcome_count,
		embraft_go_read *reads, size_t read_count) {
	for (size_t i = 0; i < message_count; i++) {
		embraft_go_message *m = &messages[i];
		embraft_ready_message(r, i, &m->to, &m->data, &m->size);
	}
	for (size_t i = 0; i < entry_count; i++) {
		embraft_go_entry *e = &entries[i];
		embraft_ready_entry(r, i, &e->index, &e->term, &e->kind, &e->data, &e->size, &e->proposal);
	}
	for (size_t i = 0; i < outcome_count; i++) {
		embraft_go_outcome *o = &outcomes[i];
		embraft_ready_outcome(r, i, &o->id, &o->outcome, &o->index);
	}
	for (size_t i = 0; i < read_count; i++) {
		embraft_go_read *d = &reads[i];
		embraft_ready_read(r, i, &d->context, &d->result, &d->index);
	}
}
*/
import "C"

import (
	"fmt"
	"os"
	"time"
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

// Poll waits up to timeout for the next batch and returns a Go copy of it
// (the C batch is freed before Poll returns, so no C memory outlives the
// call). It returns (nil, nil) when no batch came in time.
//
// A batch that asks for a restore comes with the snapshot's file open
// (Ready.Restore.File), which the caller must close. If that file cannot
// be opened, Poll returns the rest of the batch together with the error:
// the state machine cannot be brought to the snapshot, so the host must
// not apply the batch's entries; close the node and start it again.
func (n *Node) Poll(timeout time.Duration) (*Ready, error) {
	var ready *C.embraft_ready
	var summary C.embraft_go_summary
	err := n.call("embraft_node_poll_ready", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_go_poll(p, C.uint32_t(timeout/time.Millisecond), &ready, &summary)
	})
	if err != nil {
		if code, ok := err.(*CallError); ok && code.Code == ErrTimedOut {
			return nil, nil
		}
		return nil, err
	}
	out, err := copyReady(ready, &summary)
	C.embraft_ready_free(ready)
	return out, err
}

// copyReady copies everything out of a batch that embraft_go_poll
// summarized. It fails only when the batch asks for a restore whose file
// cannot be opened; the rest of the batch is returned all the same.
func copyReady(r *C.embraft_ready, sum *C.embraft_go_summary) (out *Ready, restoreErr error) {
	out = &Ready{
		StateChanged: bool(sum.changed),
		State:        State{Role(sum.role), uint64(sum.leader), uint64(sum.term)},
	}
	messages := make([]C.embraft_go_message, int(sum.messages))
	entries := make([]C.embraft_go_entry, int(sum.entries))
	outcomes := make([]C.embraft_go_outcome, int(sum.outcomes))
	reads := make([]C.embraft_go_read, int(sum.reads))
	if sum.messages+sum.entries+sum.outcomes+sum.reads > 0 {
		C.embraft_go_items(r, firstOf(messages), sum.messages, firstOf(entries), sum.entries,
			firstOf(outcomes), sum.outcomes, firstOf(reads), sum.reads)
	}
	if len(messages) > 0 {
		// All messages' bytes in one allocation: a transport sends them and
		// lets go, so sharing a backing array costs nothing.
		total := 0
		for _, m := range messages {
			total += int(m.size)
		}
		messageBytes := make([]byte, 0, total)
		out.Messages = make([]Message, len(messages))
		for i, m := range messages {
			at := len(messageBytes)
			messageBytes = append(messageBytes, cView(m.data, m.size)...)
			// Capped, so a transport that appends to one message (framing
			// it) reallocates instead of overwriting the next.
			out.Messages[i] = Message{uint64(m.to), messageBytes[at:len(messageBytes):len(messageBytes)]}
		}
	}
	if len(entries) > 0 {
		out.Entries = make([]Entry, len(entries))
		for i, e := range entries {
			// Each entry gets its own copy: a state machine may keep its
			// data, and must not pin the whole batch by doing so.
			data := append([]byte{}, cView(e.data, e.size)...)
			out.Entries[i] = Entry{uint64(e.index), uint64(e.term), EntryKind(e.kind), data, uint64(e.proposal)}
		}
	}
	if len(outcomes) > 0 {
		out.Outcomes = make([]Outcome, len(outcomes))
		for i, o := range outcomes {
			out.Outcomes[i] = Outcome{uint64(o.id), uint32(o.outcome), uint64(o.index)}
		}
	}
	if len(reads) > 0 {
		out.Reads = make([]ReadResult, len(reads))
		for i, d := range reads {
			out.Reads[i] = ReadResult{uint64(d.context), uint32(d.result), uint64(d.index)}
		}
	}
	if sum.restore {
		// The path is the batch's and the file is pinned only until the
		// batch is freed: open it now, keep only the Go copy of the name.
		var path *C.char
		if code := C.embraft_ready_snapshot_path(r, &path); code != C.EMBRAFT_OK {
			restoreErr = &CallError{Op: "embraft_ready_snapshot_path", Code: Code(code)}
		} else {
			out.Restore, restoreErr = openRestore(uint64(sum.restore_index), uint64(sum.restore_term), path)
		}
	}
	out.SnapshotWanted, out.SnapshotWantedIndex = bool(sum.wanted), uint64(sum.wanted_index)
	for i := C.size_t(0); i < sum.logs; i++ {
		var level C.uint32_t
		var text *C.char
		C.embraft_ready_log(r, i, &level, &text)
		out.Logs = append(out.Logs, LogLine{LogLevel(level), C.GoString(text)})
	}
	return out, restoreErr
}

// openRestore opens the snapshot file a batch names for a restore, while
// the batch still pins it.
func openRestore(index, term uint64, path *C.char) (*SnapshotRestore, error) {
	f, err := os.Open(C.GoString(path))
	if err != nil {
		return nil, fmt.Errorf("embraft: opening the snapshot to restore (index %d): %w", index, err)
	}
	return &SnapshotRestore{Index: index, Term: term, File: f}, nil
}

// cView is a Go view of n library-owned bytes at p, valid while the batch
// that owns them lives; copy before keeping it.
func cView(p *C.uint8_t, n C.size_t) []byte {
	if n == 0 {
		return nil
	}
	return unsafe.Slice((*byte)(unsafe.Pointer(p)), int(n))
}

// firstOf is a pointer to s's first element for C, or nil when s is empty.
func firstOf[T any](s []T) *T {
	if len(s) == 0 {
		return nil
	}
	return &s[0]
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
	ID, Term, Vote, Leader        uint64
	Role                          Role
	Commit, Applied, Persisted    uint64
	FirstIndex, LastIndex         uint64
	SnapshotIndex, LeadTransferee uint64
	// Quiescent: the node stopped heartbeating (leader) or its election
	// timer (follower) while its group is idle.
	Quiescent                        bool
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
		Quiescent: get(C.EMBRAFT_FIELD_QUIESCENT) == 1,
		Voters:    members(C.EMBRAFT_MEMBERS_VOTERS), Learners: members(C.EMBRAFT_MEMBERS_LEARNERS),
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
