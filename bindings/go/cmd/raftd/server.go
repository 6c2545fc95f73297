package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
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
	raft          *embraft.Raft
	store         *store
	transport     *embraft.StreamTransport
	listener      *embraft.MuxListener
	http          *http.Server
	client        *http.Client
	log           *slog.Logger

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
		s.raft.Close()
	})
}

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
	switch req.Method {
	case http.MethodGet:
		s.handleGet(w, req, key)
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
		s.write(w, req, value, encodeSet(key, value))
	case http.MethodDelete:
		s.write(w, req, nil, encodeDelete(key))
	default:
		http.Error(w, "GET, POST or DELETE", http.StatusMethodNotAllowed)
	}
}

func (s *server) handleGet(w http.ResponseWriter, req *http.Request, key string) {
	if req.URL.Query().Get("stale") != "true" {
		if err := s.readBarrier(req.Context()); err != nil {
			http.Error(w, "no linearizable read point: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
	}
	value, ok := s.store.get(key)
	if !ok {
		http.Error(w, "key not found", http.StatusNotFound)
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Write(value)
}

// readBarrier waits until local state reflects every write committed
// before the call (read index, forwarded to the leader by the library),
// retrying across elections for up to readTimeout.
func (s *server) readBarrier(parent context.Context) error {
	ctx, cancel := context.WithTimeout(parent, readTimeout)
	defer cancel()
	for {
		_, err := s.raft.ReadIndex(ctx)
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

// atLeader tells whether this node leads and serves req itself. If not,
// it has answered req: forwarded to the leader, or 503 without one.
func (s *server) atLeader(ctx context.Context, w http.ResponseWriter, req *http.Request, body []byte) bool {
	leader, err := s.leader(ctx)
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

// write serves a replicated write: the leader proposes it, a follower
// forwards the request to the leader and relays the answer.
func (s *server) write(w http.ResponseWriter, req *http.Request, body []byte, cmd []byte) {
	ctx, cancel := context.WithTimeout(req.Context(), writeTimeout)
	defer cancel()
	for {
		if !s.atLeader(ctx, w, req, body) {
			return
		}
		_, err := s.raft.Propose(ctx, cmd)
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

// leader returns the known leader, waiting up to leaderWait for one.
func (s *server) leader(ctx context.Context) (uint64, error) {
	wait, cancel := context.WithTimeout(ctx, leaderWait)
	defer cancel()
	return s.raft.WaitLeader(wait)
}

// forward relays a write to the leader.
func (s *server) forward(w http.ResponseWriter, req *http.Request, leader uint64, body []byte) {
	if req.Header.Get(forwardedHeader) != "" {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "forwarded to a node that no longer leads", http.StatusServiceUnavailable)
		return
	}
	addr, ok := s.store.peerAddr(leader)
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

type joinRequest struct {
	ID   string `json:"id"`
	Addr string `json:"addr"`
}

func (s *server) handleJoin(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	var jr joinRequest
	if err == nil {
		err = json.Unmarshal(body, &jr)
	}
	id, idErr := strconv.ParseUint(jr.ID, 10, 64)
	if err != nil || idErr != nil || id == 0 || jr.Addr == "" {
		http.Error(w, `want {"id": "<id>", "addr": "host:port"}`, http.StatusBadRequest)
		return
	}
	s.membershipChange(w, req, body, func(ctx context.Context) error {
		// The newcomer must be able to answer this leader before it has
		// replayed the log: a founder that has not recorded its own address
		// yet (its announcement may still be in flight) does it first.
		if _, ok := s.store.peerAddr(s.id); !ok {
			if _, err := s.raft.Propose(ctx, encodePeer(s.id, s.advertise)); err != nil {
				return err
			}
		}
		if _, err := s.raft.Propose(ctx, encodePeer(id, jr.Addr)); err != nil {
			return err
		}
		if st, err := s.raft.Status(); err == nil && contains(st.Voters, id) {
			return nil // a retried join: already a voter
		}
		_, err := s.raft.ProposeConfChange(ctx, embraft.AddVoter, id)
		return err
	}, func() {
		peers := map[string]string{}
		for pid, addr := range s.store.peerMap() {
			peers[strconv.FormatUint(pid, 10)] = addr
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(mustJSON(clusterDescription{ClusterID: strconv.FormatUint(s.clusterID, 10),
			Leader: strconv.FormatUint(s.id, 10), Peers: peers}))
	})
}

func (s *server) handleLeave(w http.ResponseWriter, req *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(req.Body, 64<<10))
	id := s.id
	if len(bytes.TrimSpace(body)) > 0 {
		var lr joinRequest
		parsed, err := uint64(0), json.Unmarshal(body, &lr)
		if err == nil {
			parsed, err = strconv.ParseUint(lr.ID, 10, 64)
		}
		if err != nil || parsed == 0 {
			http.Error(w, `want {"id": "<id>"} or no body`, http.StatusBadRequest)
			return
		}
		id = parsed
	} else {
		// Name ourselves explicitly, since the request may be forwarded.
		body = mustJSON(map[string]string{"id": strconv.FormatUint(id, 10)})
	}
	s.membershipChange(w, req, body, func(ctx context.Context) error {
		if id == s.id {
			// A leader cannot outlive its own removal long enough to record
			// it: hand leadership over first, then let the new leader do it.
			st, err := s.raft.Status()
			if err != nil {
				return err
			}
			for _, v := range st.Voters {
				if v != s.id {
					if err := s.raft.TransferLeader(ctx, v); err != nil {
						return err
					}
					return errRetryElsewhere
				}
			}
			return errors.New("the only voter cannot leave")
		}
		if _, err := s.raft.ProposeConfChange(ctx, embraft.RemoveNode, id); err != nil {
			return err
		}
		_, err := s.raft.Propose(ctx, encodeRemovePeer(id))
		return err
	}, func() { w.WriteHeader(http.StatusOK) })
}

var errRetryElsewhere = errors.New("leadership moved")

// membershipChange runs change on the leader (forwarding otherwise) and
// answers with done.
func (s *server) membershipChange(w http.ResponseWriter, req *http.Request, body []byte,
	change func(context.Context) error, done func()) {
	ctx, cancel := context.WithTimeout(req.Context(), 3*writeTimeout)
	defer cancel()
	for {
		if !s.atLeader(ctx, w, req, body) {
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

func (s *server) handleStatus(w http.ResponseWriter, req *http.Request) {
	st, err := s.raft.Status()
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	peers := map[string]string{}
	for id, addr := range s.store.peerMap() {
		peers[strconv.FormatUint(id, 10)] = addr
	}
	w.Header().Set("Content-Type", "application/json")
	w.Write(mustJSON(map[string]any{
		"id": strconv.FormatUint(s.id, 10), "cluster_id": strconv.FormatUint(s.clusterID, 10),
		"role": st.Role.String(), "term": st.Term, "leader": strconv.FormatUint(st.Leader, 10),
		"commit": st.Commit, "applied": s.raft.Applied(), "last_index": st.LastIndex,
		"voters": idStrings(st.Voters), "learners": idStrings(st.Learners), "peers": peers,
	}))
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
