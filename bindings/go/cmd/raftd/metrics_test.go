package main

import (
	"bufio"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// tableMetric is one row of docs/RAFTD.md's metrics table.
type tableMetric struct {
	name, typ, help string
	labels          []string
}

// metricsTable reads the table of docs/RAFTD.md "Metrics": the names,
// types, labels and help texts every raftd exports.
func metricsTable(t *testing.T) []tableMetric {
	t.Helper()
	f, err := os.Open(filepath.Join("..", "..", "..", "..", "docs", "RAFTD.md"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var rows []tableMetric
	inSection := false
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		line := scanner.Text()
		if strings.HasPrefix(line, "#") {
			inSection = line == "### Metrics"
			continue
		}
		if !inSection || !strings.HasPrefix(line, "| `") {
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) != 6 {
			t.Fatalf("RAFTD.md: a metrics row of %d cells: %q", len(cells)-2, line)
		}
		cells = cells[1:5]
		row := tableMetric{
			name: strings.Trim(strings.TrimSpace(cells[0]), "`"),
			typ:  strings.TrimSpace(cells[1]),
			help: strings.TrimSpace(cells[3]),
		}
		for _, label := range strings.Split(cells[2], ",") {
			if label = strings.Trim(strings.TrimSpace(label), "`"); label != "" {
				row.labels = append(row.labels, label)
			}
		}
		rows = append(rows, row)
	}
	if err := scanner.Err(); err != nil {
		t.Fatal(err)
	}
	if len(rows) < 25 {
		t.Fatalf("RAFTD.md: %d metrics in the table", len(rows))
	}
	return rows
}

// scrape fetches and parses a node's /metrics with Prometheus's text
// parser.
func scrape(p *proc) (map[string]*dto.MetricFamily, string, error) {
	code, body := do("GET", p.url("/metrics"), "")
	if code != 200 {
		return nil, body, fmt.Errorf("GET /metrics: %d %s", code, body)
	}
	parser := expfmt.NewTextParser(model.LegacyValidation)
	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	return families, body, err
}

// sample returns the value of the counter or gauge name whose labels
// include want (name=value pairs), and whether it exists.
func sample(families map[string]*dto.MetricFamily, name string, want ...string) (float64, bool) {
	mf := families[name]
	if mf == nil {
		return 0, false
	}
	for _, m := range mf.GetMetric() {
		if !hasLabels(m, want...) {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue(), true
		case m.Gauge != nil:
			return m.Gauge.GetValue(), true
		}
	}
	return 0, false
}

func hasLabels(m *dto.Metric, want ...string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, l := range m.GetLabel() {
			found = found || l.GetName() == want[i] && l.GetValue() == want[i+1]
		}
		if !found {
			return false
		}
	}
	return true
}

// histogram returns the single histogram of family name.
func histogram(t *testing.T, families map[string]*dto.MetricFamily, name string) *dto.Histogram {
	t.Helper()
	mf := families[name]
	if mf == nil || len(mf.GetMetric()) != 1 || mf.GetMetric()[0].GetHistogram() == nil {
		t.Fatalf("%s: not one histogram: %v", name, mf)
	}
	return mf.GetMetric()[0].GetHistogram()
}

// checkScrape checks a scrape against the table: every name with its
// type, help text and labels, every reason and message type, and
// histograms with the library's bounds, cumulative, ending with +Inf
// equal to the count.
func checkScrape(t *testing.T, table []tableMetric, families map[string]*dto.MetricFamily) {
	t.Helper()
	types := map[string]dto.MetricType{
		"gauge": dto.MetricType_GAUGE, "counter": dto.MetricType_COUNTER, "histogram": dto.MetricType_HISTOGRAM,
	}
	values := map[string][]string{"reason": embraft.DropReasons(), "type": embraft.MessageKinds()}
	for _, row := range table {
		mf := families[row.name]
		if mf == nil {
			t.Fatalf("no %s", row.name)
		}
		if want, ok := types[row.typ]; !ok || mf.GetType() != want {
			t.Fatalf("%s: type %v, the table says %s", row.name, mf.GetType(), row.typ)
		}
		if mf.GetHelp() != row.help {
			t.Fatalf("%s: help %q, the table says %q", row.name, mf.GetHelp(), row.help)
		}
		for _, m := range mf.GetMetric() {
			var names []string
			for _, l := range m.GetLabel() {
				names = append(names, l.GetName())
			}
			slices.Sort(names)
			if want := slices.Sorted(slices.Values(row.labels)); !slices.Equal(names, want) {
				t.Fatalf("%s: labels %q, the table says %q", row.name, names, want)
			}
		}
		if len(row.labels) == 1 {
			label := row.labels[0]
			if len(mf.GetMetric()) != len(values[label]) {
				t.Fatalf("%s: %d series, want one per %s %q", row.name, len(mf.GetMetric()), label, values[label])
			}
			for _, v := range values[label] {
				if _, ok := sample(families, row.name, label, v); !ok {
					t.Fatalf("no %s{%s=%q}", row.name, label, v)
				}
			}
		}
		if row.typ == "histogram" {
			checkHistogram(t, row.name, histogram(t, families, row.name))
		}
	}
}

func checkHistogram(t *testing.T, name string, h *dto.Histogram) {
	t.Helper()
	buckets := h.GetBucket()
	if len(buckets) != 20 {
		t.Fatalf("%s: %d buckets", name, len(buckets))
	}
	var last uint64
	for i, b := range buckets {
		want := math.Inf(1)
		if i < 19 {
			want = 32e-6 * math.Pow(2, float64(i))
		}
		if bound := b.GetUpperBound(); math.Abs(bound-want) > 1e-12 && bound != want {
			t.Fatalf("%s: bucket %d ends at %v, want %v", name, i, bound, want)
		}
		if b.CumulativeCount == nil || b.GetCumulativeCount() < last {
			t.Fatalf("%s: bucket %d not cumulative: %v", name, i, buckets)
		}
		last = b.GetCumulativeCount()
	}
	if last != h.GetSampleCount() || h.SampleCount == nil {
		t.Fatalf("%s: +Inf bucket %d, count %d", name, last, h.GetSampleCount())
	}
	if h.GetSampleSum() < 0 || (h.GetSampleCount() > 0) != (h.GetSampleSum() > 0) {
		t.Fatalf("%s: sum %v of %d", name, h.GetSampleSum(), h.GetSampleCount())
	}
}

// TestMetricsScrape scrapes the leader of a three-node cluster before,
// during and after a burst of writes: every metric of RAFTD.md's table is
// there from the first scrape, and the WAL syncs, commit latencies and
// committed proposals grow with the writes.
func TestMetricsScrape(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	table := metricsTable(t)
	c := newCluster(t, 3, nil, nil)
	c.bootstrap()
	leader := c.leader(15 * time.Second)

	before, _, err := scrape(leader)
	if err != nil {
		t.Fatal(err)
	}
	checkScrape(t, table, before)
	term, _ := sample(before, "embraft_term")
	if v, _ := sample(before, "embraft_is_leader"); v != 1 {
		t.Fatalf("embraft_is_leader %v on the leader", v)
	}

	// value reads a counter or gauge from a scrape.
	value := func(name string, labels ...string) func(map[string]*dto.MetricFamily) float64 {
		return func(f map[string]*dto.MetricFamily) float64 {
			v, _ := sample(f, name, labels...)
			return v
		}
	}

	// The burst: writes from a few clients at once, so the WAL batches
	// some, while another client scrapes.
	const writers, perWriter = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers+1)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < perWriter; i++ {
				if code, body := do("POST", leader.url(fmt.Sprintf("/db/k%d-%d", w, i)), "v"); code != 200 {
					errs <- fmt.Errorf("write %d-%d: %d %s", w, i, code, body)
					return
				}
			}
		}()
	}
	stop := make(chan struct{})
	var during []map[string]*dto.MetricFamily
	scraped := make(chan struct{})
	go func() {
		defer close(scraped)
		for {
			families, _, err := scrape(leader)
			if err != nil {
				errs <- fmt.Errorf("scrape during the writes: %w", err)
				return
			}
			during = append(during, families)
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-scraped
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for _, families := range during {
		checkScrape(t, table, families)
	}
	// Counters never go back from one scrape to the next.
	previous := before
	for _, families := range during {
		for _, name := range []string{"embraft_server_proposals_committed_total", "embraft_disk_wal_write_bytes_total"} {
			if p, n := value(name)(previous), value(name)(families); n < p {
				t.Fatalf("%s went from %v to %v", name, p, n)
			}
		}
		previous = families
	}

	after, text, err := scrape(leader)
	if err != nil {
		t.Fatal(err)
	}
	checkScrape(t, table, after)
	const writes = writers * perWriter
	// Writes made on the leader are proposed there; if leadership moved
	// during the burst (a slow shared machine), some were forwarded.
	stillLeader := false
	if v, _ := sample(after, "embraft_is_leader"); v == 1 {
		newTerm, _ := sample(after, "embraft_term")
		stillLeader = newTerm == term
	}
	grown := func(name string, get func(map[string]*dto.MetricFamily) float64) {
		t.Helper()
		b, a := get(before), get(after)
		if a <= b || stillLeader && a-b < writes {
			t.Fatalf("%s: %v before %d writes, %v after (leader throughout: %v)", name, b, writes, a, stillLeader)
		}
	}
	count := func(name string) func(map[string]*dto.MetricFamily) float64 {
		return func(f map[string]*dto.MetricFamily) float64 {
			return float64(histogram(t, f, name).GetSampleCount())
		}
	}
	grown("embraft_server_proposals_committed_total", value("embraft_server_proposals_committed_total"))
	grown("embraft_server_proposal_commit_duration_seconds count", count("embraft_server_proposal_commit_duration_seconds"))
	grown(`raftd_requests_total{method="POST",code="200"}`, value("raftd_requests_total", "method", "POST", "code", "200"))
	// Syncs batch writes: fewer than one per write, but some.
	if b, a := count("embraft_disk_wal_fsync_duration_seconds")(before), count("embraft_disk_wal_fsync_duration_seconds")(after); a <= b {
		t.Fatalf("embraft_disk_wal_fsync_duration_seconds count: %v before, %v after", b, a)
	}
	if b, a := value("embraft_disk_wal_write_bytes_total")(before), value("embraft_disk_wal_write_bytes_total")(after); a <= b {
		t.Fatalf("embraft_disk_wal_write_bytes_total: %v before, %v after", b, a)
	}
	if v, _ := sample(after, "embraft_network_messages_sent_total", "type", "Append"); v <= 0 {
		t.Fatalf(`embraft_network_messages_sent_total{type="Append"} %v on the leader`, v)
	}
	if v, _ := sample(after, "embraft_network_messages_received_total", "type", "AppendResponse"); v <= 0 {
		t.Fatalf(`embraft_network_messages_received_total{type="AppendResponse"} %v on the leader`, v)
	}
	// Only the table's names: no Go runtime or process metrics.
	for name := range after {
		if !slices.ContainsFunc(table, func(row tableMetric) bool { return row.name == name }) {
			t.Fatalf("%s is not in RAFTD.md's table", name)
		}
	}
	t.Logf("%d scrapes during the writes; the last scrape:\n%s", len(during), text)
}
