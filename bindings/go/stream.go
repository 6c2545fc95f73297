package embraft

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// The stream protocol of docs/WIRE.md ("Stream transport").
const (
	streamMagic       = "EMRF"
	streamVersion     = 1
	helloSize         = 32
	replySize         = 16
	maxFrame          = 64 << 20
	handshakeTimeout  = 5 * time.Second
	dialTimeout       = 2 * time.Second
	writeTimeout      = 5 * time.Second
	replyAccepted     = 0
	replyBadVersion   = 1
	replyBadCluster   = 2
	replyBadRecipient = 3
	replyBadSender    = 4
	replyBadFrameKind = 5
	// helloGroupFrames is bit 0 of the hello's flags: the dialer sends
	// group frames.
	helloGroupFrames = 0x0001
)

// StreamTransport is the TCP transport every binding speaks: one outbound
// connection per peer for sending, inbound connections for receiving.
// Feed it accepted connections with Serve or ServeConn. It carries single
// messages between one-group nodes; GroupStreamTransport is its variant
// for runtimes.
type StreamTransport struct{ streamTransport }

// GroupStreamTransport is the stream transport between runtimes: the
// hello has the group-frames flag set (docs/WIRE.md, "Group frames"), one
// connection per peer runtime carries every group's messages as one group
// frame per frame, and a listener refuses a dialer without the flag
// (status 5), as a StreamTransport refuses one with it. Peers are runtime
// ids.
type GroupStreamTransport struct{ streamTransport }

// streamTransport is the stream protocol, for single messages or for
// group frames.
type streamTransport struct {
	clusterID, id uint64
	groupFrames   bool
	peers         *peerSet
	log           *slog.Logger

	mu      sync.Mutex
	inbound map[net.Conn]struct{}
	closed  bool
}

func (t *streamTransport) init(clusterID, id uint64, groupFrames bool, queueSize int, log *slog.Logger) {
	t.clusterID, t.id, t.groupFrames = clusterID, id, groupFrames
	t.inbound = map[net.Conn]struct{}{}
	t.peers = newPeerSet(queueSize, log, t.dial)
	t.log = t.peers.log
}

// NewStreamTransport creates the transport of node id in cluster
// clusterID. queueSize bounds each peer's outbound queue (0: 1024).
func NewStreamTransport(clusterID, id uint64, queueSize int, log *slog.Logger) *StreamTransport {
	t := &StreamTransport{}
	t.init(clusterID, id, false, queueSize, log)
	return t
}

// NewGroupStreamTransport creates the transport of runtime id in cluster
// clusterID. queueSize bounds each peer's outbound queue of frames (0:
// 1024).
func NewGroupStreamTransport(clusterID, id uint64, queueSize int, log *slog.Logger) *GroupStreamTransport {
	t := &GroupStreamTransport{}
	t.init(clusterID, id, true, queueSize, log)
	return t
}

// SetPeer records the host:port of a peer.
func (t *streamTransport) SetPeer(id uint64, addr string) { t.peers.setPeer(id, addr) }

// RemovePeer forgets a peer and closes its connection.
func (t *streamTransport) RemovePeer(id uint64) { t.peers.removePeer(id) }

// PeerAddr returns a peer's recorded address.
func (t *streamTransport) PeerAddr(id uint64) (string, bool) { return t.peers.peerAddr(id) }

// SetPartition drops all traffic to and from the given peers until called
// again (nil heals). It exists for fault-injection tests.
func (t *streamTransport) SetPartition(ids []uint64) { t.peers.setPartition(ids) }

// Start implements Transport.
func (t *StreamTransport) Start(h Host) error {
	t.peers.setHost(hostReceiver{h})
	return nil
}

// Start implements GroupTransport.
func (t *GroupStreamTransport) Start(h GroupHost) error {
	t.peers.setHost(groupReceiver{h})
	return nil
}

// Send implements Transport and GroupTransport: it queues one message
// (StreamTransport) or group frame (GroupStreamTransport) for peer to.
func (t *streamTransport) Send(to uint64, msg []byte) { t.peers.send(to, msg) }

// Close stops the outbound connections and closes the inbound ones.
func (t *streamTransport) Close() error {
	t.mu.Lock()
	t.closed = true
	conns := t.inbound
	t.inbound = map[net.Conn]struct{}{}
	t.mu.Unlock()
	for c := range conns {
		c.Close()
	}
	t.peers.close()
	t.peers.setHost(nil)
	return nil
}

// Serve accepts connections from l until it fails and serves each.
func (t *streamTransport) Serve(l net.Listener) error {
	for {
		c, err := l.Accept()
		if err != nil {
			return err
		}
		go t.ServeConn(c)
	}
}

func encodeHello(clusterID, from, to uint64, flags uint16) []byte {
	b := make([]byte, helloSize)
	copy(b, streamMagic)
	binary.LittleEndian.PutUint16(b[4:], streamVersion)
	binary.LittleEndian.PutUint16(b[6:], flags)
	binary.LittleEndian.PutUint64(b[8:], clusterID)
	binary.LittleEndian.PutUint64(b[16:], from)
	binary.LittleEndian.PutUint64(b[24:], to)
	return b
}

func encodeReply(status uint16, self uint64) []byte {
	b := make([]byte, replySize)
	copy(b, streamMagic)
	binary.LittleEndian.PutUint16(b[4:], streamVersion)
	binary.LittleEndian.PutUint16(b[6:], status)
	binary.LittleEndian.PutUint64(b[8:], self)
	return b
}

// flags are the hello flags this side sends and expects.
func (t *streamTransport) flags() uint16 {
	if t.groupFrames {
		return helloGroupFrames
	}
	return 0
}

// ServeConn serves one inbound connection: the handshake, then frames
// handed unchanged to the node. It returns when the connection ends.
func (t *streamTransport) ServeConn(c net.Conn) {
	defer c.Close()
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return
	}
	t.inbound[c] = struct{}{}
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		delete(t.inbound, c)
		t.mu.Unlock()
	}()

	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	hello := make([]byte, helloSize)
	if _, err := io.ReadFull(c, hello); err != nil || string(hello[:4]) != streamMagic {
		return
	}
	from := binary.LittleEndian.Uint64(hello[16:])
	status := uint16(replyAccepted)
	switch {
	case binary.LittleEndian.Uint16(hello[4:]) != streamVersion:
		status = replyBadVersion
	case binary.LittleEndian.Uint64(hello[8:]) != t.clusterID:
		status = replyBadCluster
	case binary.LittleEndian.Uint64(hello[24:]) != t.id:
		status = replyBadRecipient
	case from == 0 || from == t.id:
		status = replyBadSender
	case binary.LittleEndian.Uint16(hello[6:])&helloGroupFrames != t.flags():
		status = replyBadFrameKind
	}
	c.SetWriteDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(encodeReply(status, t.id)); err != nil || status != replyAccepted {
		if status != replyAccepted {
			t.log.Info("embraft transport: refused connection", "from", from, "status", status)
		}
		return
	}
	c.SetDeadline(time.Time{})
	t.readFrames(from, bufio.NewReaderSize(c, 64<<10))
}

// readFrames steps every frame from peer until the stream ends or breaks
// the protocol.
func (t *streamTransport) readFrames(from uint64, r io.Reader) {
	var header [4]byte
	for {
		if _, err := io.ReadFull(r, header[:]); err != nil {
			return
		}
		n := binary.LittleEndian.Uint32(header[:])
		if n > maxFrame {
			t.log.Warn("embraft transport: frame too long", "from", from, "len", n)
			return
		}
		payload := make([]byte, n)
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		if !deliver(t.peers, from, payload, t.log) {
			return
		}
	}
}

// deliver steps one received message; false means a protocol error that
// ends the connection.
func deliver(peers *peerSet, from uint64, msg []byte, log *slog.Logger) bool {
	if peers.isBlocked(from) {
		return true
	}
	h := peers.getHost()
	if h == nil {
		return true // not started yet, or closed: as if lost
	}
	err := h.receive(msg)
	if errors.Is(err, ErrMalformed) || errors.Is(err, ErrWrongRecipient) {
		log.Warn("embraft transport: refused message", "from", from, "err", err)
		return false
	}
	return true // a full queue or a closed node loses the message
}

// streamLink is an outbound connection after an accepted handshake.
type streamLink struct {
	conn net.Conn
	w    *bufio.Writer
}

func (t *streamTransport) dial(peer uint64, addr string) (link, error) {
	c, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		return nil, err
	}
	c.SetDeadline(time.Now().Add(handshakeTimeout))
	if _, err := c.Write(encodeHello(t.clusterID, t.id, peer, t.flags())); err != nil {
		c.Close()
		return nil, err
	}
	reply := make([]byte, replySize)
	if _, err := io.ReadFull(c, reply); err != nil {
		c.Close()
		return nil, err
	}
	if !bytes.Equal(reply[:4], []byte(streamMagic)) {
		c.Close()
		return nil, errors.New("embraft transport: bad handshake reply")
	}
	if status := binary.LittleEndian.Uint16(reply[6:]); status != replyAccepted {
		c.Close()
		return nil, fmt.Errorf("embraft transport: handshake refused with status %d", status)
	}
	c.SetDeadline(time.Time{})
	if tcp, ok := c.(*net.TCPConn); ok {
		tcp.SetNoDelay(true)
	}
	return &streamLink{conn: c, w: bufio.NewWriterSize(c, 64<<10)}, nil
}

func (l *streamLink) send(batch [][]byte) error {
	// A stopped or partitioned peer must not block the sender forever.
	l.conn.SetWriteDeadline(time.Now().Add(writeTimeout))
	var header [4]byte
	for _, m := range batch {
		binary.LittleEndian.PutUint32(header[:], uint32(len(m)))
		if _, err := l.w.Write(header[:]); err != nil {
			return err
		}
		if _, err := l.w.Write(m); err != nil {
			return err
		}
	}
	return l.w.Flush()
}

func (l *streamLink) close() { l.conn.Close() }

// ConnServer serves accepted stream connections: a StreamTransport or a
// GroupStreamTransport.
type ConnServer interface {
	ServeConn(c net.Conn)
}

// MuxListener shares one port between the stream transport and another
// protocol (HTTP): for each accepted connection it peeks at the first four
// bytes; EMRF goes to the transport, anything else is returned by Accept
// with the peeked bytes put back.
type MuxListener struct {
	net.Listener
	transport ConnServer
	conns     chan net.Conn
	errs      chan error
	once      sync.Once
}

// NewMuxListener wraps l; the transport serves the stream connections.
func NewMuxListener(l net.Listener, t ConnServer) *MuxListener {
	m := &MuxListener{Listener: l, transport: t, conns: make(chan net.Conn), errs: make(chan error, 1)}
	go m.acceptLoop()
	return m
}

func (m *MuxListener) acceptLoop() {
	for {
		c, err := m.Listener.Accept()
		if err != nil {
			m.errs <- err
			return
		}
		go m.dispatch(c)
	}
}

func (m *MuxListener) dispatch(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(handshakeTimeout))
	r := bufio.NewReader(c)
	head, err := r.Peek(4)
	c.SetReadDeadline(time.Time{})
	if err != nil && len(head) == 0 {
		c.Close()
		return
	}
	pc := &peekedConn{Conn: c, r: r}
	if string(head) == streamMagic {
		m.transport.ServeConn(pc)
		return
	}
	m.conns <- pc
}

// Accept returns the next connection that is not a stream peer's.
func (m *MuxListener) Accept() (net.Conn, error) {
	select {
	case c := <-m.conns:
		return c, nil
	case err := <-m.errs:
		m.errs <- err
		return nil, err
	}
}

// peekedConn reads through the buffer that holds the peeked bytes.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
