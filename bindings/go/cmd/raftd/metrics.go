package main

// GET /metrics: the metrics of docs/RAFTD.md "Metrics", served by
// prometheus/client_golang from a registry of the server's own (only the
// names of the table, the same in every raftd: no Go runtime or process
// metrics). A collector reads the library's metrics and the node's status
// at each scrape; raftd counts the requests it serves itself.

import (
	"net/http"
	"strconv"

	embraft "github.com/embraft/embraft/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// The descriptions of the embraft_* metrics, with the help texts of
// RAFTD.md.
var (
	descTerm = prometheus.NewDesc("embraft_term",
		"The node's current term.", nil, nil)
	descCommitIndex = prometheus.NewDesc("embraft_commit_index",
		"The highest log index known committed.", nil, nil)
	descAppliedIndex = prometheus.NewDesc("embraft_applied_index",
		"The highest log index applied to the key/value store.", nil, nil)
	descLastIndex = prometheus.NewDesc("embraft_last_index",
		"The index of the last entry in the node's log.", nil, nil)
	descIsLeader = prometheus.NewDesc("embraft_is_leader",
		"1 if this node is the leader, else 0.", nil, nil)
	descWALFsync = prometheus.NewDesc("embraft_disk_wal_fsync_duration_seconds",
		"The latency distributions of the WAL's syncs (fdatasync or msync).", nil, nil)
	descWALBytes = prometheus.NewDesc("embraft_disk_wal_write_bytes_total",
		"Bytes of records written to the WAL.", nil, nil)
	descWALBatches = prometheus.NewDesc("embraft_disk_wal_write_batches_total",
		"Batches written to the WAL.", nil, nil)
	descProposalsCommitted = prometheus.NewDesc("embraft_server_proposals_committed_total",
		"Proposals made on this node that committed.", nil, nil)
	descProposalsFailed = prometheus.NewDesc("embraft_server_proposals_failed_total",
		"Proposals made on this node that were dropped, by reason (not_leader, transfer_in_progress, "+
			"too_large, superseded, conf_change_pending, conf_change_invalid, learner_behind, unknown).",
		[]string{"reason"}, nil)
	descProposalCommit = prometheus.NewDesc("embraft_server_proposal_commit_duration_seconds",
		"The latency distributions from a proposal's append on the leader to its commit.", nil, nil)
	descLeaderChanges = prometheus.NewDesc("embraft_server_leader_changes_seen_total",
		"Times the known leader changed.", nil, nil)
	descElections = prometheus.NewDesc("embraft_server_elections_started_total",
		"Elections this node started as a candidate.", nil, nil)
	descPreVotes = prometheus.NewDesc("embraft_server_pre_votes_started_total",
		"Pre-vote rounds this node started.", nil, nil)
	descApplyLag = prometheus.NewDesc("embraft_server_apply_lag_entries",
		"Committed entries not yet applied (commit index − applied index).", nil, nil)
	descMessagesSent = prometheus.NewDesc("embraft_network_messages_sent_total",
		"Raft messages sent, by type (PreVote, Append, Heartbeat, ...: embraft_metrics_message_kind).",
		[]string{"type"}, nil)
	descMessagesReceived = prometheus.NewDesc("embraft_network_messages_received_total",
		"Raft messages received, by type.", []string{"type"}, nil)
	descSnapshotSends = prometheus.NewDesc("embraft_snapshot_sends_total",
		"Snapshot transfers completed to followers.", nil, nil)
	descSnapshotSentBytes = prometheus.NewDesc("embraft_snapshot_sent_bytes_total",
		"Snapshot chunk bytes sent (resends included).", nil, nil)
	descSnapshotReceives = prometheus.NewDesc("embraft_snapshot_receives_total",
		"Snapshots received and installed.", nil, nil)
	descSnapshotReceivedBytes = prometheus.NewDesc("embraft_snapshot_received_bytes_total",
		"Snapshot chunk bytes received.", nil, nil)
	descCacheHits = prometheus.NewDesc("embraft_entry_cache_hits_total",
		"Log entries read from the entry cache.", nil, nil)
	descCacheMisses = prometheus.NewDesc("embraft_entry_cache_misses_total",
		"Log entries read back from the WAL because they had left the cache.", nil, nil)
	descCacheBytes = prometheus.NewDesc("embraft_entry_cache_bytes",
		"Bytes of log entries in the entry cache.", nil, nil)

	allDescs = []*prometheus.Desc{
		descTerm, descCommitIndex, descAppliedIndex, descLastIndex, descIsLeader,
		descWALFsync, descWALBytes, descWALBatches,
		descProposalsCommitted, descProposalsFailed, descProposalCommit,
		descLeaderChanges, descElections, descPreVotes, descApplyLag,
		descMessagesSent, descMessagesReceived,
		descSnapshotSends, descSnapshotSentBytes, descSnapshotReceives, descSnapshotReceivedBytes,
		descCacheHits, descCacheMisses, descCacheBytes,
	}
)

// histogramBounds are the upper bounds, in seconds, of the library's
// bounded histogram buckets: 32 µs × 2^i for i = 0 … 18.
var histogramBounds = func() []float64 {
	var h embraft.Histogram
	bounds := make([]float64, 0, embraft.HistogramBuckets-1)
	for _, b := range h.Bounds() {
		bounds = append(bounds, b.Seconds())
	}
	return bounds
}()

// raftCollector is the prometheus.Collector of the embraft_* metrics: one
// Raft.Metrics call and one status per scrape.
type raftCollector struct{ s *server }

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	m, err := c.s.raft.Metrics()
	var st embraft.Status
	if err == nil {
		st, err = c.s.raft.Status()
	}
	if err != nil {
		// The scrape fails (500), as a status that cannot be read does.
		ch <- prometheus.NewInvalidMetric(descTerm, err)
		return
	}
	gauge := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	isLeader := uint64(0)
	if st.Role == embraft.Leader {
		isLeader = 1
	}
	gauge(descTerm, st.Term)
	gauge(descCommitIndex, st.Commit)
	gauge(descAppliedIndex, c.s.raft.Applied())
	gauge(descLastIndex, st.LastIndex)
	gauge(descIsLeader, isLeader)

	ch <- constHistogram(descWALFsync, m.WALSyncDuration)
	counter(descWALBytes, m.WALBytesWritten)
	counter(descWALBatches, m.WALBatchesWritten)

	counter(descProposalsCommitted, m.ProposalsCommitted)
	// Every reason and message type, counted or not: the series exist
	// from the first scrape.
	for _, reason := range embraft.DropReasons() {
		counter(descProposalsFailed, m.ProposalsDropped[reason], reason)
	}
	ch <- constHistogram(descProposalCommit, m.ProposalCommitLatency)
	counter(descLeaderChanges, m.LeaderChanges)
	counter(descElections, m.ElectionsStarted)
	counter(descPreVotes, m.PreVotesStarted)
	gauge(descApplyLag, m.ApplyLag)

	for _, kind := range embraft.MessageKinds() {
		counter(descMessagesSent, m.MessagesSent[kind], kind)
		counter(descMessagesReceived, m.MessagesReceived[kind], kind)
	}

	counter(descSnapshotSends, m.SnapshotsSent)
	counter(descSnapshotSentBytes, m.SnapshotBytesSent)
	counter(descSnapshotReceives, m.SnapshotsReceived)
	counter(descSnapshotReceivedBytes, m.SnapshotBytesReceived)

	counter(descCacheHits, m.CacheHitEntries)
	counter(descCacheMisses, m.CacheMissEntries)
	gauge(descCacheBytes, m.CachedEntryBytes)
}

// constHistogram turns a library histogram (counts per bucket) into a
// Prometheus one (cumulative counts, bounds in seconds). The count is the
// buckets' total: the library copies its count and buckets one by one
// while observations go on, and the +Inf bucket must equal the count.
func constHistogram(d *prometheus.Desc, h embraft.Histogram) prometheus.Metric {
	cum := h.Cumulative()
	buckets := make(map[float64]uint64, len(histogramBounds))
	for i, bound := range histogramBounds {
		buckets[bound] = cum[i]
	}
	return prometheus.MustNewConstHistogram(d, cum[len(cum)-1], h.Sum.Seconds(), buckets)
}

// newMetrics makes the server's registry, with the collector and the
// request counter, and the handler of GET /metrics.
func (s *server) newMetrics() http.Handler {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftd_requests_total",
		Help: "HTTP requests served, by method and status code.",
	}, []string{"method", "code"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(raftCollector{s}, s.requests)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLogger{s}})
}

// promLogger hands promhttp's errors to the server's log.
type promLogger struct{ s *server }

func (l promLogger) Println(v ...any) { l.s.log.Warn("metrics", "error", v) }

// countRequest counts one served request.
func (s *server) countRequest(method string, code int) {
	s.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
}
