package embraft

/*
#include <embraft.h>
*/
import "C"

import (
	"sync"
	"time"
)

// HistogramBuckets is the number of buckets of every Histogram; the last
// one is unbounded.
const HistogramBuckets = int(C.EMBRAFT_HISTOGRAM_BUCKETS)

// histogramFirstBound is the upper bound of a histogram's first bucket;
// each next bucket's is twice the one before.
const histogramFirstBound = time.Duration(C.EMBRAFT_HISTOGRAM_FIRST_BOUND_US) * time.Microsecond

// Histogram is a latency distribution the library measured
// (embraft_histogram). Buckets holds the observations per bucket, not
// cumulative: bucket i counts those of at most Bound(i) (32 µs << i), the
// last bucket everything beyond. Count is the number of observations and
// Sum their total (microsecond resolution).
type Histogram struct {
	Buckets [HistogramBuckets]uint64
	Count   uint64
	Sum     time.Duration
}

// HistogramBound returns the inclusive upper bound of bucket i, for i
// below HistogramBuckets-1; the last bucket is unbounded.
func HistogramBound(i int) time.Duration {
	return histogramFirstBound << i
}

// Bounds returns the upper bounds of the bounded buckets (32 µs, 64 µs,
// ... 8.388608 s: HistogramBuckets-1 of them, the same for every
// histogram); the last bucket, unbounded, has none.
func (Histogram) Bounds() []time.Duration {
	bounds := make([]time.Duration, HistogramBuckets-1)
	for i := range bounds {
		bounds[i] = HistogramBound(i)
	}
	return bounds
}

// Cumulative returns, for each bucket, the observations at most its bound
// (the Prometheus convention); the last is the number in all buckets.
func (h Histogram) Cumulative() [HistogramBuckets]uint64 {
	var out [HistogramBuckets]uint64
	var total uint64
	for i, n := range h.Buckets {
		total += n
		out[i] = total
	}
	return out
}

func copyHistogram(h *C.embraft_histogram) Histogram {
	out := Histogram{
		Count: uint64(h.count),
		Sum:   time.Duration(h.sum_us) * time.Microsecond,
	}
	for i := range out.Buckets {
		out.Buckets[i] = uint64(h.buckets[i])
	}
	return out
}

// Metrics is what a node and its write-ahead log measured since the node
// started (embraft_metrics). Counters only grow; export them as they are.
// The per-kind counters are keyed by the library's names (MessageKinds,
// DropReasons), every name present, with 0 when nothing was counted.
type Metrics struct {
	// WALSyncDuration is the duration of each WAL sync (fdatasync or
	// msync).
	WALSyncDuration Histogram
	// WALBytesWritten is the bytes of records written to the WAL, and
	// WALBatchesWritten the batches.
	WALBytesWritten   uint64
	WALBatchesWritten uint64

	// ProposalsCommitted counts the proposals made on this node that
	// committed; ProposalsDropped those that were dropped, by reason
	// ("not_leader", "superseded", ...). Reason "unknown" counts proposals
	// whose fate this node will never learn.
	ProposalsCommitted uint64
	ProposalsDropped   map[string]uint64
	// ProposalCommitLatency runs from a proposal's append on this node,
	// as leader, to its commit.
	ProposalCommitLatency Histogram

	// LeaderChanges counts the times the known leader changed;
	// ElectionsStarted the times this node became a candidate, and
	// PreVotesStarted its pre-vote rounds.
	LeaderChanges    uint64
	ElectionsStarted uint64
	PreVotesStarted  uint64

	// MessagesSent and MessagesReceived count Raft messages by kind
	// ("PreVote", "Append", "Heartbeat", ...).
	MessagesSent     map[string]uint64
	MessagesReceived map[string]uint64

	// SnapshotsSent counts snapshot transfers completed to followers and
	// SnapshotBytesSent the chunk bytes sent (resends included);
	// SnapshotsReceived the snapshots received and installed and
	// SnapshotBytesReceived their chunk bytes.
	SnapshotsSent         uint64
	SnapshotBytesSent     uint64
	SnapshotsReceived     uint64
	SnapshotBytesReceived uint64

	// CacheHitEntries counts the log entries read from the entry cache,
	// CacheMissEntries those read back from the WAL; CachedEntryBytes is
	// the bytes of entries in the cache now.
	CacheHitEntries  uint64
	CacheMissEntries uint64
	CachedEntryBytes uint64

	// ApplyLag is the number of committed entries not yet acknowledged
	// applied (AckApplied).
	ApplyLag uint64
}

// metricNames are the names of the per-kind counters, read once from the
// library, in the order of the C arrays.
var metricNames = sync.OnceValues(func() (kinds, reasons []string) {
	kinds = make([]string, C.EMBRAFT_MESSAGE_KINDS)
	for i := range kinds {
		kinds[i] = C.GoString(C.embraft_metrics_message_kind(C.size_t(i)))
	}
	reasons = make([]string, C.EMBRAFT_DROP_REASONS)
	for i := range reasons {
		reasons[i] = C.GoString(C.embraft_metrics_drop_reason(C.size_t(i)))
	}
	return kinds, reasons
})

// MessageKinds returns the names of the Raft message kinds the library
// counts (the keys of Metrics.MessagesSent and MessagesReceived), in the
// library's order ("PreVote", "PreVoteResponse", "Vote", ...).
func MessageKinds() []string {
	kinds, _ := metricNames()
	return append([]string(nil), kinds...)
}

// DropReasons returns the reasons a proposal is dropped (the keys of
// Metrics.ProposalsDropped), in the library's order ("not_leader",
// "transfer_in_progress", ..., "unknown").
func DropReasons() []string {
	_, reasons := metricNames()
	return append([]string(nil), reasons...)
}

func countsByName(names []string, counts []C.uint64_t) map[string]uint64 {
	out := make(map[string]uint64, len(names))
	for i, name := range names {
		out[name] = uint64(counts[i])
	}
	return out
}

func copyMetrics(m *C.embraft_metrics) Metrics {
	kinds, reasons := metricNames()
	return Metrics{
		WALSyncDuration:       copyHistogram(&m.wal_sync_duration),
		WALBytesWritten:       uint64(m.wal_bytes_written),
		WALBatchesWritten:     uint64(m.wal_batches_written),
		ProposalsCommitted:    uint64(m.proposals_committed),
		ProposalsDropped:      countsByName(reasons, m.proposals_dropped[:]),
		ProposalCommitLatency: copyHistogram(&m.proposal_commit_latency),
		LeaderChanges:         uint64(m.leader_changes),
		ElectionsStarted:      uint64(m.elections_started),
		PreVotesStarted:       uint64(m.pre_votes_started),
		MessagesSent:          countsByName(kinds, m.messages_sent[:]),
		MessagesReceived:      countsByName(kinds, m.messages_received[:]),
		SnapshotsSent:         uint64(m.snapshots_sent),
		SnapshotBytesSent:     uint64(m.snapshot_bytes_sent),
		SnapshotsReceived:     uint64(m.snapshots_received),
		SnapshotBytesReceived: uint64(m.snapshot_bytes_received),
		CacheHitEntries:       uint64(m.cache_hit_entries),
		CacheMissEntries:      uint64(m.cache_miss_entries),
		CachedEntryBytes:      uint64(m.cached_entry_bytes),
		ApplyLag:              uint64(m.apply_lag),
	}
}

// Metrics returns what the node measured since it started: one C call
// copying the library's counters, cheap enough for every scrape.
func (n *Node) Metrics() (Metrics, error) {
	// C memory is not needed: the struct holds no pointers and the call
	// only writes it before returning.
	var out C.embraft_metrics
	err := n.call("embraft_node_metrics", func(p *C.embraft_node) C.embraft_status {
		return C.embraft_node_metrics(p, &out)
	})
	if err != nil {
		return Metrics{}, err
	}
	return copyMetrics(&out), nil
}
