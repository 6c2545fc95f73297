package main

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The history's operations on one key.
type kvInput struct {
	op    string // "get", "put", "delete"
	key   string
	value string
}

type kvOutput struct {
	value   string
	found   bool
	unknown bool // a write whose outcome the client could not learn
}

type kvState struct {
	value   string
	present bool
}

// registerModel is a map of registers, checked key by key.
var registerModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		byKey := map[string][]porcupine.Operation{}
		for _, op := range history {
			k := op.Input.(kvInput).key
			byKey[k] = append(byKey[k], op)
		}
		var out [][]porcupine.Operation
		for _, ops := range byKey {
			out = append(out, ops)
		}
		return out
	},
	Init: func() any { return kvState{} },
	Step: func(state, input, output any) (bool, any) {
		s, in, out := state.(kvState), input.(kvInput), output.(kvOutput)
		switch in.op {
		case "get":
			return out.found == s.present && (!out.found || out.value == s.value), s
		case "put":
			return true, kvState{in.value, true}
		default:
			return true, kvState{}
		}
	},
	DescribeOperation: func(input, output any) string {
		in, out := input.(kvInput), output.(kvOutput)
		switch {
		case in.op == "get" && !out.found:
			return fmt.Sprintf("get(%s) -> absent", in.key)
		case in.op == "get":
			return fmt.Sprintf("get(%s) -> %s", in.key, out.value)
		case out.unknown:
			return fmt.Sprintf("%s(%s, %s) -> ?", in.op, in.key, in.value)
		}
		return fmt.Sprintf("%s(%s, %s)", in.op, in.key, in.value)
	},
}

func linearizabilityDuration() time.Duration {
	if s, err := strconv.Atoi(os.Getenv("EMBRAFT_LIN_SECONDS")); err == nil && s > 0 {
		return time.Duration(s) * time.Second
	}
	if os.Getenv("EMBRAFT_SOAK") == "1" {
		return 10 * time.Minute
	}
	return 60 * time.Second
}

func TestLinearizable3(t *testing.T) { runLinearizability(t, 3, 1) }
func TestLinearizable5(t *testing.T) { runLinearizability(t, 5, 1) }

// TestLinearizableSharded3 runs the same on three nodes with eight
// groups each: keys in every group, each group with its own leader,
// log, snapshots and faults seen through one transport.
func TestLinearizableSharded3(t *testing.T) { runLinearizability(t, 3, 8) }

// runLinearizability runs concurrent clients against a raftd cluster of
// size nodes with the given number of shards while a nemesis kills,
// pauses and partitions nodes, then checks the history with Porcupine.
func runLinearizability(t *testing.T, size, shards int) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	// Snapshots every 500 entries, keeping 100 behind each: a node the
	// nemesis set back often catches up through a snapshot (the library
	// streams it; raftd's store restores it), or restarts from one. Each
	// of eight groups gets about an eighth of the writes, so it snapshots
	// more often for the same effect.
	snapshotEvery, keep := 500, 100
	keys := []string{"a", "b", "c", "d"}
	if shards > 1 {
		snapshotEvery, keep = 100, 20
		keys = keysInEveryGroup(t, shards)
	}
	c := newCluster(t, size, []string{"-shards", strconv.Itoa(shards)}, []string{"RAFTD_FAULTS=1",
		fmt.Sprintf("RAFTD_SNAPSHOT_EVERY=%d", snapshotEvery), fmt.Sprintf("RAFTD_COMPACT_KEEP=%d", keep)})
	c.bootstrap()
	duration := linearizabilityDuration()

	start := time.Now()
	now := func() int64 { return time.Since(start).Nanoseconds() }
	var (
		histMu  sync.Mutex
		history []porcupine.Operation
		clients atomic.Int64
	)
	record := func(op porcupine.Operation) {
		histMu.Lock()
		history = append(history, op)
		histMu.Unlock()
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	const workers = 6
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			client := int(clients.Add(1) - 1)
			for seq := 0; ; seq++ {
				select {
				case <-stop:
					return
				default:
				}
				p := c.procs[rand.IntN(len(c.procs))]
				key := keys[rand.IntN(len(keys))]
				in := kvInput{key: key}
				switch r := rand.IntN(10); {
				case r < 5:
					in.op = "get"
				case r < 9:
					in.op, in.value = "put", fmt.Sprintf("%d-%d", w, seq)
				default:
					in.op = "delete"
				}
				call := now()
				var code int
				var body string
				switch in.op {
				case "get":
					code, body = do("GET", p.url("/db/"+key), "")
				case "put":
					code, body = do("POST", p.url("/db/"+key), in.value)
				default:
					code, body = do("DELETE", p.url("/db/"+key), "")
				}
				ret := now()
				switch {
				case in.op == "get" && (code == 200 || code == 404):
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Return: ret,
						Output: kvOutput{value: body, found: code == 200}})
				case in.op == "get":
					// A failed read changed nothing: leave it out.
				case code == 200:
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Return: ret, Output: kvOutput{}})
				default:
					// The write may or may not have happened, at any time
					// after its call: it stays open forever. The client
					// continues as a new one, since it has no answer.
					record(porcupine.Operation{ClientId: client, Input: in, Call: call, Return: math.MaxInt64,
						Output: kvOutput{unknown: true}})
					client = int(clients.Add(1) - 1)
					time.Sleep(100 * time.Millisecond)
				}
			}
		}(w)
	}

	faults := runNemesis(t, c, duration)
	close(stop)
	wg.Wait()
	healAll(c)

	// The cluster must still serve after the faults.
	waitFor(t, 30*time.Second, "the cluster to serve a write after the run", func() bool {
		code, _ := do("POST", c.procs[0].url("/db/final"), "done")
		return code == 200
	})

	var ok, unknown, reads int
	okPerKey := map[string]int{}
	for _, op := range history {
		if op.Output.(kvOutput).unknown {
			unknown++
		} else {
			ok++
			okPerKey[op.Input.(kvInput).key]++
		}
		if op.Input.(kvInput).op == "get" {
			reads++
		}
	}
	// Every key (so every group of a sharded cluster) was served, and
	// after the faults every node reads the same value of it.
	for _, key := range keys {
		if okPerKey[key] == 0 {
			t.Fatalf("no operation on key %s completed", key)
		}
		// A write of unknown outcome may still commit meanwhile: agree
		// eventually.
		var answers []string
		waitFor(t, 30*time.Second, "every node to read the same "+key, func() bool {
			answers = answers[:0]
			for _, p := range c.procs {
				code, body := do("GET", p.url("/db/"+key), "")
				if code != 200 && code != 404 {
					return false
				}
				answers = append(answers, fmt.Sprint(code, " ", body))
			}
			return !slices.ContainsFunc(answers, func(a string) bool { return a != answers[0] })
		})
	}
	checkStart := time.Now()
	result, info := porcupine.CheckOperationsVerbose(registerModel, history, 2*time.Minute)
	t.Logf("linearizability: %d nodes, %d shards, %s, %d operations (%d reads, %d writes with unknown outcome), faults: %s; Porcupine: %s in %s",
		size, shards, duration, len(history), reads, unknown, faults, result, time.Since(checkStart).Round(time.Millisecond))
	if result != porcupine.Ok {
		path := filepath.Join(os.TempDir(), fmt.Sprintf("raftd-linearizability-%d-%d.html", size, shards))
		if err := porcupine.VisualizePath(registerModel, info, path); err == nil {
			t.Logf("visualization: %s", path)
		}
		t.Fatalf("history is not linearizable (result %s)", result)
	}
	if ok < 100 {
		t.Fatalf("only %d operations completed", ok)
	}
}

// keysInEveryGroup returns two keys of each of the groups 1 … shards.
func keysInEveryGroup(t *testing.T, shards int) []string {
	perGroup := map[uint64]int{}
	var keys []string
	for i := 0; len(keys) < 2*shards; i++ {
		if i > 1000*shards {
			t.Fatalf("no keys for every one of %d groups", shards)
		}
		key := fmt.Sprintf("k%d", i)
		if g := shardOf(key, shards); perGroup[g] < 2 {
			perGroup[g]++
			keys = append(keys, key)
		}
	}
	return keys
}

// runNemesis injects one fault at a time for duration and returns a
// summary of what it did.
func runNemesis(t *testing.T, c *cluster, duration time.Duration) string {
	deadline := time.Now().Add(duration)
	counts := map[string]int{}
	pause := func(d time.Duration) bool {
		if time.Now().Add(d).After(deadline) {
			d = time.Until(deadline)
		}
		time.Sleep(max(d, 0))
		return time.Now().Before(deadline)
	}
	for pause(time.Duration(1000+rand.IntN(2000)) * time.Millisecond) {
		victim := c.procs[rand.IntN(len(c.procs))]
		if rand.IntN(3) == 0 {
			// Aim at the leader a third of the time: its faults hurt most.
			for _, p := range c.procs {
				if st, err := p.status(); err == nil && st.Role == "leader" {
					victim = p
				}
			}
		}
		hold := time.Duration(500+rand.IntN(2500)) * time.Millisecond
		switch rand.IntN(3) {
		case 0:
			counts["kill"]++
			victim.kill()
			time.Sleep(hold)
			victim.start()
		case 1:
			counts["pause"]++
			victim.signal(syscall.SIGSTOP)
			time.Sleep(hold)
			victim.signal(syscall.SIGCONT)
		default:
			counts["partition"]++
			var others []string
			for _, p := range c.procs {
				if p != victim {
					others = append(others, p.id)
					do("POST", p.url("/debug/partition"), victim.id)
				}
			}
			do("POST", victim.url("/debug/partition"), strings.Join(others, ","))
			time.Sleep(hold)
			healAll(c)
		}
	}
	return fmt.Sprintf("%d kills, %d pauses, %d partitions", counts["kill"], counts["pause"], counts["partition"])
}

func healAll(c *cluster) {
	for _, p := range c.procs {
		p.signal(syscall.SIGCONT)
		do("POST", p.url("/debug/partition"), "")
	}
}

// TestRegisterModelRejectsStaleRead makes sure the checker would catch a
// read that misses a completed write (and accepts an unknown write either
// way), so a passing run means something.
func TestRegisterModelRejectsStaleRead(t *testing.T) {
	put := porcupine.Operation{ClientId: 0, Input: kvInput{"put", "a", "1"}, Call: 0, Return: 10, Output: kvOutput{}}
	stale := porcupine.Operation{ClientId: 1, Input: kvInput{op: "get", key: "a"}, Call: 20, Return: 30, Output: kvOutput{}}
	if porcupine.CheckOperations(registerModel, []porcupine.Operation{put, stale}) {
		t.Fatal("a read that misses a completed write passed")
	}
	unknown := porcupine.Operation{ClientId: 2, Input: kvInput{"put", "a", "2"}, Call: 40, Return: math.MaxInt64,
		Output: kvOutput{unknown: true}}
	late := porcupine.Operation{ClientId: 3, Input: kvInput{op: "get", key: "a"}, Call: 50, Return: 60,
		Output: kvOutput{value: "2", found: true}}
	if !porcupine.CheckOperations(registerModel, []porcupine.Operation{put, unknown, late}) {
		t.Fatal("a write of unknown outcome may take effect later")
	}
}
