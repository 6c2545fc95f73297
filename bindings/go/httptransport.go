package embraft

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
)

// HTTPTransport carries messages over HTTP for hosts that already run an
// HTTP server: mount it (it is an http.Handler) at HTTPTransportPath, and
// it posts batches of messages to the same path on its peers. A request
// body is a series of frames as in the stream transport (u32 length, then
// the message); the sender and cluster travel in headers.
type HTTPTransport struct{ httpTransport }

// GroupHTTPTransport is the HTTP transport between runtimes: the same
// requests, carrying group frames (docs/WIRE.md, "Group frames") instead
// of single messages, at GroupHTTPTransportPath. Mount it there; peers
// are runtimes.
type GroupHTTPTransport struct{ httpTransport }

// httpTransport is the HTTP transport, for single messages or for group
// frames.
type httpTransport struct {
	clusterID, id uint64
	path          string
	peers         *peerSet
	client        *http.Client
}

// HTTPTransportPath is where peers post messages; GroupHTTPTransportPath
// is where runtimes post group frames. Distinct paths, so that a node and
// a runtime never take each other's frames: the post fails with 404.
const (
	HTTPTransportPath      = "/embraft/messages"
	GroupHTTPTransportPath = "/embraft/group-frames"
)

const (
	headerCluster = "Embraft-Cluster"
	headerFrom    = "Embraft-From"
)

func (t *httpTransport) init(clusterID, id uint64, path string, queueSize int, log *slog.Logger) {
	t.clusterID, t.id, t.path = clusterID, id, path
	t.client = &http.Client{Timeout: writeTimeout}
	t.peers = newPeerSet(queueSize, log, t.dial)
}

// NewHTTPTransport creates the HTTP transport of node id; peers are
// registered with SetPeer by their base URL (http://host:port).
func NewHTTPTransport(clusterID, id uint64, queueSize int, log *slog.Logger) *HTTPTransport {
	t := &HTTPTransport{}
	t.init(clusterID, id, HTTPTransportPath, queueSize, log)
	return t
}

// NewGroupHTTPTransport creates the HTTP transport of runtime id; peers
// are registered with SetPeer by their base URL (http://host:port).
func NewGroupHTTPTransport(clusterID, id uint64, queueSize int, log *slog.Logger) *GroupHTTPTransport {
	t := &GroupHTTPTransport{}
	t.init(clusterID, id, GroupHTTPTransportPath, queueSize, log)
	return t
}

// SetPeer records a peer's base URL.
func (t *httpTransport) SetPeer(id uint64, baseURL string) { t.peers.setPeer(id, baseURL) }

// RemovePeer forgets a peer.
func (t *httpTransport) RemovePeer(id uint64) { t.peers.removePeer(id) }

// SetPartition drops all traffic to and from ids (tests).
func (t *httpTransport) SetPartition(ids []uint64) { t.peers.setPartition(ids) }

// Start implements Transport.
func (t *HTTPTransport) Start(h Host) error {
	t.peers.setHost(hostReceiver{h})
	return nil
}

// Start implements GroupTransport.
func (t *GroupHTTPTransport) Start(h GroupHost) error {
	t.peers.setHost(groupReceiver{h})
	return nil
}

// Send implements Transport and GroupTransport.
func (t *httpTransport) Send(to uint64, msg []byte) { t.peers.send(to, msg) }

// Close implements Transport and GroupTransport.
func (t *httpTransport) Close() error {
	t.peers.close()
	t.peers.setHost(nil)
	return nil
}

// ServeHTTP receives a batch of messages (group frames, for a
// GroupHTTPTransport) from a peer.
func (t *httpTransport) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	if req.Method != http.MethodPost {
		http.Error(w, "POST only", http.StatusMethodNotAllowed)
		return
	}
	cluster, err1 := strconv.ParseUint(req.Header.Get(headerCluster), 10, 64)
	from, err2 := strconv.ParseUint(req.Header.Get(headerFrom), 10, 64)
	if err1 != nil || err2 != nil || from == 0 {
		http.Error(w, "missing or bad sender headers", http.StatusBadRequest)
		return
	}
	if cluster != t.clusterID {
		http.Error(w, "cluster id differs", http.StatusForbidden)
		return
	}
	r := bufio.NewReader(io.LimitReader(req.Body, maxFrame+4))
	var header [4]byte
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			break
		}
		n := binary.LittleEndian.Uint32(header[:])
		if n > maxFrame {
			http.Error(w, "frame too long", http.StatusRequestEntityTooLarge)
			return
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			http.Error(w, "truncated frame", http.StatusBadRequest)
			return
		}
		if !deliver(t.peers, from, payload, t.peers.log) {
			http.Error(w, "malformed message", http.StatusBadRequest)
			return
		}
	}
	w.WriteHeader(http.StatusNoContent)
}

type httpLink struct {
	t   *httpTransport
	url string
}

func (t *httpTransport) dial(peer uint64, baseURL string) (link, error) {
	return &httpLink{t: t, url: baseURL + t.path}, nil
}

func (l *httpLink) send(batch [][]byte) error {
	var body bytes.Buffer
	var header [4]byte
	for _, m := range batch {
		binary.LittleEndian.PutUint32(header[:], uint32(len(m)))
		body.Write(header[:])
		body.Write(m)
	}
	req, err := http.NewRequest(http.MethodPost, l.url, &body)
	if err != nil {
		return err
	}
	req.Header.Set(headerCluster, strconv.FormatUint(l.t.clusterID, 10))
	req.Header.Set(headerFrom, strconv.FormatUint(l.t.id, 10))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := l.t.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		return fmt.Errorf("embraft http transport: peer answered %s", resp.Status)
	}
	return nil
}

func (l *httpLink) close() {}
