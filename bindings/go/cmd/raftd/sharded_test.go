package main

import (
	"encoding/binary"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestWalkthroughSharded follows docs/RAFTD.md "Shards" with three
// processes of eight groups on loopback: found, join (the joiners' own
// -shards ignored), writes and linearizable reads of keys in every group
// through every node, forwarding to each group's leader, the sharded
// status and metrics, the group-frames hello, a node killed and
// restarted (catching up through snapshots), a fourth node killed while
// it joins the groups and restarted to finish, its leave from every
// group, and the leave of group 1's leader.
func TestWalkthroughSharded(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	const shards = 8
	// A snapshot every few entries, keeping one behind it: the founder,
	// killed and restarted, catches up through its groups' snapshots,
	// and the fourth node joins from them.
	c := newCluster(t, 3, []string{"-v", "-shards", strconv.Itoa(shards)},
		[]string{"RAFTD_SNAPSHOT_EVERY=4", "RAFTD_COMPACT_KEEP=1"})
	// A joining node takes the cluster's number of groups.
	c.procs[1].args = []string{"-v", "-shards", "2"}
	c.bootstrap()
	for _, p := range c.procs {
		checkShardedStatus(t, p, shards, c.procs)
		var ident nodeFile
		data, err := os.ReadFile(filepath.Join(p.dir, "node.json"))
		if err == nil {
			err = json.Unmarshal(data, &ident)
		}
		if err != nil || ident.Shards == nil || *ident.Shards != shards || ident.ID != p.id {
			t.Fatalf("%s: %+v, %v", p.dir, ident, err)
		}
	}

	expect := func(method string, p *proc, path, body string, wantCode int, wantBody string) {
		t.Helper()
		code, got := do(method, p.url(path), body)
		if code != wantCode || (wantBody != "" && got != wantBody) {
			t.Fatalf("%s %s on %s: %d %q, want %d %q", method, path, p.addr(), code, got, wantCode, wantBody)
		}
	}
	keys := keysInEveryGroup(t, shards)
	writeAll := func(round string, through []*proc) {
		t.Helper()
		for i, key := range keys {
			expect("POST", through[i%len(through)], "/db/"+key, round+"-"+key, 200, "")
		}
	}
	readAll := func(round string, through []*proc) {
		t.Helper()
		for _, p := range through {
			for _, key := range keys {
				expect("GET", p, "/db/"+key, "", 200, round+"-"+key)
			}
		}
	}
	writeAll("one", c.procs)
	readAll("one", c.procs)
	expect("DELETE", c.procs[2], "/db/"+keys[0], "", 200, "")
	expect("GET", c.procs[1], "/db/"+keys[0], "", 404, "")
	expect("POST", c.procs[0], "/db/"+keys[0], "one-"+keys[0], 200, "")
	expect("POST", c.procs[0], "/db/"+strings.Repeat("k", 1025), "v", 400, "")

	// A node that does not lead a key's group forwards to the one that
	// does, but never a request forwarded already.
	checkForwardedOnce(t, c.procs, keys, shards)

	checkShardedMetrics(t, c.procs[0], shards)
	checkHelloFlag(t, c.procs[0], true)

	// Kill the founder (it led every group first): the others elect
	// leaders for all groups and keep serving every key.
	founder := c.procs[0]
	founder.kill()
	rest := c.procs[1:]
	waitFor(t, 30*time.Second, "leaders without the founder", func() bool {
		st, err := rest[0].status()
		if err != nil || len(st.Groups) != shards {
			return false
		}
		for _, g := range st.Groups {
			if g.Leader == "0" || g.Leader == founder.id {
				return false
			}
		}
		return true
	})
	for _, round := range []string{"two-a", "two-b", "two"} {
		writeAll(round, rest)
	}
	readAll("two", rest)
	// The snapshot loop looks once a second: let the leaders snapshot
	// and compact past what the founder has.
	time.Sleep(2500 * time.Millisecond)
	founder.start()
	waitFor(t, 30*time.Second, "the restarted founder to catch up", func() bool {
		for _, key := range keys {
			if code, body := do("GET", founder.url("/db/"+key), ""); code != 200 || body != "two-"+key {
				return false
			}
		}
		return true
	})
	readAll("two", c.procs)
	families, _, err := scrape(founder)
	if err != nil {
		t.Fatal(err)
	}
	installed := 0
	for g := 1; g <= shards; g++ {
		if v, _ := sample(families, "embraft_snapshot_receives_total", "group", strconv.Itoa(g)); v > 0 {
			installed++
		}
	}
	if installed == 0 {
		t.Fatal("the restarted founder caught up without a snapshot in any group")
	}
	t.Logf("groups in which the restarted founder installed a snapshot: %d of %d", installed, shards)

	// A fourth node is killed as soon as it has joined group 1 (its
	// node.json exists), most likely before it joined the others; its
	// restart, without -join, joins the groups it is not a member of.
	fourth := c.addProc()
	fourth.start("-join", rest[0].addr())
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(time.Millisecond) {
		if _, err := os.Stat(filepath.Join(fourth.dir, "node.json")); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the fourth node did not join group 1")
		}
	}
	fourth.kill()
	fourth.start()
	waitFor(t, 60*time.Second, "the fourth node to be a member of every group", func() bool {
		st, err := fourth.status()
		fourth.id = st.ID
		return err == nil && st.member() && len(st.Groups) == shards
	})
	restartLog := fourth.logText()[strings.LastIndex(fourth.logText(), "msg=restarting"):]
	t.Logf("groups the fourth node joined after its restart: %d", strings.Count(restartLog, `msg="joining group"`))
	checkShardedStatus(t, c.procs[0], shards, c.procs)
	readAll("two", []*proc{fourth})

	// It leaves every group, and the address book.
	expect("POST", fourth, "/leave", "", 200, "")
	three := c.procs[:3]
	checkShardedStatus(t, three[2], shards, three)
	fourth.kill()
	writeAll("three", three)
	readAll("three", three)

	// The leader of group 1, which leads other groups too, leaves: it
	// hands each of its groups over before it is removed from it.
	leader := c.leader(10 * time.Second)
	st, err := leader.status()
	if err != nil {
		t.Fatal(err)
	}
	led := 0
	for _, g := range st.Groups {
		if g.Role == "leader" {
			led++
		}
	}
	expect("POST", leader, "/leave", "", 200, "")
	var two []*proc
	for _, p := range three {
		if p != leader {
			two = append(two, p)
		}
	}
	checkShardedStatus(t, two[0], shards, two)
	checkShardedStatus(t, two[1], shards, two)
	leader.kill()
	writeAll("four", two)
	readAll("four", two)
	t.Logf("the leaving leader of group 1 led %d of %d groups", led, shards)
}

// checkShardedStatus checks p's /status: the shard count, one object per
// group in id order, each group's voters exactly the members' ids, and
// the address book naming every member.
func checkShardedStatus(t *testing.T, p *proc, shards int, members []*proc) {
	t.Helper()
	var want []string
	for _, m := range members {
		want = append(want, m.id)
	}
	slices.Sort(want)
	waitFor(t, 20*time.Second, "the membership on "+p.addr(), func() bool {
		code, body := do("GET", p.url("/status"), "")
		var st struct {
			statusJSON
			Peers map[string]string `json:"peers"`
		}
		if code != 200 || json.Unmarshal([]byte(body), &st) != nil || st.Shards != shards || len(st.Groups) != shards {
			return false
		}
		for i, g := range st.Groups {
			voters := slices.Sorted(slices.Values(g.Voters))
			if g.Group != uint64(i+1) || !slices.Equal(voters, want) || g.Applied > g.Commit || g.Commit > g.Last {
				return false
			}
		}
		if !slices.Equal(slices.Sorted(slices.Values(st.Voters)), want) || len(st.Peers) != len(want) {
			return false
		}
		for _, m := range members {
			if st.Peers[m.id] != m.addr() {
				return false
			}
		}
		return true
	})
}

// checkForwardedOnce writes a key through a node that does not lead its
// group: relayed to the leader, it succeeds; marked as forwarded
// already, it gets 503.
func checkForwardedOnce(t *testing.T, procs []*proc, keys []string, shards int) {
	t.Helper()
	for _, p := range procs {
		st, err := p.status()
		if err != nil {
			t.Fatal(err)
		}
		for _, key := range keys {
			g := st.Groups[shardOf(key, shards)-1]
			if g.Role == "leader" || g.Leader == "0" {
				continue
			}
			if code, body := do("POST", p.url("/db/"+key), "relayed"); code != 200 {
				t.Fatalf("write of %s through a follower of its group: %d %s", key, code, body)
			}
			req, _ := http.NewRequest("POST", p.url("/db/"+key), strings.NewReader("bounced"))
			req.Header.Set("X-Raftd-Forwarded", "1")
			resp, err := httpClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get("Retry-After") != "1" {
				t.Fatalf("a forwarded write to a follower of group %d: %d", g.Group, resp.StatusCode)
			}
			return
		}
	}
	t.Fatal("no node follows any group")
}

// checkShardedMetrics scrapes a sharded node: every embraft_* series but
// the WAL's has a group label, one per group; the WAL's and the request
// counter have none.
func checkShardedMetrics(t *testing.T, p *proc, shards int) {
	t.Helper()
	families, text, err := scrape(p)
	if err != nil {
		t.Fatal(err)
	}
	for name, mf := range families {
		grouped := strings.HasPrefix(name, "embraft_") && !strings.HasPrefix(name, "embraft_disk_wal_")
		groups := map[string]bool{}
		for _, m := range mf.GetMetric() {
			g := ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "group" {
					g = l.GetValue()
				}
			}
			if grouped == (g == "") {
				t.Fatalf("%s: a series with group %q:\n%s", name, g, text)
			}
			groups[g] = true
		}
		if grouped && len(groups) != shards {
			t.Fatalf("%s: series for %d groups, want %d", name, len(groups), shards)
		}
	}
	for g := 1; g <= shards; g++ {
		if _, ok := sample(families, "embraft_term", "group", strconv.Itoa(g)); !ok {
			t.Fatalf("no embraft_term{group=%q}", strconv.Itoa(g))
		}
	}
	if v, _ := sample(families, "embraft_disk_wal_write_bytes_total"); v <= 0 {
		t.Fatalf("embraft_disk_wal_write_bytes_total %v", v)
	}
	table := metricsTable(t)
	for _, row := range table {
		if families[row.name] == nil {
			t.Fatalf("no %s", row.name)
		}
	}
}

// checkHelloFlag dials p's stream port: a hello with the group-frames
// flag is accepted by a sharded node and refused with status 5 by a
// one-group node, and the other way round without it.
func checkHelloFlag(t *testing.T, p *proc, sharded bool) {
	t.Helper()
	var ident nodeFile
	data, err := os.ReadFile(filepath.Join(p.dir, "node.json"))
	if err == nil {
		err = json.Unmarshal(data, &ident)
	}
	if err != nil {
		t.Fatal(err)
	}
	cluster, _ := strconv.ParseUint(ident.ClusterID, 10, 64)
	self, _ := strconv.ParseUint(ident.ID, 10, 64)
	want := map[uint16]uint16{0: 5, 1: 0}
	if !sharded {
		want = map[uint16]uint16{0: 0, 1: 5}
	}
	for flags, want := range want {
		conn, err := net.DialTimeout("tcp", p.addr(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		hello := []byte("EMRF")
		hello = binary.LittleEndian.AppendUint16(hello, 1)
		hello = binary.LittleEndian.AppendUint16(hello, flags)
		hello = binary.LittleEndian.AppendUint64(hello, cluster)
		hello = binary.LittleEndian.AppendUint64(hello, 42) // a sender the cluster does not know
		hello = binary.LittleEndian.AppendUint64(hello, self)
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		reply := make([]byte, 16)
		if _, err := conn.Write(hello); err == nil {
			_, err = io.ReadFull(conn, reply)
		}
		conn.Close()
		if err != nil || string(reply[:4]) != "EMRF" {
			t.Fatalf("hello with flags %d: %v, reply % x", flags, err, reply)
		}
		if status := binary.LittleEndian.Uint16(reply[6:]); status != want {
			t.Fatalf("hello with flags %d: status %d, want %d", flags, status, want)
		}
	}
}
