// Command raftd is the replicated key/value server of docs/RAFTD.md, on
// embraft through the Go binding.
//
//	raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-v] [-debug] [-trace] DATA-DIR
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

// nodeFile is DATA-DIR/node.json.
type nodeFile struct {
	ID        string `json:"id"`
	ClusterID string `json:"cluster_id"`
}

// clusterDescription answers /join.
type clusterDescription struct {
	ClusterID string            `json:"cluster_id"`
	Leader    string            `json:"leader"`
	Peers     map[string]string `json:"peers"`
}

func main() {
	flags := flag.NewFlagSet("raftd", flag.ExitOnError)
	host := flags.String("h", "localhost", "host name this node advertises and listens on")
	port := flags.Int("p", 4001, "port for both HTTP and the Raft stream transport")
	join := flags.String("join", "", "address (host:port) of any running node of the cluster to join")
	verbose := flags.Bool("v", false, "verbose: log role changes and membership changes")
	debug := flags.Bool("debug", false, "also log embraft's debug lines")
	trace := flags.Bool("trace", false, "also log embraft's trace lines")
	flags.Usage = func() {
		fmt.Fprintln(os.Stderr, "usage: raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-v] [-debug] [-trace] DATA-DIR")
		flags.PrintDefaults()
	}
	flags.Parse(os.Args[1:])
	if flags.NArg() != 1 {
		flags.Usage()
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
		join: *join, logLevel: libLevel, logger: logger,
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
	logLevel  embraft.LogLevel
	logger    *slog.Logger
}

// start brings a node up: restart, join or found (RAFTD.md "Start-up").
func start(cfg config) (*server, error) {
	if err := os.MkdirAll(cfg.dataDir, 0o755); err != nil {
		return nil, err
	}
	listener, err := net.Listen("tcp", cfg.advertise)
	if err != nil {
		return nil, err
	}
	var ident nodeFile
	var peers []uint64
	var known map[string]string
	identPath := filepath.Join(cfg.dataDir, "node.json")
	founding := false
	if data, err := os.ReadFile(identPath); err == nil {
		if err := json.Unmarshal(data, &ident); err != nil {
			listener.Close()
			return nil, fmt.Errorf("%s: %w", identPath, err)
		}
		cfg.logger.Info("restarting", "id", ident.ID, "cluster", ident.ClusterID)
	} else if cfg.join != "" {
		id := newID()
		desc, err := requestJoin(cfg.join, id, cfg.advertise)
		if err != nil {
			listener.Close()
			return nil, err
		}
		ident = nodeFile{ID: strconv.FormatUint(id, 10), ClusterID: desc.ClusterID}
		known = desc.Peers
		cfg.logger.Info("joined", "id", ident.ID, "cluster", ident.ClusterID, "leader", desc.Leader)
	} else {
		id := newID()
		ident = nodeFile{ID: strconv.FormatUint(id, 10), ClusterID: strconv.FormatUint(newID(), 10)}
		peers = []uint64{id}
		founding = true
		cfg.logger.Info("founding a cluster", "id", ident.ID, "cluster", ident.ClusterID)
	}
	id, err1 := strconv.ParseUint(ident.ID, 10, 64)
	clusterID, err2 := strconv.ParseUint(ident.ClusterID, 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		listener.Close()
		return nil, fmt.Errorf("%s: %w", identPath, err)
	}
	if err := writeFileAtomic(identPath, mustJSON(ident)); err != nil {
		listener.Close()
		return nil, err
	}

	s := &server{id: id, clusterID: clusterID, advertise: cfg.advertise, log: cfg.logger,
		client: &http.Client{Timeout: forwardTimeout}, fatal: make(chan struct{})}
	s.transport = embraft.NewStreamTransport(clusterID, id, 0, cfg.logger)
	s.store = newStore(func(peer uint64, addr string, removed bool) {
		if peer == id {
			return
		}
		if removed {
			s.transport.RemovePeer(peer)
			cfg.logger.Info("peer removed", "peer", peer)
		} else {
			s.transport.SetPeer(peer, addr)
			cfg.logger.Info("peer address", "peer", peer, "addr", addr)
		}
	})
	s.store.onRefused = func(err error) {
		// On the driver goroutine, which stops after this Restore fails
		// (RAFTD.md "Restoring"): main closes the node and exits 1.
		cfg.logger.Error("refusing snapshot; stopping (no entry is applied on top of a state that could not be restored)",
			"reason", err)
		s.fatalOnce.Do(func() { close(s.fatal) })
	}
	for pid, addr := range known {
		if p, err := strconv.ParseUint(pid, 10, 64); err == nil && p != id {
			s.transport.SetPeer(p, addr)
		}
	}
	s.raft, err = embraft.Start(embraft.Options{
		Config: embraft.Config{
			ID: id, Peers: peers, DataDir: filepath.Join(cfg.dataDir, "wal"),
			LogLevel: cfg.logLevel, ElectionTicks: 10, HeartbeatTicks: 1,
			// Tests on a shared disk run many nodes: they ask for small
			// segments (the library's default is 64 MiB).
			SegmentSize: uint64(envInt("RAFTD_SEGMENT_SIZE", 0)),
			// Entries kept behind a snapshot (the library's default is
			// 1024); the linearizability test keeps few, so that nodes
			// the nemesis set back catch up through snapshots.
			CompactKeepEntries: uint64(envInt("RAFTD_COMPACT_KEEP", 0)),
			// Idle ticks before the node's group goes quiet (off unless
			// set: docs/RAFTD.md, "Quiescence").
			QuiesceTicks: uint32(envInt("RAFTD_QUIESCE_TICKS", 0)),
		},
		StateMachine: s.store,
		Transport:    s.transport,
		TickInterval: tickInterval,
		Logger:       cfg.logger,
		OnStateChange: func(st embraft.State) {
			cfg.logger.Info("state", "role", st.Role, "leader", st.Leader, "term", st.Term)
		},
	})
	if err != nil {
		listener.Close()
		return nil, err
	}
	s.listener = embraft.NewMuxListener(listener, s.transport)
	s.http = &http.Server{Handler: s.routes(), ReadHeaderTimeout: 10 * time.Second}
	go s.http.Serve(s.listener)
	if founding {
		go s.announceSelf()
	}
	go s.snapshotLoop()
	return s, nil
}

// tickInterval and ElectionTicks 10 give elections after 0.5 to 1 s.
const tickInterval = 50 * time.Millisecond

// newID draws an id from 1..2^63-1.
func newID() uint64 { return rand.Uint64N(1<<63-1) + 1 }

// requestJoin asks the cluster to add this node, retrying while it has no
// leader.
func requestJoin(addr string, id uint64, advertise string) (clusterDescription, error) {
	body := mustJSON(map[string]string{"id": strconv.FormatUint(id, 10), "addr": advertise})
	client := &http.Client{Timeout: 30 * time.Second}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := client.Post("http://"+addr+"/join", "application/json", bytes.NewReader(body))
		if err == nil {
			var desc clusterDescription
			if resp.StatusCode == http.StatusOK {
				err = json.NewDecoder(resp.Body).Decode(&desc)
				resp.Body.Close()
				return desc, err
			}
			resp.Body.Close()
			err = fmt.Errorf("join through %s: %s", addr, resp.Status)
		}
		if time.Now().After(deadline) {
			return clusterDescription{}, err
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// announceSelf records the founder's address once it leads.
func (s *server) announceSelf() {
	for {
		ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
		_, err := s.raft.Propose(ctx, encodePeer(s.id, s.advertise))
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

func (s *server) snapshotLoop() {
	var last uint64
	for {
		select {
		case <-s.closing():
			return
		case <-time.After(time.Second):
		}
		if applied := s.raft.Applied(); applied >= last+snapshotEvery {
			ctx, cancel := context.WithTimeout(context.Background(), writeTimeout)
			index, err := s.raft.Snapshot(ctx)
			cancel()
			switch {
			case err == nil:
				last = index
				s.log.Info("snapshot", "index", index)
			case errors.Is(err, embraft.ErrStaleSnapshot):
				// The library already has a newer one (installed from the
				// leader): count from there.
				last = applied
			case errors.Is(err, embraft.ErrClosed):
				return
			default:
				s.log.Warn("snapshot failed", "err", err)
			}
		}
	}
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
