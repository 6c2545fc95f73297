package main

import (
	"strings"
	"testing"
	"time"
)

// TestWalkthrough follows the raftd walkthrough of docs/RAFTD.md with
// three processes on loopback: found, join, write, read through another
// node, forward, delete, kill the leader, restart a node from its
// directory, leave, status and metrics.
func TestWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	c := newCluster(t, 3, []string{"-v"}, nil)
	c.bootstrap()
	n1, n2, n3 := c.procs[0], c.procs[1], c.procs[2]

	expect := func(method string, p *proc, path, body string, wantCode int, wantBody string) {
		t.Helper()
		code, got := do(method, p.url(path), body)
		if code != wantCode || (wantBody != "" && got != wantBody) {
			t.Fatalf("%s %s on %s: %d %q, want %d %q", method, path, p.addr(), code, got, wantCode, wantBody)
		}
	}
	expect("POST", n1, "/db/foo", "bar", 200, "")
	expect("GET", n2, "/db/foo", "", 200, "bar")
	expect("POST", n3, "/db/fwd", "through a follower", 200, "")
	expect("GET", n1, "/db/fwd", "", 200, "through a follower")
	waitFor(t, 5*time.Second, "a stale read to see the write", func() bool {
		code, body := do("GET", n3.url("/db/foo?stale=true"), "")
		return code == 200 && body == "bar"
	})
	expect("DELETE", n2, "/db/fwd", "", 200, "")
	expect("GET", n3, "/db/fwd", "", 404, "")
	expect("DELETE", n2, "/db/never-there", "", 200, "")
	expect("GET", n1, "/db/", "", 400, "")
	expect("POST", n1, "/db/"+strings.Repeat("k", 1025), "v", 400, "")
	expect("POST", n1, "/db/big", strings.Repeat("v", 1<<20+1), 413, "")
	checkHelloFlag(t, n1, false)

	// Kill the leader: the other two elect one and keep serving.
	old := c.leader(5 * time.Second)
	old.kill()
	var rest []*proc
	for _, p := range c.procs {
		if p != old {
			rest = append(rest, p)
		}
	}
	waitFor(t, 20*time.Second, "a new leader", func() bool {
		st, err := rest[0].status()
		return err == nil && st.Leader != "0" && st.Leader != old.id
	})
	expect("POST", rest[0], "/db/after", "the kill", 200, "")
	expect("GET", rest[1], "/db/after", "", 200, "the kill")

	// Restart the killed node from its directory, without -join and with
	// -trace: it recovers its log and catches up.
	old.args = []string{"-trace"}
	old.start()
	waitFor(t, 20*time.Second, "the restarted node to catch up", func() bool {
		code, body := do("GET", old.url("/db/after"), "")
		return code == 200 && body == "the kill"
	})
	expect("GET", old, "/db/foo", "", 200, "bar")
	if !strings.Contains(old.logText(), "level=DEBUG-4") {
		t.Fatal("-trace logged no trace lines")
	}
	if !strings.Contains(n2.logText(), "msg=state") && !strings.Contains(n3.logText(), "msg=state") {
		t.Fatal("-v logged no role changes")
	}

	// n3 leaves; the rest go on.
	expect("POST", n3, "/leave", "", 200, "")
	waitFor(t, 10*time.Second, "the membership to shrink", func() bool {
		st, err := n1.status()
		return err == nil && len(st.Voters) == 2
	})
	n3.kill()
	expect("POST", n1, "/db/two", "nodes", 200, "")
	expect("GET", n2, "/db/two", "", 200, "nodes")

	families, metrics, err := scrape(n1)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"embraft_term", "embraft_commit_index", "embraft_applied_index",
		"embraft_last_index", "embraft_is_leader"} {
		if _, ok := sample(families, name); !ok {
			t.Fatalf("metrics lack %s:\n%s", name, metrics)
		}
	}
	if v, _ := sample(families, "raftd_requests_total", "method", "POST", "code", "200"); v == 0 {
		t.Fatalf(`metrics lack raftd_requests_total{method="POST",code="200"}:\n%s`, metrics)
	}
}
