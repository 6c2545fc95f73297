// Command groups-host runs one embraft runtime with groups 1..G, every
// group founded by the same set of runtimes (this one and its -peers),
// over the group stream transport. It serves a small HTTP API for tests
// and operators:
//
//	GET  /status            groups running, with a leader known, led here, quiescent here
//	POST /fill?key=K&value=V proposes K=V to every group led here whose state lacks it
//	GET  /check?key=K&value=V how many groups' state here holds K=V
//
// On a restart it reopens its data directory: the groups the WAL holds
// come back with their logs, and their committed entries are applied
// again to the in-memory state machines.
//
//	groups-host -id 1 -listen 127.0.0.1:7001 -http 127.0.0.1:8001 \
//	  -peers 2=127.0.0.1:7002,3=127.0.0.1:7003 -groups 10000 -data /var/lib/g1
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "groups-host:", err)
		os.Exit(1)
	}
}

type options struct {
	id             uint64
	listen, http   string
	peers          map[uint64]string
	groups         int
	data           string
	quiesceTicks   uint
	tick           time.Duration
	electionTicks  uint
	heartbeatTicks uint
	workers        int
	verbose        bool
}

func parseFlags(args []string) (options, error) {
	var o options
	fs := flag.NewFlagSet("groups-host", flag.ContinueOnError)
	fs.Uint64Var(&o.id, "id", 0, "this runtime's id (also its node id in every group)")
	fs.StringVar(&o.listen, "listen", "", "host:port of the group stream transport")
	fs.StringVar(&o.http, "http", "", "host:port of the status API (empty: none)")
	peers := fs.String("peers", "", "the other founding runtimes, id=host:port,...")
	fs.IntVar(&o.groups, "groups", 1, "run groups 1..N")
	fs.StringVar(&o.data, "data", "", "data directory (the shared WAL of every group)")
	fs.UintVar(&o.quiesceTicks, "quiesce-ticks", 10, "idle ticks before a group goes quiet (0: never)")
	fs.DurationVar(&o.tick, "tick", 100*time.Millisecond, "tick interval")
	fs.UintVar(&o.electionTicks, "election-ticks", 10, "election timeout in ticks")
	fs.UintVar(&o.heartbeatTicks, "heartbeat-ticks", 1, "heartbeat interval in ticks")
	fs.IntVar(&o.workers, "workers", 2, "the runtime's worker threads")
	fs.BoolVar(&o.verbose, "v", false, "log the library's informational lines")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch {
	case o.id == 0:
		return o, errors.New("-id is required (non-zero)")
	case o.listen == "":
		return o, errors.New("-listen is required")
	case o.data == "":
		return o, errors.New("-data is required")
	case o.groups < 1:
		return o, fmt.Errorf("-groups %d: at least 1", o.groups)
	case o.tick <= 0:
		return o, fmt.Errorf("-tick %v: must be positive", o.tick)
	case o.workers < 1:
		return o, fmt.Errorf("-workers %d: at least 1", o.workers)
	}
	var err error
	if o.peers, err = parsePeers(*peers, o.id); err != nil {
		return o, fmt.Errorf("-peers: %w", err)
	}
	return o, nil
}

// parsePeers reads "id=host:port,..." (empty: a single-member runtime).
func parsePeers(s string, self uint64) (map[uint64]string, error) {
	peers := map[uint64]string{}
	if strings.TrimSpace(s) == "" {
		return peers, nil
	}
	for _, item := range strings.Split(s, ",") {
		idText, addr, ok := strings.Cut(strings.TrimSpace(item), "=")
		if !ok || addr == "" {
			return nil, fmt.Errorf("%q is not id=host:port", item)
		}
		id, err := strconv.ParseUint(idText, 10, 64)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("%q: the id must be a positive integer", item)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("%q: %v", item, err)
		}
		if id == self {
			return nil, fmt.Errorf("%q names this runtime (-id %d)", item, self)
		}
		if _, dup := peers[id]; dup {
			return nil, fmt.Errorf("runtime %d named twice", id)
		}
		peers[id] = addr
	}
	return peers, nil
}

// kv is a group's state machine: string keys and values, one "key=value"
// per entry. Reads come from HTTP handlers while the group applies.
type kv struct {
	mu sync.Mutex
	m  map[string]string
}

func (s *kv) Apply(e embraft.Entry) {
	k, v, _ := strings.Cut(string(e.Data), "=")
	s.mu.Lock()
	s.m[k] = v
	s.mu.Unlock()
}

func (s *kv) Snapshot(w io.Writer) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return json.NewEncoder(w).Encode(s.m)
}

func (s *kv) Restore(r io.Reader) error {
	m := map[string]string{}
	if err := json.NewDecoder(r).Decode(&m); err != nil {
		return fmt.Errorf("kv snapshot: %w", err)
	}
	s.mu.Lock()
	s.m = m
	s.mu.Unlock()
	return nil
}

func (s *kv) get(k string) (string, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, ok := s.m[k]
	return v, ok
}

type host struct {
	opts    options
	rt      *embraft.Runtime
	groups  []*embraft.Group // [group-1]
	stores  []*kv
	started atomic.Int64 // groups started so far
	log     *slog.Logger
}

func run(args []string) error {
	o, err := parseFlags(args)
	if err != nil {
		return err
	}
	level := slog.LevelWarn
	if o.verbose {
		level = slog.LevelInfo
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return err
	}
	defer ln.Close()
	t := embraft.NewGroupStreamTransport(1, o.id, 0, log)
	for id, addr := range o.peers {
		t.SetPeer(id, addr)
	}
	rt, err := embraft.StartRuntime(embraft.RuntimeOptions{
		Config: embraft.Config{
			ID:             o.id,
			DataDir:        o.data,
			ElectionTicks:  uint32(o.electionTicks),
			HeartbeatTicks: uint32(o.heartbeatTicks),
			QuiesceTicks:   uint32(o.quiesceTicks),
			Sync:           embraft.SyncAlways,
		},
		Workers:      o.workers,
		Transport:    t,
		TickInterval: o.tick,
		Logger:       log,
	})
	if err != nil {
		return err
	}
	defer rt.Close()
	go t.Serve(ln)
	h := &host{opts: o, rt: rt, groups: make([]*embraft.Group, o.groups), stores: make([]*kv, o.groups), log: log}
	if o.http != "" {
		hl, err := net.Listen("tcp", o.http)
		if err != nil {
			return err
		}
		srv := &http.Server{Handler: h.mux(), ReadHeaderTimeout: 10 * time.Second}
		go srv.Serve(hl)
		defer srv.Close()
	}
	stored, err := rt.StoredGroups()
	if err != nil {
		return err
	}
	members := []uint64{o.id}
	for id := range o.peers {
		members = append(members, id)
	}
	slices.Sort(members)
	start := time.Now()
	for g := 1; g <= o.groups; g++ {
		s := &kv{m: map[string]string{}}
		// Members only matter to a group the WAL does not hold yet.
		grp, err := rt.StartGroup(uint64(g), embraft.GroupOptions{Members: members, StateMachine: s, AutoSnapshot: true})
		if err != nil {
			return fmt.Errorf("group %d: %w", g, err)
		}
		h.groups[g-1], h.stores[g-1] = grp, s
		h.started.Add(1)
	}
	fmt.Printf("groups-host %d: %d groups started in %.1f s (%d from the WAL)\n",
		o.id, o.groups, time.Since(start).Seconds(), len(stored))
	go h.reportLeaders(start)
	stop := make(chan os.Signal, 1)
	signal.Notify(stop, syscall.SIGINT, syscall.SIGTERM)
	<-stop
	fmt.Printf("groups-host %d: stopping\n", o.id)
	return nil
}

// reportLeaders prints one line once every group has a leader known here.
func (h *host) reportLeaders(start time.Time) {
	for {
		if st := h.status(false); st.WithLeader == h.opts.groups {
			fmt.Printf("groups-host %d: all %d groups have a leader after %.1f s\n", h.opts.id, h.opts.groups, time.Since(start).Seconds())
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}

type statusReply struct {
	ID         uint64 `json:"id"`
	Groups     int    `json:"groups"`
	Running    int    `json:"running"`
	WithLeader int    `json:"with_leader"`
	Leading    int    `json:"leading"`
	// Quiescent counts the groups whose replica here stopped its
	// heartbeats or election timer (only with ?quiescent=1: it asks
	// every group for its status).
	Quiescent int `json:"quiescent"`
}

func (h *host) status(quiescent bool) statusReply {
	st := statusReply{ID: h.opts.id, Groups: h.opts.groups}
	n := int(h.started.Load())
	for _, g := range h.groups[:n] {
		st.Running++
		s := g.State()
		if s.Leader != 0 {
			st.WithLeader++
		}
		if s.Role == embraft.Leader {
			st.Leading++
		}
		if quiescent {
			if full, err := g.Status(); err == nil && full.Quiescent {
				st.Quiescent++
			}
		}
	}
	return st
}

func (h *host) mux() *http.ServeMux {
	m := http.NewServeMux()
	m.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, h.status(r.URL.Query().Get("quiescent") == "1"))
	})
	m.HandleFunc("POST /fill", func(w http.ResponseWriter, r *http.Request) {
		key, value, ok := keyValue(w, r)
		if !ok {
			return
		}
		proposed, err := h.fill(r.Context(), key, value)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		writeJSON(w, map[string]int{"proposed": proposed})
	})
	m.HandleFunc("GET /check", func(w http.ResponseWriter, r *http.Request) {
		key, value, ok := keyValue(w, r)
		if !ok {
			return
		}
		n := int(h.started.Load())
		holding := 0
		for _, s := range h.stores[:n] {
			if v, ok := s.get(key); ok && v == value {
				holding++
			}
		}
		writeJSON(w, map[string]int{"groups_with_value": holding, "running": n})
	})
	return m
}

// fill proposes key=value to every group led here whose state lacks it,
// a few dozen at a time; a group whose leadership moves meanwhile is
// left for the caller's next round.
func (h *host) fill(ctx context.Context, key, value string) (int, error) {
	n := int(h.started.Load())
	var next, proposed atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	for w := 0; w < 64; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if v, ok := h.stores[i].get(key); ok && v == value {
					continue
				}
				g := h.groups[i]
				if g.State().Role != embraft.Leader {
					continue
				}
				_, err := g.Propose(ctx, []byte(key+"="+value))
				switch {
				case err == nil:
					proposed.Add(1)
				case errors.Is(err, embraft.ErrNotLeader):
				default:
					once.Do(func() { firstErr = fmt.Errorf("group %d: %w", i+1, err) })
				}
			}
		}()
	}
	wg.Wait()
	return int(proposed.Load()), firstErr
}

func keyValue(w http.ResponseWriter, r *http.Request) (string, string, bool) {
	key, value := r.URL.Query().Get("key"), r.URL.Query().Get("value")
	if key == "" || strings.Contains(key, "=") {
		http.Error(w, "key: required, without '='", http.StatusBadRequest)
		return "", "", false
	}
	return key, value, true
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}
