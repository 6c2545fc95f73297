package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"sync"

	embraft "github.com/embraft/embraft/bindings/go"
)

// The replicated commands of docs/RAFTD.md ("Replicated commands").
const (
	cmdSet        = 0x01
	cmdDelete     = 0x02
	cmdPeer       = 0x03
	cmdRemovePeer = 0x04
)

func encodeSet(key string, value []byte) []byte {
	b := []byte{cmdSet}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	b = append(b, key...)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(value)))
	return append(b, value...)
}

func encodeDelete(key string) []byte {
	b := []byte{cmdDelete}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(key)))
	return append(b, key...)
}

func encodePeer(id uint64, addr string) []byte {
	b := []byte{cmdPeer}
	b = binary.LittleEndian.AppendUint64(b, id)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(addr)))
	return append(b, addr...)
}

func encodeRemovePeer(id uint64) []byte {
	return binary.LittleEndian.AppendUint64([]byte{cmdRemovePeer}, id)
}

// reader decodes the fields of one command; any misfit marks it bad.
type reader struct {
	b   []byte
	bad bool
}

func (r *reader) u32() uint32 {
	if len(r.b) < 4 {
		r.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint32(r.b)
	r.b = r.b[4:]
	return v
}

func (r *reader) u64() uint64 {
	if len(r.b) < 8 {
		r.bad = true
		return 0
	}
	v := binary.LittleEndian.Uint64(r.b)
	r.b = r.b[8:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.u32()
	if r.bad || uint64(n) > uint64(len(r.b)) {
		r.bad = true
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

// command is one decoded entry.
type command struct {
	op    byte
	key   string
	value []byte
	id    uint64
	addr  string
}

// decodeCommand returns false for anything that is not exactly one
// well-formed command, which every node then ignores alike.
func decodeCommand(data []byte) (command, bool) {
	if len(data) == 0 {
		return command{}, false
	}
	c := command{op: data[0]}
	r := &reader{b: data[1:]}
	switch c.op {
	case cmdSet:
		c.key = string(r.bytes())
		c.value = bytes.Clone(r.bytes())
	case cmdDelete:
		c.key = string(r.bytes())
	case cmdPeer:
		c.id = r.u64()
		c.addr = string(r.bytes())
	case cmdRemovePeer:
		c.id = r.u64()
	default:
		return c, false
	}
	return c, !r.bad && len(r.b) == 0
}

// store is the key/value state machine; peer addresses live next to the
// keys so a restarted node learns them again from its log.
type store struct {
	mu    sync.RWMutex
	kv    map[string][]byte
	peers map[uint64]string
	// onPeer is told about address changes (the transport's address book).
	onPeer func(id uint64, addr string, removed bool)
}

func newStore(onPeer func(uint64, string, bool)) *store {
	return &store{kv: map[string][]byte{}, peers: map[uint64]string{}, onPeer: onPeer}
}

func (s *store) Apply(e embraft.Entry) {
	c, ok := decodeCommand(e.Data)
	if !ok {
		return
	}
	s.mu.Lock()
	switch c.op {
	case cmdSet:
		s.kv[c.key] = c.value
	case cmdDelete:
		delete(s.kv, c.key)
	case cmdPeer:
		s.peers[c.id] = c.addr
	case cmdRemovePeer:
		delete(s.peers, c.id)
	}
	s.mu.Unlock()
	if c.op == cmdPeer || c.op == cmdRemovePeer {
		s.onPeer(c.id, c.addr, c.op == cmdRemovePeer)
	}
}

func (s *store) get(key string) ([]byte, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	v, ok := s.kv[key]
	return v, ok
}

func (s *store) peerAddr(id uint64) (string, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	a, ok := s.peers[id]
	return a, ok
}

func (s *store) peerMap() map[uint64]string {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make(map[uint64]string, len(s.peers))
	for id, a := range s.peers {
		out[id] = a
	}
	return out
}

// Snapshot encodes the peers then the keys, each list as a count and
// entries in sorted order (so equal states give equal bytes). The driver
// calls it between batches, so the state is the one at the snapshot's
// index; it streams into the library's snapshot file.
func (s *store) Snapshot(w io.Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	e := &encoder{w: w}
	ids := make([]uint64, 0, len(s.peers))
	for id := range s.peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	e.u32(uint32(len(ids)))
	for _, id := range ids {
		e.u64(id)
		e.bytes([]byte(s.peers[id]))
	}
	keys := make([]string, 0, len(s.kv))
	for k := range s.kv {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	e.u32(uint32(len(keys)))
	for _, k := range keys {
		e.bytes([]byte(k))
		e.bytes(s.kv[k])
	}
	return e.err
}

// Restore replaces the keys and peers with a snapshot's, read as a stream.
func (s *store) Restore(r io.Reader) error {
	d := &decoder{r: r}
	peers := map[uint64]string{}
	for n := d.u32(); n > 0 && d.err == nil; n-- {
		id := d.u64()
		peers[id] = string(d.bytes())
	}
	kv := map[string][]byte{}
	for n := d.u32(); n > 0 && d.err == nil; n-- {
		k := string(d.bytes())
		kv[k] = d.bytes()
	}
	if d.err == nil {
		// Nothing may follow.
		if n, _ := r.Read(make([]byte, 1)); n != 0 {
			d.err = errors.New("trailing bytes")
		}
	}
	if d.err != nil {
		return fmt.Errorf("raftd: malformed snapshot: %w", d.err)
	}
	s.mu.Lock()
	old := s.peers
	s.kv, s.peers = kv, peers
	s.mu.Unlock()
	for id := range old {
		if _, ok := peers[id]; !ok {
			s.onPeer(id, "", true)
		}
	}
	for id, a := range peers {
		s.onPeer(id, a, false)
	}
	return nil
}

// encoder writes a snapshot's fields; the first error sticks.
type encoder struct {
	w   io.Writer
	err error
	buf [8]byte
}

func (e *encoder) write(b []byte) {
	if e.err == nil {
		_, e.err = e.w.Write(b)
	}
}

func (e *encoder) u32(v uint32) {
	binary.LittleEndian.PutUint32(e.buf[:4], v)
	e.write(e.buf[:4])
}

func (e *encoder) u64(v uint64) {
	binary.LittleEndian.PutUint64(e.buf[:], v)
	e.write(e.buf[:])
}

func (e *encoder) bytes(b []byte) {
	e.u32(uint32(len(b)))
	e.write(b)
}

// decoder reads a snapshot's fields; the first error sticks.
type decoder struct {
	r   io.Reader
	err error
	buf [8]byte
}

func (d *decoder) fill(n int) []byte {
	if d.err == nil {
		if _, err := io.ReadFull(d.r, d.buf[:n]); err != nil {
			d.err = err
		}
	}
	if d.err != nil {
		return make([]byte, n)
	}
	return d.buf[:n]
}

func (d *decoder) u32() uint32 { return binary.LittleEndian.Uint32(d.fill(4)) }
func (d *decoder) u64() uint64 { return binary.LittleEndian.Uint64(d.fill(8)) }

// bytes reads a length and that many bytes; the buffer grows with what
// actually arrives, so a damaged length cannot ask for a huge allocation.
func (d *decoder) bytes() []byte {
	n := d.u32()
	if d.err != nil {
		return nil
	}
	var b bytes.Buffer
	if _, err := io.CopyN(&b, d.r, int64(n)); err != nil {
		d.err = io.ErrUnexpectedEOF
		return nil
	}
	return b.Bytes()
}
