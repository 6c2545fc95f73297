package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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

// TestInteropWithCRaftdSharded runs one sharded cluster of Go and C raftd
// processes (docs/RAFTD.md "Shards"): the C node joins through the Go
// founder and takes its number of groups, a Go node joins through the C
// node; keys of every group are written and read through every node, the
// founder is killed and restarted, and the C node leaves every group.
func TestInteropWithCRaftdSharded(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	cBinary := cRaftdBinary()
	usage, _ := exec.Command(cBinary).CombinedOutput()
	if !strings.Contains(string(usage), "-shards") {
		t.Skipf("no C raftd with -shards at %s (make -C examples/c/raftd)", cBinary)
	}
	const shards = 8
	c := newCluster(t, 3, []string{"-v", "-shards", strconv.Itoa(shards)}, nil)
	c.procs[1].binary = cBinary
	c.procs[1].args = []string{"-v"}
	first := c.procs[0]
	first.start()
	waitFor(t, 15*time.Second, "the founder to lead", func() bool {
		st, err := first.status()
		return err == nil && st.leads()
	})
	c.procs[1].start("-join", first.addr())
	c.procs[2].start("-join", c.procs[1].addr())
	for _, p := range c.procs {
		waitFor(t, 60*time.Second, "every node to be a member of every group", func() bool {
			st, err := p.status()
			p.id = st.ID
			return err == nil && st.member() && len(st.Groups) == shards
		})
	}
	for _, p := range c.procs {
		checkShardedStatus(t, p, shards, c.procs)
	}

	keys := keysInEveryGroup(t, shards)
	writeAll := func(round string, through []*proc) {
		t.Helper()
		for i, key := range keys {
			if code, body := do("POST", through[i%len(through)].url("/db/"+key), round+key); code != 200 {
				t.Fatalf("write of %s through %s: %d %s", key, through[i%len(through)].addr(), code, body)
			}
		}
	}
	readAll := func(round string, through []*proc) {
		t.Helper()
		for _, p := range through {
			for _, key := range keys {
				if code, body := do("GET", p.url("/db/"+key), ""); code != 200 || body != round+key {
					t.Fatalf("read of %s through %s: %d %q", key, p.addr(), code, body)
				}
			}
		}
	}
	writeAll("one-", c.procs)
	readAll("one-", c.procs)

	first.kill()
	rest := c.procs[1:]
	waitFor(t, 30*time.Second, "leaders without the founder", func() bool {
		st, err := rest[1].status()
		if err != nil || len(st.Groups) != shards {
			return false
		}
		for _, g := range st.Groups {
			if g.Leader == "0" || g.Leader == first.id {
				return false
			}
		}
		return true
	})
	writeAll("two-", rest)
	first.start()
	waitFor(t, 30*time.Second, "the restarted founder to catch up", func() bool {
		code, body := do("GET", first.url("/db/"+keys[len(keys)-1]), "")
		return code == 200 && body == "two-"+keys[len(keys)-1]
	})
	readAll("two-", c.procs)

	cNode := c.procs[1]
	if code, body := do("POST", cNode.url("/leave"), ""); code != 200 {
		t.Fatalf("the C node's leave: %d %s", code, body)
	}
	goNodes := []*proc{c.procs[0], c.procs[2]}
	checkShardedStatus(t, goNodes[0], shards, goNodes)
	cNode.kill()
	// A leader may remove itself without handing over first (the C raftd
	// does): its groups elect a new one once their timers run out.
	for _, p := range goNodes {
		waitFor(t, 30*time.Second, "every group to have a Go leader", func() bool {
			st, err := p.status()
			if err != nil || len(st.Groups) != shards {
				return false
			}
			for _, g := range st.Groups {
				if g.Leader != goNodes[0].id && g.Leader != goNodes[1].id {
					return false
				}
			}
			return true
		})
	}
	writeAll("three-", goNodes)
	readAll("three-", goNodes)
}
