package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// raftdBinary is built once per test run by TestMain (with -race when
// EMBRAFT_RAFTD_RACE=1).
var raftdBinary string

func TestMain(m *testing.M) {
	flag.Parse()
	if testing.Short() {
		os.Exit(m.Run()) // the multi-process tests skip themselves
	}
	dir, err := os.MkdirTemp("", "raftd-bin")
	if err != nil {
		panic(err)
	}
	raftdBinary = filepath.Join(dir, "raftd")
	buildArgs := []string{"build", "-o", raftdBinary}
	if os.Getenv("EMBRAFT_RAFTD_RACE") == "1" {
		// The servers under test run under the race detector too: it then
		// watches the binding's goroutines under kills, pauses and
		// partitions.
		buildArgs = append(buildArgs, "-race")
	}
	build := exec.Command("go", append(buildArgs, ".")...)
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building raftd:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// freePort asks the kernel for a free loopback port. Another process may
// take it before raftd binds it; tests then fail loudly, not silently.
func freePort(t *testing.T) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// proc is one raftd process.
type proc struct {
	t    *testing.T
	port int
	dir  string
	args []string // flags besides -p and the directory
	// binary is the raftd to run; empty for this package's.
	binary string
	env    []string

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed once cmd.Wait returned
	log    *syncWriter
	id     string
}

func (p *proc) addr() string { return "localhost:" + strconv.Itoa(p.port) }

func (p *proc) url(path string) string { return "http://" + p.addr() + path }

// start launches raftd with the given extra flags (-join only the first
// time, by the caller's choice).
func (p *proc) start(extra ...string) {
	p.t.Helper()
	args := append([]string{"-p", strconv.Itoa(p.port)}, p.args...)
	args = append(append(args, extra...), p.dir)
	binary := p.binary
	if binary == "" {
		binary = raftdBinary
	}
	cmd := exec.Command(binary, args...)
	cmd.Env = append(os.Environ(), p.env...)
	// One log per node across restarts, so nothing is lost at a kill.
	p.mu.Lock()
	if p.log == nil {
		p.log = &syncWriter{}
	}
	log := p.log
	p.mu.Unlock()
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		p.t.Fatal(err)
	}
	exited := make(chan struct{})
	p.mu.Lock()
	p.cmd, p.log, p.exited = cmd, log, exited
	p.mu.Unlock()
	go func() {
		cmd.Wait()
		close(exited)
	}()
}

// syncWriter collects a process's stderr, written by exec's copying
// goroutine and read by the test.
type syncWriter struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *syncWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(b)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

func (p *proc) signal(sig syscall.Signal) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil && p.cmd.Process != nil {
		p.cmd.Process.Signal(sig)
	}
}

// kill stops the process hard and waits until it is gone, so its port and
// directory are free for a restart.
func (p *proc) kill() {
	p.mu.Lock()
	cmd, exited := p.cmd, p.exited
	p.cmd = nil
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGCONT)
	cmd.Process.Kill()
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
	}
	// Wait for the port to be released too.
	for i := 0; i < 200; i++ {
		c, err := net.DialTimeout("tcp", p.addr(), 50*time.Millisecond)
		if err != nil {
			return
		}
		c.Close()
		time.Sleep(10 * time.Millisecond)
	}
}

func (p *proc) logText() string {
	p.mu.Lock()
	log := p.log
	p.mu.Unlock()
	if log == nil {
		return ""
	}
	return log.String()
}

var httpClient = &http.Client{Timeout: 15 * time.Second}

// do sends one request and returns the status and body (status 0 on a
// transport error).
func do(method, url, body string) (int, string) {
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

type statusJSON struct {
	ID     string   `json:"id"`
	Role   string   `json:"role"`
	Leader string   `json:"leader"`
	Voters []string `json:"voters"`
	Commit uint64   `json:"commit"`
	Apply  uint64   `json:"applied"`
	// A sharded node's.
	Shards int               `json:"shards"`
	Groups []groupStatusJSON `json:"groups"`
}

// groupStatusJSON is one group of a sharded node's /status.
type groupStatusJSON struct {
	Group    uint64   `json:"group"`
	Role     string   `json:"role"`
	Term     uint64   `json:"term"`
	Leader   string   `json:"leader"`
	Commit   uint64   `json:"commit"`
	Applied  uint64   `json:"applied"`
	Last     uint64   `json:"last_index"`
	Voters   []string `json:"voters"`
	Learners []string `json:"learners"`
}

// member tells whether the node is a voter with a known leader in each
// of its groups (group 1 of a one-group node, every group of a sharded
// one).
func (st statusJSON) member() bool {
	groups := st.Groups
	if len(groups) == 0 {
		groups = []groupStatusJSON{{Leader: st.Leader, Voters: st.Voters}}
	}
	for _, g := range groups {
		if g.Leader == "0" || !slices.Contains(g.Voters, st.ID) {
			return false
		}
	}
	return true
}

// leads tells whether the node leads all its groups (a founder does,
// before anyone joined).
func (st statusJSON) leads() bool {
	for _, g := range st.Groups {
		if g.Role != "leader" {
			return false
		}
	}
	return st.Role == "leader"
}

func (p *proc) status() (statusJSON, error) {
	code, body := do("GET", p.url("/status"), "")
	var st statusJSON
	if code != 200 {
		return st, fmt.Errorf("status %d: %s", code, body)
	}
	err := json.Unmarshal([]byte(body), &st)
	return st, err
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cluster is a set of raftd processes founded by the first.
type cluster struct {
	t     *testing.T
	procs []*proc
	base  string
	args  []string
	env   []string
}

func newCluster(t *testing.T, size int, args []string, env []string) *cluster {
	// Small WAL segments: many nodes share the disk with other jobs.
	c := &cluster{t: t, base: t.TempDir(), args: args, env: append(env, "RAFTD_SEGMENT_SIZE=4194304")}
	for i := 0; i < size; i++ {
		c.addProc()
	}
	t.Cleanup(func() {
		for i, p := range c.procs {
			p.kill()
			// A raftd built with -race reports races on its stderr.
			if strings.Contains(p.logText(), "WARNING: DATA RACE") {
				t.Errorf("node %d reported a data race", i+1)
			}
		}
		if t.Failed() {
			for i, p := range c.procs {
				t.Logf("--- node %d log (tail):\n%s", i+1, tail(p.logText(), 4000))
			}
		}
	})
	return c
}

// addProc adds a node that is not started yet.
func (c *cluster) addProc() *proc {
	p := &proc{t: c.t, port: freePort(c.t), dir: filepath.Join(c.base, fmt.Sprintf("node.%d", len(c.procs)+1)),
		args: c.args, env: c.env}
	c.procs = append(c.procs, p)
	return p
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// bootstrap starts the founder, then joins the others one by one.
func (c *cluster) bootstrap() {
	c.t.Helper()
	first := c.procs[0]
	first.start()
	waitFor(c.t, 15*time.Second, "the founder to lead", func() bool {
		st, err := first.status()
		return err == nil && st.leads()
	})
	for _, p := range c.procs[1:] {
		p.start("-join", first.addr())
		waitFor(c.t, 30*time.Second, "a node to join", func() bool {
			st, err := p.status()
			return err == nil && st.member()
		})
	}
	for _, p := range c.procs {
		st, err := p.status()
		if err != nil {
			c.t.Fatal(err)
		}
		p.id = st.ID
	}
}

// leader returns the process that currently leads, waiting for one.
func (c *cluster) leader(timeout time.Duration) *proc {
	c.t.Helper()
	var found *proc
	waitFor(c.t, timeout, "a leader", func() bool {
		for _, p := range c.procs {
			if st, err := p.status(); err == nil && st.Role == "leader" {
				found = p
				return true
			}
		}
		return false
	})
	return found
}
