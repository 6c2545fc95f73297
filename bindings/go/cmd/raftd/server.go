package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	embraft "github.com/embraft/embraft/bindings/go"
	"github.com/prometheus/client_golang/prometheus"
)

// Limits and timeouts of docs/RAFTD.md.
const (
	maxKeyBytes    = 1024
	maxValueBytes  = 1 << 20
	writeTimeout   = 10 * time.Second
	readTimeout    = 5 * time.Second
	forwardTimeout = 15 * time.Second
	// leaderWait is how long a write waits for an election before it
	// answers 503.
	leaderWait = 2 * time.Second
	// forwardedHeader marks a request a follower forwarded; it is never
	// forwarded again, so two nodes that each believe the other leads
	// cannot bounce it (RAFTD.md).
	forwardedHeader = "X-Raftd-Forwarded"
)

type server struct {
	id, clusterID uint64
	advertise     string
	// groups are the node's groups; group 1 (groups[0]) holds the address
	// book.
	groups    shardTable
	transport peerTransport
	// known is a joined node's first address book (from node.json after a
	// restart), read only.
	known map[string]string
	// closeNode stops the node's groups and transport.
	closeNode func() error
	listener  net.Listener
	http      *http.Server
	client    *http.Client
	log       *slog.Logger

	closeOnce sync.Once
	closed    chan struct{}
	initOnce  sync.Once
	// fatal is closed when the node cannot go on (a refused snapshot).
	fatal     chan struct{}
	fatalOnce sync.Once

	// requests counts the requests served, by method and status code
	// (raftd_requests_total).
	requests *prometheus.CounterVec
}

func (s *server) closing() chan struct{} {
	s.initOnce.Do(func() { s.closed = make(chan struct{}) })
	return s.closed
}

func (s *server) close() {
	s.closeOnce.Do(func() {
		close(s.closing())
		s.http.Close()
		s.closeNode()
	})
}

// peerTransport is what the server asks of its stream transport, the
// single-message one or the group-frame one: the address book, and the
// test-only partition.
type peerTransport interface {
	SetPeer(id uint64, addr string)
	RemovePeer(id uint64)
	SetPartition(ids []uint64)
}

// book returns the address of a node, from group 1's address book.
func (s *server) book(id uint64) (string, bool) { return s.groups[0].store.peerAddr(id) }

func (s *server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/db/", s.handleDB)
	mux.HandleFunc("POST /join", s.handleJoin)
	mux.HandleFunc("POST /leave", s.handleLeave)
	mux.HandleFunc("GET /status", s.handleStatus)
	mux.Handle("GET /metrics", s.newMetrics())
	if os.Getenv("RAFTD_FAULTS") == "1" {
		// Test-only fault injection: drop all transport traffic to and from
		// the listed node ids (comma-separated; empty heals).
		mux.HandleFunc("POST /debug/partition", s.handlePartition)
	}
	return s.countRequests(mux)
}

// statusRecorder remembers the status code for the request counter.
type statusRecorder struct {
	http.ResponseWriter
	code int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.code = code
	r.ResponseWriter.WriteHeader(code)
}

func (s *server) countRequests(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		rec := &statusRecorder{ResponseWriter: w, code: http.StatusOK}
		next.ServeHTTP(rec, req)
		s.countRequest(req.Method, rec.code)
	})
}

func (s *server) handleDB(w http.ResponseWriter, req *http.Request) {
	key := strings.TrimPrefix(req.URL.Path, "/db/")
	if key == "" || len(key) > maxKeyBytes || strings.Contains(key, "/") || !utf8.ValidString(key) {
		http.Error(w, "key must be a non-empty path segment of at most 1024 bytes", http.StatusBadRequest)
		return
	}
	g := s.groups.forKey(key)
	switch req.Method {
	case http.MethodGet:
		s.handleGet(w, req, g, key)
	case http.MethodPost, http.MethodPut:
		value, err := io.ReadAll(io.LimitReader(req.Body, maxValueBytes+1))
		if err != nil {
			http.Error(w, "reading the value: "+err.Error(), http.StatusBadRequest)
			return
		}
		if len(value) > maxValueBytes {
			http.Error(w, "value larger than 1 MiB", http.StatusRequestEntityTooLarge)
			return
		}
		s.write(w, req, g, value, encodeSet(key, value))
	case http.MethodDelete:
		s.write(w, req, g, nil, encodeDelete(key))
	default:
		http.Error(w, "GET, POST or DELETE", http.StatusMethodNotAllowed)
	}
}

func (s *server) handleGet(w http.ResponseWriter, req *http.Request, g *group, key string) {
	if req.URL.Query().Get("stale") != "true" {
		if err := s.readBarrier(req.Context(), g); err != nil {
			http.Error(w, "no linearizable read point: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	value, ok := g.store.get(key)
	if !ok {
		http.Error(w, "key not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(value)
}

// readBarrier waits until g's local state reflects every write committed
// in g before the call (read index, forwarded to the leader by the
// library), retrying across elections for up to readTimeout.
func (s *server) readBarrier(parent context.Context, g *group) error {
	ctx, cancel := context.WithTimeout(parent, readTimeout)
	defer cancel()
	for {
		_, err := g.raft.ReadIndex(ctx)
		if err == nil || ctx.Err() != nil || errors.Is(err, embraft.ErrClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// atLeader tells whether this node leads g and serves req itself. If
// not, it has answered req: forwarded to g's leader, or 503 without one.
func (s *server) atLeader(ctx context.Context, w http.ResponseWriter, req *http.Request, g *group, body []byte) bool {
	leader, err := s.leader(ctx, g)
	if err != nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "no leader", http.StatusServiceUnavailable)
		return false
	}
	if leader != s.id {
		s.forward(w, req, leader, body)
		return false
	}
	return true
}

// write serves a replicated write in g: g's leader proposes it, another
// node forwards the request to that leader and relays the answer.
func (s *server) write(w http.ResponseWriter, req *http.Request, g *group, body []byte, cmd []byte) {
	ctx, cancel := context.WithTimeout(req.Context(), writeTimeout)
	defer cancel()
	for {
		if !s.atLeader(ctx, w, req, g, body) {
			return
		}
		_, err := g.raft.Propose(ctx, cmd)
		switch {
		case err == nil:
			w.WriteHeader(http.StatusOK)
			return
		case errors.Is(err, embraft.ErrNotLeader), errors.Is(err, embraft.ErrDropped):
			// Certainly not in the log: safe to try again with the new leader.
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
			if ctx.Err() != nil {
				w.Header().Set("Retry-After", "1")
				http.Error(w, "leadership changed; not applied", http.StatusServiceUnavailable)
				return
			}
		case errors.Is(err, context.DeadlineExceeded), errors.Is(err, embraft.ErrUnknownOutcome):
			http.Error(w, "not committed in time; outcome unknown", http.StatusGatewayTimeout)
			return
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
}

// leader returns g's known leader, waiting up to leaderWait for one.
func (s *server) leader(ctx context.Context, g *group) (uint64, error) {
	wait, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	return g.raft.WaitLeader(wait)
}

// forward relays a request to a group's leader.
func (s *server) forward(w http.ResponseWriter, req *http.Request, leader uint64, body []byte) {
	if req.Header.Get(forwardedHeader) != "" {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "forwarded to a node that no longer leads", http.StatusServiceUnavailable)
		return
	}
	addr, ok := s.book(leader)
	if !ok {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "leader address unknown", http.StatusServiceUnavailable)
		return
	}
	fwd, err := http.NewRequestWithContext(req.Context(), req.Method, "http://"+addr+req.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fwd.Header.Set(forwardedHeader, "1")
	if ct := req.Header.Get("Content-Type"); ct != "" {
		fwd.Header.Set("Content-Type", ct)
	}
	resp, err := s.client.Do(fwd)
	if err != nil {
		// The leader may have applied it: the outcome is unknown.
		http.Error(w, "forwarding to the leader failed: "+err.Error(), http.StatusGatewayTimeout)
		return
	}
	defer resp.Body.Close()
	for _, h := range []string{"Content-Type", "Retry-After"} {
		if v := resp.Header.Get(h); v != "" {
			w.Header().Set(h, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	io.Copy(w, resp.Body)
}

// memberRequest is the body of /join ({"id", "addr"}) and /leave
// ({"id"}); Group names one group of a sharded node (0: group 1 for a
// join, every group for a leave).
type memberRequest struct {
	ID    string `json:"id"`
	Addr  string `json:"addr,omitempty"`
	Group uint64 `json:"group,omitempty"`
}

// parseMember reads a /join or /leave body: the id, and the group it
// names (nil when it names none).
func (s *server) parseMember(body []byte) (memberRequest, uint64, *group, error) {
	var mr memberRequest
	if err := json.Unmarshal(body, &mr); err != nil {
		return mr, 0, nil, err
	}
	id, err := strconv.ParseUint(mr.ID, 10, 64)
	if err != nil || id == 0 {
		return mr, 0, nil, errors.New("the id is not a node id")
	}
	if mr.Group == 0 {
		return mr, id, nil, nil
	}
	g := s.groups.group(mr.Group)
	if g == nil {
		return mr, 0, nil, fmt.Errorf("no group %d (this cluster has %d)", mr.Group, len(s.groups))
	}
	return mr, id, g, nil
}

func (s *server) handleJoin(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	var mr memberRequest
	var id uint64
	var g *group
	if err == nil {
		mr, id, g, err = s.parseMember(body)
	}
	if err == nil && mr.Addr == "" {
		err = errors.New("no addr")
	}
	if err != nil {
		http.Error(w, `want {"id": "<id>", "addr": "host:port"} (and "group": <g>): `+err.Error(), http.StatusBadRequest)
		return
	}
	if g == nil {
		g = s.groups[0]
	}
	s.membershipChange(w, req, body, g, func(ctx context.Context) error {
		if g.id == 1 {
			// The newcomer must be able to answer this leader before it
			// has replayed the log: a founder that has not recorded its own
			// address yet (its announcement may still be in flight) does it
			// first. Other groups' joins come after this one.
			if _, ok := s.book(s.id); !ok {
				if _, err := g.raft.Propose(ctx, encodePeer(s.id, s.advertise)); err != nil {
					return err
				}
			}
			if _, err := g.raft.Propose(ctx, encodePeer(id, mr.Addr)); err != nil {
				return err
			}
		}
		if st, err := g.raft.Status(); err == nil && contains(st.Voters, id) {
			return nil // a retried join: already a voter
		}
		_, err := g.raft.ProposeConfChange(ctx, embraft.AddVoter, id)
		return err
	}, func() {
		desc := clusterDescription{ClusterID: strconv.FormatUint(s.clusterID, 10),
			Leader: strconv.FormatUint(s.id, 10), Peers: map[string]string{}}
		for pid, addr := range s.groups[0].store.peerMap() {
			desc.Peers[strconv.FormatUint(pid, 10)] = addr
		}
		desc.Shards = shardsField(len(s.groups))
		w.Header().Set("Content-Type", "application/json")
		w.Write(mustJSON(desc))
	})
}

// handleLeave removes a node: from the group the request names, or from
// every group (N down to 1) and then from the address book.
func (s *server) handleLeave(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	id := s.id
	var g *group
	if len(bytes.TrimSpace(body)) > 0 {
		var err error
		if _, id, g, err = s.parseMember(body); err != nil {
			http.Error(w, `want {"id": "<id>"} (and "group": <g>) or no body: `+err.Error(), http.StatusBadRequest)
			return
		}
	} else {
		// Name ourselves explicitly, since the request may be forwarded.
		body = mustJSON(memberRequest{ID: strconv.FormatUint(id, 10)})
	}
	everywhere := g == nil
	if everywhere {
		g = s.groups[0]
	}
	s.membershipChange(w, req, body, g, func(ctx context.Context) error {
		if everywhere {
			// Group 1's leader has the others' leaders remove the node
			// first: group 1 keeps the address that reaches it until last.
			for i := len(s.groups); i >= 2; i-- {
				if err := s.leaveGroup(ctx, uint64(i), id); err != nil {
					return err
				}
			}
		}
		if err := s.removeMember(ctx, g, id); err != nil {
			return err
		}
		if !everywhere {
			return nil
		}
		_, err := g.raft.Propose(ctx, encodeRemovePeer(id))
		return err
	}, func() { w.WriteHeader(http.StatusOK) })
}

// removeMember removes id from g, which this node leads.
func (s *server) removeMember(ctx context.Context, g *group, id uint64) error {
	st, err := g.raft.Status()
	if err != nil {
		return err
	}
	if !contains(st.Voters, id) && !contains(st.Learners, id) {
		return nil // a retried leave: already gone
	}
	if id == s.id {
		// A leader cannot outlive its own removal long enough to record
		// it: hand leadership over first, then let the new leader do it.
		for _, v := range st.Voters {
			if v != s.id {
				if err := g.raft.TransferLeader(ctx, v); err != nil {
					return err
				}
				return errRetryElsewhere
			}
		}
		return errors.New("the only voter cannot leave")
	}
	_, err = g.raft.ProposeConfChange(ctx, embraft.RemoveNode, id)
	return err
}

// leaveGroup removes id from group g of a sharded node, through this
// node's own /leave naming the group, which goes to g's leader.
func (s *server) leaveGroup(ctx context.Context, g, id uint64) error {
	body := mustJSON(memberRequest{ID: strconv.FormatUint(id, 10), Group: g})
	self := func() []string { return []string{s.advertise} }
	if _, err := postRetrying(ctx, s.client, self, "/leave", body); err != nil {
		return fmt.Errorf("leaving group %d: %w", g, err)
	}
	return nil
}

var errRetryElsewhere = errors.New("leadership moved")

// membershipChange runs change on g's leader (forwarding otherwise) and
// answers with done.
func (s *server) membershipChange(w http.ResponseWriter, req *http.Request, body []byte, g *group,
	change func(context.Context) error, done func()) {
	ctx, cancel := context.WithTimeout(req.Context(), 3*writeTimeout)
	defer cancel()
	for {
		if !s.atLeader(ctx, w, req, g, body) {
			return
		}
		err := change(ctx)
		switch {
		case err == nil:
			done()
			return
		case errors.Is(err, errRetryElsewhere), errors.Is(err, embraft.ErrNotLeader),
			errors.Is(err, embraft.ErrDropped):
			time.Sleep(50 * time.Millisecond)
			if ctx.Err() == nil {
				continue
			}
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
		case ctx.Err() != nil:
			http.Error(w, "not committed in time; outcome unknown", http.StatusGatewayTimeout)
		default:
			http.Error(w, err.Error(), http.StatusInternalServerError)
		}
		return
	}
}

func contains(ids []uint64, id uint64) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func idStrings(ids []uint64) []string {
	out := make([]string, len(ids))
	for i, id := range ids {
		out[i] = strconv.FormatUint(id, 10)
	}
	return out
}

// groupStatus is the part of /status that describes one group.
func groupStatus(g *group) (map[string]any, error) {
	st, err := g.raft.Status()
	if err != nil {
		return nil, err
	}
	return map[string]any{
		"role": st.Role.String(), "term": st.Term, "leader": strconv.FormatUint(st.Leader, 10),
		"commit": st.Commit, "applied": g.raft.Applied(), "last_index": st.LastIndex,
		"voters": idStrings(st.Voters), "learners": idStrings(st.Learners),
	}, nil
}

// handleStatus describes the node and group 1; a sharded node adds the
// shard count and every group.
func (s *server) handleStatus(w http.ResponseWriter, req *http.Request) {
	out, err := groupStatus(s.groups[0])
	var groups []map[string]any
	for _, g := range s.groups {
		if err != nil || !s.groups.sharded() {
			break
		}
		var gs map[string]any
		if gs, err = groupStatus(g); err == nil {
			gs["group"] = g.id
			groups = append(groups, gs)
		}
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	peers := map[string]string{}
	for id, addr := range s.groups[0].store.peerMap() {
		peers[strconv.FormatUint(id, 10)] = addr
	}
	out["id"] = strconv.FormatUint(s.id, 10)
	out["cluster_id"] = strconv.FormatUint(s.clusterID, 10)
	out["peers"] = peers
	if s.groups.sharded() {
		out["shards"] = len(s.groups)
		out["groups"] = groups
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(mustJSON(out))
}

func (s *server) handlePartition(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 4096))
	var ids []uint64
	for _, f := range strings.FieldsFunc(string(body), func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		id, err := strconv.ParseUint(f, 10, 64)
		if err != nil {
			http.Error(w, "bad id "+f, http.StatusBadRequest)
			return
		}
		ids = append(ids, id)
	}
	s.transport.SetPartition(ids)
	s.log.Info("partition", "blocked", ids)
}
