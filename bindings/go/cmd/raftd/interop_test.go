package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// cRaftdBinary is the C raftd of examples/c/raftd (built by its Makefile
// into target/raftd-c), or EMBRAFT_C_RAFTD.
func cRaftdBinary() string {
	if p := os.Getenv("EMBRAFT_C_RAFTD"); p != "" {
		return p
	}
	p, _ := filepath.Abs("../../../../target/raftd-c/raftd")
	return p
}

// TestInteropWithCRaftd runs one cluster of Go and C raftd processes: the
// stream transport, the replicated commands and the HTTP contract must
// agree byte for byte across the two implementations.
func TestInteropWithCRaftd(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	cBinary := cRaftdBinary()
	if _, err := os.Stat(cBinary); err != nil {
		t.Skipf("no C raftd at %s (make -C examples/c/raftd)", cBinary)
	}
	c := newCluster(t, 3, []string{"-v"}, nil)
	c.procs[1].binary = cBinary // Go founder, C joiner, Go joiner
	c.bootstrap()
	goNode, cNode, goNode2 := c.procs[0], c.procs[1], c.procs[2]

	expect := func(method string, p *proc, path, body string, wantCode int, wantBody string) {
		t.Helper()
		code, got := do(method, p.url(path), body)
		if code != wantCode || (wantBody != "" && got != wantBody) {
			t.Fatalf("%s %s on %s: %d %q, want %d %q", method, path, p.addr(), code, got, wantCode, wantBody)
		}
	}
	expect("POST", goNode, "/db/from-go", "hello C", 200, "")
	expect("GET", cNode, "/db/from-go", "", 200, "hello C")
	expect("POST", cNode, "/db/from-c", "hello Go", 200, "")
	expect("GET", goNode2, "/db/from-c", "", 200, "hello Go")

	// Kill whichever Go node leads (and restart it from its directory)
	// until the C node leads, then write through a Go follower, which
	// forwards to the C leader.
	for attempt := 0; ; attempt++ {
		leader := c.leader(20 * time.Second)
		if leader == cNode {
			break
		}
		if attempt == 8 {
			t.Skip("the C node never won an election; the mixed cluster worked otherwise")
		}
		leader.kill()
		waitFor(t, 20*time.Second, "a new leader", func() bool {
			st, err := cNode.status()
			return err == nil && st.Leader != "0" && st.Leader != leader.id
		})
		leader.start()
		waitFor(t, 20*time.Second, "the restarted node to catch up", func() bool {
			code, body := do("GET", leader.url("/db/from-c"), "")
			return code == 200 && body == "hello Go"
		})
	}
	expect("POST", goNode2, "/db/via-c-leader", "forwarded", 200, "")
	expect("GET", goNode, "/db/via-c-leader", "", 200, "forwarded")
	expect("DELETE", goNode, "/db/from-go", "", 200, "")
	expect("GET", cNode, "/db/from-go", "", 404, "")
}
