package main

// TestScale starts three groups-host processes on 127.0.0.1 with the same
// groups, waits until every group has a leader and every replica is
// quiescent, reports each process's idle CPU, writes one entry to every
// group, then kills one process (SIGKILL), restarts it from its data
// directory, and checks that it runs every group again with a leader
// known and the entry applied, and that it takes new entries.
//
// Sizes: 10,000 groups by default (25-35 s on 2 cores; run-tests.sh runs
// it so), 1,000 with -short (its race-detector and debug-GC passes);
// EMBRAFT_SCALE_GROUPS=N sets N.
//
// The idle CPU is measured over 10 s (5 s with -short) right after the
// groups went quiet, before the followers' first check-ins (50 to 100
// election timeouts later). EMBRAFT_SCALE_IDLE_AFTER=D waits D more
// before measuring and EMBRAFT_SCALE_IDLE_WINDOW=D measures over D, for
// the steady state with check-ins going (docs/BENCHMARKS.md):
//
//	go test -v -run Scale ./cmd/groups-host
//	EMBRAFT_SCALE_GROUPS=20000 go test -v -run Scale -timeout 30m ./cmd/groups-host
//	EMBRAFT_SCALE_IDLE_AFTER=2m EMBRAFT_SCALE_IDLE_WINDOW=2m go test -v -run Scale -timeout 30m ./cmd/groups-host

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	scaleTick         = 100 * time.Millisecond
	scaleQuiesceTicks = 10
	// A quiet process should stay below 2 % of a core; above this it is
	// clearly not quiet (every group heartbeating), which is the only
	// failure the CPU figure causes (machines shared with builds vary).
	brokenIdleCPU = 0.25
)

type hostProc struct {
	id         uint64
	args       []string
	httpAddr   string
	cmd        *exec.Cmd
	log        *bytes.Buffer
	waitResult chan error
}

// envDuration is the duration an environment variable gives, or def.
func envDuration(t *testing.T, name string, def time.Duration) time.Duration {
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 {
		t.Fatalf("%s=%q: a duration such as 90s", name, s)
	}
	return d
}

func scaleGroups(t *testing.T) int {
	if s := os.Getenv("EMBRAFT_SCALE_GROUPS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("EMBRAFT_SCALE_GROUPS=%q: a positive integer", s)
		}
		return n
	}
	if testing.Short() {
		return 1000
	}
	return 10000
}

func TestScale(t *testing.T) {
	groups := scaleGroups(t)
	// Every phase's bound grows with the groups: starting them, electing,
	// replaying the WAL.
	phase := 30*time.Second + time.Duration(groups)*6*time.Millisecond
	dir := t.TempDir()
	bin := filepath.Join(dir, "groups-host")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	streamPorts, httpPorts := freePorts(t, 3), freePorts(t, 3)
	hosts := make([]*hostProc, 3)
	for i := range hosts {
		id := uint64(i + 1)
		var peers []string
		for j := range hosts {
			if j != i {
				peers = append(peers, fmt.Sprintf("%d=127.0.0.1:%d", j+1, streamPorts[j]))
			}
		}
		h := &hostProc{id: id, httpAddr: fmt.Sprintf("127.0.0.1:%d", httpPorts[i])}
		h.args = []string{
			"-id", strconv.FormatUint(id, 10),
			"-listen", fmt.Sprintf("127.0.0.1:%d", streamPorts[i]),
			"-http", h.httpAddr,
			"-peers", strings.Join(peers, ","),
			"-groups", strconv.Itoa(groups),
			"-data", filepath.Join(dir, fmt.Sprintf("n%d", id)),
			"-quiesce-ticks", strconv.Itoa(scaleQuiesceTicks),
			"-tick", scaleTick.String(),
		}
		hosts[i] = h
	}
	t.Cleanup(func() {
		for _, h := range hosts {
			h.kill()
		}
	})
	start := time.Now()
	for _, h := range hosts {
		h.start(t, bin)
	}
	for _, h := range hosts {
		waitStatus(t, h, phase, "every group led", func(st statusReply) bool {
			return st.Running == groups && st.WithLeader == groups
		})
	}
	t.Logf("%d groups on 3 processes: every group has a leader known everywhere after %.1f s", groups, time.Since(start).Seconds())

	// Quiescence first shows in the replicas' status; the CPU is measured
	// after that, with nothing asking the hosts anything. A follower's
	// periodic check-in briefly wakes its group, so a snapshot of the
	// status may catch a few groups awake: 99 % is quiet enough.
	quietStart := time.Now()
	for _, h := range hosts {
		waitStatus(t, h, phase, "the replicas quiescent", func(st statusReply) bool { return st.Quiescent*100 >= groups*99 }, "quiescent=1")
	}
	t.Logf("at least 99 %% of the replicas quiescent on every process %.1f s later", time.Since(quietStart).Seconds())
	window := 10 * time.Second
	if testing.Short() {
		window = 5 * time.Second
	}
	window = envDuration(t, "EMBRAFT_SCALE_IDLE_WINDOW", window)
	after := envDuration(t, "EMBRAFT_SCALE_IDLE_AFTER", 0)
	time.Sleep(after)
	before := make([]time.Duration, 3)
	for i, h := range hosts {
		before[i] = procCPU(t, h.cmd.Process.Pid)
	}
	time.Sleep(window)
	for i, h := range hosts {
		share := float64(procCPU(t, h.cmd.Process.Pid)-before[i]) / float64(window)
		t.Logf("idle CPU, process %d: %.2f %% of a core over %v, %v after quiescence (target < 2 %%)", h.id, 100*share, window, after)
		if share > brokenIdleCPU {
			t.Errorf("process %d: %.1f %% of a core while every group is quiescent", h.id, 100*share)
		}
	}

	fillAll(t, hosts, groups, phase, "before", "1")
	victim := hosts[2]
	victim.kill()
	restart := time.Now()
	victim.start(t, bin)
	waitStatus(t, victim, phase, "every group back with a leader", func(st statusReply) bool {
		return st.Running == groups && st.WithLeader == groups
	})
	waitCheck(t, victim, groups, phase, "before", "1")
	t.Logf("process %d restarted from its data directory: %d groups running, led and applied after %.1f s",
		victim.id, groups, time.Since(restart).Seconds())
	// The restarted replicas take part again: a new entry in every group
	// reaches them.
	fillAll(t, hosts, groups, phase, "after", "2")
	waitCheck(t, victim, groups, phase, "after", "2")
}

func (h *hostProc) start(t *testing.T, bin string) {
	t.Helper()
	h.log = &bytes.Buffer{}
	h.cmd = exec.Command(bin, h.args...)
	h.cmd.Stdout, h.cmd.Stderr = h.log, h.log
	if err := h.cmd.Start(); err != nil {
		t.Fatalf("start process %d: %v", h.id, err)
	}
	h.waitResult = make(chan error, 1)
	go func(cmd *exec.Cmd, ch chan error) { ch <- cmd.Wait() }(h.cmd, h.waitResult)
}

// kill ends the process with SIGKILL (no clean shutdown) and reaps it.
func (h *hostProc) kill() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.cmd.Process.Kill()
	<-h.waitResult
	h.cmd = nil
}

// exited reports a process that ended by itself, with its output.
func (h *hostProc) exited() error {
	select {
	case err := <-h.waitResult:
		h.waitResult <- err
		return fmt.Errorf("process %d exited (%v):\n%s", h.id, err, h.log)
	default:
		return nil
	}
}

func waitStatus(t *testing.T, h *hostProc, timeout time.Duration, what string, done func(statusReply) bool, query ...string) {
	t.Helper()
	url := "/status"
	if len(query) > 0 {
		url += "?" + query[0]
	}
	var last statusReply
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := h.exited(); err != nil {
			t.Fatal(err)
		}
		if err := getJSON(h, url, &last); err == nil && done(last) {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("process %d: %s: not after %v (last status %+v)", h.id, what, timeout, last)
}

// fillAll writes key=value to every group through the hosts that lead
// them, round after round (a group whose leadership moved is left out of
// a round), until every host's replica of every group applied it.
func fillAll(t *testing.T, hosts []*hostProc, groups int, timeout time.Duration, key, value string) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		for _, h := range hosts {
			var reply map[string]int
			if err := postJSON(h, "/fill?key="+key+"&value="+value, &reply); err != nil {
				t.Fatalf("process %d: fill: %v", h.id, err)
			}
		}
		everywhere := true
		for _, h := range hosts {
			var c checkReply
			if err := getJSON(h, "/check?key="+key+"&value="+value, &c); err != nil {
				t.Fatalf("process %d: check: %v", h.id, err)
			}
			everywhere = everywhere && c.GroupsWithValue == groups
		}
		if everywhere {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s=%s: not applied in every group on every process after %v", key, value, timeout)
}

type checkReply struct {
	GroupsWithValue int `json:"groups_with_value"`
	Running         int `json:"running"`
}

func waitCheck(t *testing.T, h *hostProc, groups int, timeout time.Duration, key, value string) {
	t.Helper()
	var c checkReply
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if err := h.exited(); err != nil {
			t.Fatal(err)
		}
		if err := getJSON(h, "/check?key="+key+"&value="+value, &c); err == nil && c.GroupsWithValue == groups {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("process %d: %s=%s applied in %d of %d groups after %v", h.id, key, value, c.GroupsWithValue, groups, timeout)
}

var client = &http.Client{Timeout: time.Minute}

func getJSON(h *hostProc, path string, v any) error {
	resp, err := client.Get("http://" + h.httpAddr + path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

func postJSON(h *hostProc, path string, v any) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+h.httpAddr+path, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("POST %s: %s", path, resp.Status)
	}
	return json.NewDecoder(resp.Body).Decode(v)
}

// procCPU is a process's user and system time from /proc/<pid>/stat.
func procCPU(t *testing.T, pid int) time.Duration {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	// The command name (field 2) may hold spaces; the fields after its
	// closing parenthesis are fixed: utime and stime are the 12th and
	// 13th of them.
	rest := string(b[bytes.LastIndexByte(b, ')')+2:])
	f := strings.Fields(rest)
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		t.Fatalf("/proc/%d/stat: %q", pid, b)
	}
	// Linux reports both in clock ticks of USER_HZ, 100 per second on
	// every architecture Go supports here.
	return time.Duration(utime+stime) * (time.Second / 100)
}

func freePorts(t *testing.T, n int) []int {
	t.Helper()
	ls := make([]net.Listener, n)
	ports := make([]int, n)
	for i := range ls {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ls[i], ports[i] = l, l.Addr().(*net.TCPAddr).Port
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
