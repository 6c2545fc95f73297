package embraft

import (
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestMetricsNamesAndBounds(t *testing.T) {
	kinds, reasons := MessageKinds(), DropReasons()
	if len(kinds) != 15 || kinds[0] != "PreVote" || !slices.Contains(kinds, "Append") || !slices.Contains(kinds, "Heartbeat") {
		t.Fatalf("message kinds %q", kinds)
	}
	if len(reasons) != 8 || reasons[0] != "not_leader" || reasons[len(reasons)-1] != "unknown" {
		t.Fatalf("drop reasons %q", reasons)
	}
	for _, names := range [][]string{kinds, reasons} {
		for i, name := range names {
			if name == "" || slices.Contains(names[:i], name) {
				t.Fatalf("empty or repeated name %q in %q", name, names)
			}
		}
	}
	// The slices are copies: changing one does not change the next.
	kinds[0] = "changed"
	if MessageKinds()[0] != "PreVote" {
		t.Fatal("MessageKinds shares its slice")
	}
	bounds := Histogram{}.Bounds()
	if len(bounds) != HistogramBuckets-1 || HistogramBuckets != 20 {
		t.Fatalf("%d bounds, %d buckets", len(bounds), HistogramBuckets)
	}
	for i, b := range bounds {
		if want := 32 * time.Microsecond << i; b != want || HistogramBound(i) != want {
			t.Fatalf("bound %d: %v, want %v", i, b, want)
		}
	}
	if bounds[len(bounds)-1] != 8388608*time.Microsecond {
		t.Fatalf("last bound %v", bounds[len(bounds)-1])
	}
	h := Histogram{Count: 3}
	h.Buckets[0], h.Buckets[2], h.Buckets[HistogramBuckets-1] = 1, 1, 1
	cum := h.Cumulative()
	if cum[0] != 1 || cum[1] != 1 || cum[2] != 2 || cum[HistogramBuckets-2] != 2 || cum[HistogramBuckets-1] != 3 {
		t.Fatalf("cumulative %v", cum)
	}
}

// A synced single node's metrics count its proposals, their commit
// latencies and the WAL's syncs; every per-kind name is a key.
func TestMetricsOfASingleNode(t *testing.T) {
	r, sm, ctx := startSingleNode(t, Config{})
	before, err := r.Metrics()
	if err != nil {
		t.Fatal(err)
	}
	const writes = 20
	for i := 0; i < writes; i++ {
		if _, err := r.Propose(ctx, []byte(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	if sm.count() != writes {
		t.Fatalf("applied %d", sm.count())
	}
	after, err := r.Node().Metrics()
	if err != nil {
		t.Fatal(err)
	}
	if got := after.ProposalsCommitted - before.ProposalsCommitted; got != writes {
		t.Fatalf("%d proposals committed, want %d", got, writes)
	}
	if got := after.ProposalCommitLatency.Count - before.ProposalCommitLatency.Count; got != writes {
		t.Fatalf("%d commit latencies, want %d", got, writes)
	}
	if after.WALSyncDuration.Count <= before.WALSyncDuration.Count || after.WALSyncDuration.Sum <= 0 {
		t.Fatalf("WAL syncs: %+v then %+v", before.WALSyncDuration, after.WALSyncDuration)
	}
	if after.WALBytesWritten <= before.WALBytesWritten || after.WALBatchesWritten <= before.WALBatchesWritten {
		t.Fatalf("WAL writes: %+v then %+v", before, after)
	}
	for _, h := range []Histogram{after.WALSyncDuration, after.ProposalCommitLatency} {
		if cum := h.Cumulative(); cum[HistogramBuckets-1] != h.Count {
			t.Fatalf("buckets add up to %d, count %d", cum[HistogramBuckets-1], h.Count)
		}
	}
	for _, k := range MessageKinds() {
		if _, ok := after.MessagesSent[k]; !ok {
			t.Fatalf("no sent count for %q", k)
		}
		if _, ok := after.MessagesReceived[k]; !ok {
			t.Fatalf("no received count for %q", k)
		}
	}
	for _, reason := range DropReasons() {
		if n, ok := after.ProposalsDropped[reason]; !ok || n != 0 {
			t.Fatalf("dropped %q: %d, %v", reason, n, ok)
		}
	}
	if len(after.MessagesSent) != len(MessageKinds()) || len(after.ProposalsDropped) != len(DropReasons()) {
		t.Fatalf("extra keys: %v %v", after.MessagesSent, after.ProposalsDropped)
	}
	r.Close()
	if _, err := r.Metrics(); !errors.Is(err, ErrClosed) {
		t.Fatalf("metrics after close: %v", err)
	}
}
