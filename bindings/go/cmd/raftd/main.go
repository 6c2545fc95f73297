// Command raftd is the replicated key/value server of docs/RAFTD.md, on
// embraft through the Go binding.
//
//	raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-shards N] [-v] [-debug] [-trace] DATA-DIR
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

// nodeFile is DATA-DIR/node.json. Shards is left out for one group, so a
// one-group node's file is the same as before sharding existed. Peers are
// a joined node's first address book (the /join answer's), kept so that
// a restart before it has applied group 1's peer commands can still
// answer its leaders and ask for the groups it has not joined yet.
type nodeFile struct {
	ID        string            `json:"id"`
	ClusterID string            `json:"cluster_id"`
	Shards    *int              `json:"shards,omitempty"`
	Peers     map[string]string `json:"peers,omitempty"`
}

// clusterDescription answers /join; Shards is there when the cluster has
// more than one group.
type clusterDescription struct {
	ClusterID string            `json:"cluster_id"`
	Leader    string            `json:"leader"`
	Peers     map[string]string `json:"peers"`
	Shards    *int              `json:"shards,omitempty"`
}

const usage = "usage: raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-shards N] [-v] [-debug] [-trace] DATA-DIR"

func main() {
	flags := flag.NewFlagSet("raftd", flag.ExitOnError)
	host := flags.String("h", "localhost", "host name this node advertises and listens on")
	port := flags.Int("p", 4001, "port for both HTTP and the Raft stream transport")
	join := flags.String("join", "", "address (host:port) of any running node of the cluster to join")
	shards := flags.Int("shards", 1, "number of Raft groups the keys are spread over (a joining or restarting node takes the cluster's)")
	verbose := flags.Bool("v", false, "verbose: log role changes and membership changes")
	debug := flags.Bool("debug", false, "also log embraft's debug lines")
	trace := flags.Bool("trace", false, "also log embraft's trace lines")
	flags.Usage = func() {
		fmt.Fprintln(os.Stderr, usage)
		flags.PrintDefaults()
	}
	flags.Parse(os.Args[1:])
	if flags.NArg() != 1 {
		flags.Usage()
		os.Exit(2)
	}
	if err := checkShards(*shards, "-shards"); err != nil {
		fmt.Fprintln(os.Stderr, "raftd:", err)
		fmt.Fprintln(os.Stderr, usage)
		os.Exit(2)
	}

	level, libLevel := slog.LevelWarn, embraft.LogOff
	switch {
	case *trace:
		level, libLevel = embraft.SlogLevelTrace, embraft.LogTrace
	case *debug:
		level, libLevel = slog.LevelDebug, embraft.LogDebug
	case *verbose:
		level, libLevel = slog.LevelInfo, embraft.LogInfo
	}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	s, err := start(config{
		dataDir: flags.Arg(0), advertise: net.JoinHostPort(*host, strconv.Itoa(*port)),
		join: *join, shards: *shards, logLevel: libLevel, logger: logger,
	})
	if err != nil {
		logger.Error("raftd: cannot start", "err", err)
		fmt.Fprintln(os.Stderr, "raftd:", err)
		os.Exit(1)
	}
	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	select {
	case <-signals:
		s.close()
	case <-s.fatal:
		// Logged where it happened (a refused snapshot): the node cannot
		// go on, and a restart meets the same data.
		s.close()
		os.Exit(1)
	}
}

type config struct {
	dataDir   string
	advertise string
	join      string
	shards    int
	logLevel  embraft.LogLevel
	logger    *slog.Logger
}

// identity is who a node is and how it came to be: read back, joined or
// founded (RAFTD.md "Start-up").
type identity struct {
	id, clusterID uint64
	shards        int
	// founding: this node founds the cluster (it is its groups' only
	// voter); joined: it was just added to group 1 by /join.
	founding, joined bool
	// known is a joined node's first address book, from the answer.
	known map[string]string
}

// identify restarts from node.json, or joins through cfg.join, or founds
// a cluster, and records the outcome in node.json.
func identify(cfg config) (identity, error) {
	var ident nodeFile
	var out identity
	identPath := filepath.Join(cfg.dataDir, "node.json")
	if data, err := os.ReadFile(identPath); err == nil {
		if err := json.Unmarshal(data, &ident); err != nil {
			return out, fmt.Errorf("%s: %w", identPath, err)
		}
		out.known = ident.Peers
		cfg.logger.Info("restarting", "id", ident.ID, "cluster", ident.ClusterID)
	} else if cfg.join != "" {
		id := newID()
		desc, err := requestJoin(cfg.join, id, cfg.advertise)
		if err != nil {
			return out, err
		}
		ident = nodeFile{ID: strconv.FormatUint(id, 10), ClusterID: desc.ClusterID, Shards: desc.Shards, Peers: desc.Peers}
		out.joined, out.known = true, desc.Peers
		cfg.logger.Info("joined", "id", ident.ID, "cluster", ident.ClusterID, "leader", desc.Leader)
	} else {
		ident = nodeFile{ID: strconv.FormatUint(newID(), 10), ClusterID: strconv.FormatUint(newID(), 10), Shards: shardsField(cfg.shards)}
		out.founding = true
		cfg.logger.Info("founding a cluster", "id", ident.ID, "cluster", ident.ClusterID, "shards", cfg.shards)
	}
	var err1, err2, err3 error
	out.id, err1 = strconv.ParseUint(ident.ID, 10, 64)
	out.clusterID, err2 = strconv.ParseUint(ident.ClusterID, 10, 64)
	out.shards = 1 // none: written before sharding, or by a one-group node
	if ident.Shards != nil {
		out.shards = *ident.Shards
	}
	err3 = checkShards(out.shards, "the cluster's shard count")
	if err := errors.Join(err1, err2, err3); err != nil {
		return out, fmt.Errorf("%s: %w", identPath, err)
	}
	ident.Shards = shardsField(out.shards)
	return out, writeFileAtomic(identPath, mustJSON(ident))
}

// shardsField is the "shards" of node.json and of the cluster
// description: absent for one group, as before sharding existed.
func shardsField(n int) *int {
	if n == 1 {
		return nil
	}
	return &n
}

// start brings a node up: restart, join or found (RAFTD.md "Start-up"),
// then, on a sharded node, join the groups it is not a member of yet.
func start(cfg config) (*server, error) {
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		return nil, err
	}
	listener, err := net.Listen("tcp", cfg.advertise)
	if err != nil {
		return nil, err
	}
	ident, err := identify(cfg)
	if err != nil {
		listener.Close()
		return nil, err
	}
	s := &server{id: ident.id, clusterID: ident.clusterID, advertise: cfg.advertise, log: cfg.logger,
		client: &http.Client{Timeout: forwardTimeout}, fatal: make(chan struct{})}
	if ident.shards == 1 {
		err = s.startRaft(cfg, ident, listener)
	} else {
		err = s.startRuntime(cfg, ident, listener)
	}
	if err != nil {
		listener.Close()
		return nil, err
	}
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(s.listener)
	if ident.founding {
		go s.announceSelf()
	}
	go s.snapshotLoop()
	if s.groups.sharded() && !ident.founding {
		join := ""
		if ident.joined {
			join = cfg.join
		}
		if err := s.joinGroups(join); err != nil {
			s.close()
			return nil, err
		}
	}
	return s, nil
}

// newGroup makes group id's state machine. Group 1's holds the address
// book, which feeds the transport: every group's messages go to the
// addresses it lists.
func (s *server) newGroup(id uint64, transport peerTransport) *group {
	onPeer := func(uint64, string, bool) {}
	if id == 1 {
		onPeer = func(peer uint64, addr string, removed bool) {
			if peer == s.id {
				return
			}
			if removed {
				transport.RemovePeer(peer)
				s.log.Info("peer removed", "peer", peer)
			} else {
				transport.SetPeer(peer, addr)
				s.log.Info("peer address", "peer", peer, "addr", addr)
			}
		}
	}
	st := newStore(onPeer)
	st.onRefused = func(err error) {
		// On the driver goroutine, which stops after this Restore fails
		// (RAFTD.md "Restoring"): main closes the node and exits 1.
		s.log.Error("refusing snapshot; stopping (no entry is applied on top of a state that could not be restored)",
			"reason", err, "group", id)
		s.fatalOnce.Do(func() { close(s.fatal) })
	}
	return &group{id: id, store: st}
}

// setKnownPeers gives a joined node's transport the addresses of its
// /join answer (kept in node.json for its restarts), so it can answer its
// leaders before it has applied group 1's peer commands itself.
func (s *server) setKnownPeers(transport peerTransport, known map[string]string) {
	s.known = known
	for pid, addr := range known {
		if p, err := strconv.ParseUint(pid, 10, 64); err == nil && p != s.id {
			transport.SetPeer(p, addr)
		}
	}
}

// raftConfig is the configuration of the node's groups: the one group's
// with -shards 1, every group's on a runtime.
func (s *server) raftConfig(cfg config, peers []uint64) embraft.Config {
	return embraft.Config{
		ID: s.id, Peers: peers, DataDir: filepath.Join(cfg.dataDir, "wal"),
		LogLevel: cfg.logLevel, ElectionTicks: 10, HeartbeatTicks: 1,
		// Tests on a shared disk run many nodes: they ask for small
		// segments (the library's default is 64 MiB).
		SegmentSize: uint64(envInt("RAFTD_SEGMENT_SIZE", 0)),
		// Entries kept behind a snapshot (the library's default is
		// 1024); the linearizability test keeps few, so that nodes
		// the nemesis set back catch up through snapshots.
		CompactKeepEntries: uint64(envInt("RAFTD_COMPACT_KEEP", 0)),
		// Idle ticks before a group goes quiet (off unless set:
		// docs/RAFTD.md, "Quiescence").
		QuiesceTicks: uint32(envInt("RAFTD_QUIESCE_TICKS", 0)),
	}
}

// logState logs a group's role changes (-v).
func (s *server) logState(id uint64) func(embraft.State) {
	return func(st embraft.State) {
		if s.groups.sharded() {
			s.log.Info("state", "group", id, "role", st.Role, "leader", st.Leader, "term", st.Term)
		} else {
			s.log.Info("state", "role", st.Role, "leader", st.Leader, "term", st.Term)
		}
	}
}

// startRaft runs the one-group node: one *embraft.Raft on the stream
// transport of single messages.
func (s *server) startRaft(cfg config, ident identity, listener net.Listener) error {
	transport := embraft.NewStreamTransport(s.clusterID, s.id, 0, cfg.logger)
	s.transport = transport
	g := s.newGroup(1, transport)
	s.groups = shardTable{g}
	s.setKnownPeers(transport, ident.known)
	var peers []uint64
	if ident.founding {
		peers = []uint64{s.id}
	}
	raft, err := embraft.Start(embraft.Options{
		Config:        s.raftConfig(cfg, peers),
		StateMachine:  g.store,
		Transport:     transport,
		TickInterval:  tickInterval,
		Logger:        cfg.logger,
		OnStateChange: s.logState(1),
	})
	if err != nil {
		return err
	}
	g.raft = raft
	s.closeNode = raft.Close
	s.listener = embraft.NewMuxListener(listener, transport)
	return nil
}

// tickInterval and ElectionTicks 10 give elections after 0.5 to 1 s.
const tickInterval = 50 * time.Millisecond

// newID draws an id from 1..2^63-1.
func newID() uint64 { return rand.Uint64N(1<<63-1) + 1 }

// joinWithin bounds a joining node's retries of one group's /join
// (RAFTD.md "Joining"); past it the node gives up and exits 1.
const joinWithin = 60 * time.Second

// joinClient carries a joining node's requests; the receiving node works
// on one for up to 3 × writeTimeout.
var joinClient = &http.Client{Timeout: 3*writeTimeout + 5*time.Second}

// postRetrying posts body to path on the targets, in turn, until one
// answers 200, and returns that answer. A connection error or a 5xx
// (no leader yet, a timeout, leadership moving) is tried again until ctx
// ends; a 4xx is final.
func postRetrying(ctx context.Context, client *http.Client, targets func() []string, path string, body []byte) ([]byte, error) {
	for attempt := 0; ; attempt++ {
		var err error
		if addrs := targets(); len(addrs) == 0 {
			err = errors.New("no node to ask")
		} else {
			addr := addrs[attempt%len(addrs)]
			var answer []byte
			var final bool
			if answer, final, err = post(ctx, client, addr, path, body); err == nil || final {
				return answer, err
			}
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(500 * time.Millisecond):
		}
	}
}

// post sends one request; final tells a refusal that asking again would
// not change (a 4xx).
func post(ctx context.Context, client *http.Client, addr, path string, body []byte) (answer []byte, final bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+addr+path, bytes.NewReader(body))
	if err != nil {
		return nil, true, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, false, err
	}
	defer resp.Body.Close()
	answer, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err == nil && resp.StatusCode != http.StatusOK {
		err = fmt.Errorf("%s through %s: %s: %s", path, addr, resp.Status, bytes.TrimSpace(answer))
		final = resp.StatusCode < 500
	}
	return answer, final, err
}

// requestJoin asks the cluster to add this node to group 1 (the first
// step of joining), retrying while it has no leader.
func requestJoin(addr string, id uint64, advertise string) (clusterDescription, error) {
	var desc clusterDescription
	body := mustJSON(memberRequest{ID: strconv.FormatUint(id, 10), Addr: advertise})
	ctx, cancel := context.WithTimeout(context.Background(), joinWithin)
	defer cancel()
	answer, err := postRetrying(ctx, joinClient, func() []string { return []string{addr} }, "/join", body)
	if err == nil {
		err = json.Unmarshal(answer, &desc)
	}
	return desc, err
}

// joinGroups adds a sharded node to every group 2 … N it is not a member
// of: all of them after the node joined group 1, those it had not
// joined yet when it stopped after a restart. The requests go to join
// (on a restart, none: -join is ignored) or the other nodes of group 1's
// address book or of the /join answer, which forward them to each
// group's leader.
func (s *server) joinGroups(join string) error {
	targets := func() []string {
		addrs := []string{join}
		for id, addr := range s.groups[0].store.peerMap() {
			if id != s.id {
				addrs = append(addrs, addr)
			}
		}
		for id, addr := range s.known {
			if id != strconv.FormatUint(s.id, 10) {
				addrs = append(addrs, addr)
			}
		}
		slices.Sort(addrs[1:])
		addrs = slices.Compact(addrs)
		return slices.DeleteFunc(addrs, func(a string) bool { return a == "" || a == s.advertise })
	}
	for _, g := range s.groups[1:] {
		st, err := g.raft.Status()
		if err != nil {
			return err
		}
		if len(st.Voters) > 0 || len(st.Learners) > 0 {
			continue
		}
		s.log.Info("joining group", "group", g.id)
		body := mustJSON(memberRequest{ID: strconv.FormatUint(s.id, 10), Addr: s.advertise, Group: g.id})
		ctx, cancel := context.WithTimeout(context.Background(), joinWithin)
		_, err = postRetrying(ctx, joinClient, targets, "/join", body)
		cancel()
		if err != nil {
			return fmt.Errorf("joining group %d: %w", g.id, err)
		}
	}
	return nil
}

// announceSelf records the founder's address once it leads.
func (s *server) announceSelf() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := s.groups[0].raft.Propose(ctx, encodePeer(s.id, s.advertise))
		cancel()
		if err == nil || errors.Is(err, embraft.ErrClosed) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// snapshotEvery bounds the log: a snapshot every this many applied
// entries lets the library compact it (and gives lagging followers a
// snapshot to catch up from). The format is RAFTD.md's, shared by every
// raftd (store.go).
var snapshotEvery = uint64(envInt("RAFTD_SNAPSHOT_EVERY", 10000))

// envInt reads a positive integer tuning knob from the environment.
func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// snapshotLoop checks once a second, group by group, whether
// snapshotEvery entries were applied since the group's latest snapshot.
func (s *server) snapshotLoop() {
	last := make([]uint64, len(s.groups))
	for {
		select {
		case <-s.closing():
			return
		case <-time.After(time.Second):
		}
		for i, g := range s.groups {
			if !s.maybeSnapshot(g, &last[i]) {
				return
			}
		}
	}
}

// maybeSnapshot snapshots g if it applied snapshotEvery entries since
// *last; false when the node is closed.
func (s *server) maybeSnapshot(g *group, last *uint64) bool {
	applied := g.raft.Applied()
	if applied < *last+snapshotEvery {
		return true
	}
	ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
	index, err := g.raft.Snapshot(ctx)
	cancel()
	switch {
	case err == nil:
		*last = index
		s.log.Info("snapshot", "group", g.id, "index", index)
	case errors.Is(err, embraft.ErrStaleSnapshot):
		// The library already has a newer one (installed from the
		// leader): count from there.
		*last = applied
	case errors.Is(err, embraft.ErrClosed):
		return false
	default:
		s.log.Warn("snapshot failed", "group", g.id, "err", err)
	}
	return true
}

func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	return err
}
