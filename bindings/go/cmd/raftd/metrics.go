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

// groupDescs describes the embraft_* metrics of one group, with the help
// texts of RAFTD.md. A sharded node's have a group label besides the
// table's.
type groupDescs struct {
	term, commitIndex, appliedIndex, lastIndex, isLeader *prometheus.Desc
	proposalsCommitted, proposalsFailed, proposalCommit  *prometheus.Desc
	leaderChanges, elections, preVotes, applyLag         *prometheus.Desc
	messagesSent, messagesReceived                       *prometheus.Desc
	snapshotSends, snapshotSentBytes                     *prometheus.Desc
	snapshotReceives, snapshotReceivedBytes              *prometheus.Desc
	cacheHits, cacheMisses, cacheBytes                   *prometheus.Desc
}

func newGroupDescs(sharded bool) groupDescs {
	desc := func(name, help string, labels ...string) *prometheus.Desc {
		if sharded {
			labels = append(labels, "group")
		}
		return prometheus.NewDesc(name, help, labels, nil)
	}
	return groupDescs{
		term:         desc("embraft_term", "The node's current term."),
		commitIndex:  desc("embraft_commit_index", "The highest log index known committed."),
		appliedIndex: desc("embraft_applied_index", "The highest log index applied to the key/value store."),
		lastIndex:    desc("embraft_last_index", "The index of the last entry in the node's log."),
		isLeader:     desc("embraft_is_leader", "1 if this node is the leader, else 0."),
		proposalsCommitted: desc("embraft_server_proposals_committed_total",
			"Proposals made on this node that committed."),
		proposalsFailed: desc("embraft_server_proposals_failed_total",
			"Proposals made on this node that were dropped, by reason (not_leader, transfer_in_progress, "+
				"too_large, superseded, conf_change_pending, conf_change_invalid, learner_behind, unknown).",
			"reason"),
		proposalCommit: desc("embraft_server_proposal_commit_duration_seconds",
			"The latency distributions from a proposal's append on the leader to its commit."),
		leaderChanges: desc("embraft_server_leader_changes_seen_total", "Times the known leader changed."),
		elections:     desc("embraft_server_elections_started_total", "Elections this node started as a candidate."),
		preVotes:      desc("embraft_server_pre_votes_started_total", "Pre-vote rounds this node started."),
		applyLag: desc("embraft_server_apply_lag_entries",
			"Committed entries not yet applied (commit index − applied index)."),
		messagesSent: desc("embraft_network_messages_sent_total",
			"Raft messages sent, by type (PreVote, Append, Heartbeat, ...: embraft_metrics_message_kind).", "type"),
		messagesReceived:      desc("embraft_network_messages_received_total", "Raft messages received, by type.", "type"),
		snapshotSends:         desc("embraft_snapshot_sends_total", "Snapshot transfers completed to followers."),
		snapshotSentBytes:     desc("embraft_snapshot_sent_bytes_total", "Snapshot chunk bytes sent (resends included)."),
		snapshotReceives:      desc("embraft_snapshot_receives_total", "Snapshots received and installed."),
		snapshotReceivedBytes: desc("embraft_snapshot_received_bytes_total", "Snapshot chunk bytes received."),
		cacheHits:             desc("embraft_entry_cache_hits_total", "Log entries read from the entry cache."),
		cacheMisses: desc("embraft_entry_cache_misses_total",
			"Log entries read back from the WAL because they had left the cache."),
		cacheBytes: desc("embraft_entry_cache_bytes", "Bytes of log entries in the entry cache."),
	}
}

func (d groupDescs) all() []*prometheus.Desc {
	return []*prometheus.Desc{
		d.term, d.commitIndex, d.appliedIndex, d.lastIndex, d.isLeader,
		d.proposalsCommitted, d.proposalsFailed, d.proposalCommit,
		d.leaderChanges, d.elections, d.preVotes, d.applyLag,
		d.messagesSent, d.messagesReceived,
		d.snapshotSends, d.snapshotSentBytes, d.snapshotReceives, d.snapshotReceivedBytes,
		d.cacheHits, d.cacheMisses, d.cacheBytes,
	}
}

// The WAL's metrics: the node's one WAL, shared by all its groups, so
// never labelled by group (every group's metrics have them; group 1's are
// exported).
var (
	descWALFsync = prometheus.NewDesc("embraft_disk_wal_fsync_duration_seconds",
		"The latency distributions of the WAL's syncs (fdatasync or msync).", nil, nil)
	descWALBytes = prometheus.NewDesc("embraft_disk_wal_write_bytes_total",
		"Bytes of records written to the WAL.", nil, nil)
	descWALBatches = prometheus.NewDesc("embraft_disk_wal_write_batches_total",
		"Batches written to the WAL.", nil, nil)
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

// raftCollector is the prometheus.Collector of the embraft_* metrics:
// one Metrics call and one status per group and scrape.
type raftCollector struct {
	s     *server
	descs groupDescs
}

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs.all() {
		ch <- d
	}
	ch <- descWALFsync
	ch <- descWALBytes
	ch <- descWALBatches
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	var wal embraft.Metrics
	for _, g := range c.s.groups {
		m, err := g.raft.Metrics()
		var st embraft.Status
		if err == nil {
			st, err = g.raft.Status()
		}
		if err != nil {
			// The scrape fails (500), as a status that cannot be read does.
			ch <- prometheus.NewInvalidMetric(c.descs.term, err)
			return
		}
		var labels []string
		if c.s.groups.sharded() {
			labels = []string{strconv.FormatUint(g.id, 10)}
		}
		c.collectGroup(ch, g, m, st, labels)
		if g.id == 1 {
			wal = m
		}
	}
	ch <- constHistogram(descWALFsync, wal.WALSyncDuration)
	ch <- prometheus.MustNewConstMetric(descWALBytes, prometheus.CounterValue, float64(wal.WALBytesWritten))
	ch <- prometheus.MustNewConstMetric(descWALBatches, prometheus.CounterValue, float64(wal.WALBatchesWritten))
}

// collectGroup sends one group's series; labels ends every series' label
// values (the group's on a sharded node).
func (c raftCollector) collectGroup(ch chan<- prometheus.Metric, g *group, m embraft.Metrics, st embraft.Status, labels []string) {
	d := c.descs
	values := func(first ...string) []string { return append(first, labels...) }
	gauge := func(d *prometheus.Desc, v uint64, first ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), values(first...)...)
	}
	counter := func(d *prometheus.Desc, v uint64, first ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), values(first...)...)
	}
	isLeader := uint64(0)
	if st.Role == embraft.Leader {
		isLeader = 1
	}
	gauge(d.term, st.Term)
	gauge(d.commitIndex, st.Commit)
	gauge(d.appliedIndex, g.raft.Applied())
	gauge(d.lastIndex, st.LastIndex)
	gauge(d.isLeader, isLeader)

	counter(d.proposalsCommitted, m.ProposalsCommitted)
	// Every reason and message type, counted or not: the series exist
	// from the first scrape.
	for _, reason := range embraft.DropReasons() {
		counter(d.proposalsFailed, m.ProposalsDropped[reason], reason)
	}
	ch <- constHistogram(d.proposalCommit, m.ProposalCommitLatency, labels...)
	counter(d.leaderChanges, m.LeaderChanges)
	counter(d.elections, m.ElectionsStarted)
	counter(d.preVotes, m.PreVotesStarted)
	gauge(d.applyLag, m.ApplyLag)

	for _, kind := range embraft.MessageKinds() {
		counter(d.messagesSent, m.MessagesSent[kind], kind)
		counter(d.messagesReceived, m.MessagesReceived[kind], kind)
	}

	counter(d.snapshotSends, m.SnapshotsSent)
	counter(d.snapshotSentBytes, m.SnapshotBytesSent)
	counter(d.snapshotReceives, m.SnapshotsReceived)
	counter(d.snapshotReceivedBytes, m.SnapshotBytesReceived)

	counter(d.cacheHits, m.CacheHitEntries)
	counter(d.cacheMisses, m.CacheMissEntries)
	gauge(d.cacheBytes, m.CachedEntryBytes)
}

// constHistogram turns a library histogram (counts per bucket) into a
// Prometheus one (cumulative counts, bounds in seconds). The count is the
// buckets' total: the library copies its count and buckets one by one
// while observations go on, and the +Inf bucket must equal the count.
func constHistogram(d *prometheus.Desc, h embraft.Histogram, labels ...string) prometheus.Metric {
	cum := h.Cumulative()
	buckets := make(map[float64]uint64, len(histogramBounds))
	for i, bound := range histogramBounds {
		buckets[bound] = cum[i]
	}
	return prometheus.MustNewConstHistogram(d, cum[len(cum)-1], h.Sum.Seconds(), buckets, labels...)
}

// newMetrics makes the server's registry, with the collector and the
// request counter, and the handler of GET /metrics.
func (s *server) newMetrics() http.Handler {
	s.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "raftd_requests_total",
		Help: "HTTP requests served, by method and status code.",
	}, []string{"method", "code"})
	reg := prometheus.NewRegistry()
	reg.MustRegister(raftCollector{s, newGroupDescs(s.groups.sharded())}, s.requests)
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: promLogger{s}})
}

// promLogger hands promhttp's errors to the server's log.
type promLogger struct{ s *server }

func (l promLogger) Println(v ...any) { l.s.log.Warn("metrics", "error", v) }

// countRequest counts one served request.
func (s *server) countRequest(method string, code int) {
	s.requests.WithLabelValues(method, strconv.Itoa(code)).Inc()
}
