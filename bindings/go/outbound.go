package embraft

import (
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"
)

// Reconnection policy of WIRE.md ("Reconnecting and unreachable peers").
const (
	backoffMin        = 50 * time.Millisecond
	backoffMax        = 2 * time.Second
	backoffJitter     = 0.2
	backoffResetAfter = 5 * time.Second
	// DefaultPeerQueue is the bound of each peer's outbound queue.
	DefaultPeerQueue = 1024
	// maxBatch bounds how many queued messages one write carries.
	maxBatch = 256
)

// receiver is where a transport delivers what it receives: a Raft (Host)
// takes single messages, a Runtime (GroupHost) group frames.
type receiver interface {
	receive(payload []byte) error
	ReportUnreachable(peer uint64)
}

type hostReceiver struct{ Host }

func (h hostReceiver) receive(msg []byte) error { return h.Step(msg) }

type groupReceiver struct{ GroupHost }

func (h groupReceiver) receive(frame []byte) error { return h.StepFrame(frame) }

// link is one established path to a peer (a TCP stream after its
// handshake, or an HTTP client).
type link interface {
	send(batch [][]byte) error
	close()
}

// outbound is the sending side for one peer, shared by both transports:
// a bounded queue, one goroutine that connects through dial and writes
// batches, drops the queue and reports the peer unreachable on failure,
// and reconnects with jittered exponential backoff.
type outbound struct {
	peer    uint64
	queue   chan []byte
	dial    func() (link, error)
	host    func() receiver
	log     *slog.Logger
	stop    chan struct{}
	stopped sync.WaitGroup
	blocked func(uint64) bool
}

func newOutbound(peer uint64, queueSize int, dial func() (link, error), host func() receiver,
	blocked func(uint64) bool, log *slog.Logger) *outbound {
	if queueSize <= 0 {
		queueSize = DefaultPeerQueue
	}
	o := &outbound{peer: peer, queue: make(chan []byte, queueSize), dial: dial, host: host,
		log: log, stop: make(chan struct{}), blocked: blocked}
	o.stopped.Add(1)
	go o.run()
	return o
}

// enqueue never blocks: a full queue drops the message (Raft retransmits)
// and the peer is reported unreachable.
func (o *outbound) enqueue(msg []byte) {
	if o.blocked(o.peer) {
		return
	}
	select {
	case o.queue <- msg:
	default:
		o.reportUnreachable()
	}
}

func (o *outbound) reportUnreachable() {
	if h := o.host(); h != nil {
		h.ReportUnreachable(o.peer)
	}
}

func (o *outbound) close() {
	close(o.stop)
	o.stopped.Wait()
}

func (o *outbound) run() {
	defer o.stopped.Done()
	backoff := backoffMin
	for {
		// Connect only when there is something to send, so an idle or
		// departed peer costs nothing.
		var first []byte
		select {
		case first = <-o.queue:
		case <-o.stop:
			return
		}
		l, err := o.dial()
		if err == nil {
			up := time.Now()
			err = o.pump(l, first)
			l.close()
			if time.Since(up) >= backoffResetAfter {
				backoff = backoffMin
			}
		}
		if err == nil {
			return // stopped
		}
		o.log.Debug("embraft transport: peer unreachable", "peer", o.peer, "err", err)
		o.drain()
		o.reportUnreachable()
		wait := time.Duration(float64(backoff) * (1 + backoffJitter*rand.Float64()))
		select {
		case <-time.After(wait):
		case <-o.stop:
			return
		}
		backoff = min(2*backoff, backoffMax)
	}
}

// pump writes batches until the link fails (the error) or the transport
// stops (nil).
func (o *outbound) pump(l link, first []byte) error {
	batch := [][]byte{first}
	for {
		for len(batch) < maxBatch {
			select {
			case m := <-o.queue:
				batch = append(batch, m)
				continue
			default:
			}
			break
		}
		if !o.blocked(o.peer) {
			if err := l.send(batch); err != nil {
				return err
			}
		}
		batch = batch[:0]
		select {
		case m := <-o.queue:
			batch = append(batch, m)
		case <-o.stop:
			return nil
		}
	}
}

func (o *outbound) drain() {
	for {
		select {
		case <-o.queue:
		default:
			return
		}
	}
}

// peerSet holds the outbound side of a transport: the peers' addresses,
// one outbound per peer, and the test partition.
type peerSet struct {
	mu        sync.Mutex
	addrs     map[uint64]string
	out       map[uint64]*outbound
	partition map[uint64]bool
	hostMu    sync.RWMutex
	host      receiver
	queueSize int
	log       *slog.Logger
	dialer    func(peer uint64, addr string) (link, error)
	closed    bool
}

func newPeerSet(queueSize int, log *slog.Logger, dialer func(uint64, string) (link, error)) *peerSet {
	if log == nil {
		log = slog.Default()
	}
	return &peerSet{addrs: map[uint64]string{}, out: map[uint64]*outbound{}, partition: map[uint64]bool{},
		queueSize: queueSize, log: log, dialer: dialer}
}

func (p *peerSet) getHost() receiver {
	p.hostMu.RLock()
	defer p.hostMu.RUnlock()
	return p.host
}

func (p *peerSet) setHost(h receiver) {
	p.hostMu.Lock()
	p.host = h
	p.hostMu.Unlock()
}

// SetPeer records (or changes) a peer's address.
func (p *peerSet) setPeer(id uint64, addr string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.addrs[id] == addr {
		return
	}
	p.addrs[id] = addr
	if o := p.out[id]; o != nil {
		delete(p.out, id)
		go o.close() // its next dial would use the new address anyway
	}
}

func (p *peerSet) removePeer(id uint64) {
	p.mu.Lock()
	o := p.out[id]
	delete(p.out, id)
	delete(p.addrs, id)
	p.mu.Unlock()
	if o != nil {
		o.close()
	}
}

func (p *peerSet) peerAddr(id uint64) (string, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	a, ok := p.addrs[id]
	return a, ok
}

func (p *peerSet) isBlocked(id uint64) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.partition[id]
}

// setPartition makes the transport drop all traffic to and from ids (a
// test nemesis); nil heals.
func (p *peerSet) setPartition(ids []uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.partition = map[uint64]bool{}
	for _, id := range ids {
		p.partition[id] = true
	}
}

func (p *peerSet) send(to uint64, msg []byte) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	o := p.out[to]
	if o == nil {
		addr, ok := p.addrs[to]
		if !ok {
			p.mu.Unlock()
			if h := p.getHost(); h != nil {
				h.ReportUnreachable(to)
			}
			return
		}
		o = newOutbound(to, p.queueSize, func() (link, error) { return p.dialer(to, addr) },
			p.getHost, p.isBlocked, p.log)
		p.out[to] = o
	}
	p.mu.Unlock()
	o.enqueue(msg)
}

func (p *peerSet) close() {
	p.mu.Lock()
	p.closed = true
	out := p.out
	p.out = map[uint64]*outbound{}
	p.mu.Unlock()
	for _, o := range out {
		o.close()
	}
}
