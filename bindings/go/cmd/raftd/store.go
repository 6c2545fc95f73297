package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
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

// The snapshot format of docs/RAFTD.md ("Snapshots"), shared by every
// raftd, and the limits of the commands (maxKeyBytes and maxValueBytes are
// the HTTP API's, in server.go).
const (
	snapshotMagic   = "RDKV"
	snapshotVersion = 1
	maxAddrBytes    = 255
)

func keyOK(key string) bool { return len(key) >= 1 && len(key) <= maxKeyBytes }

func peerOK(id uint64, addr string) bool {
	return id != 0 && len(addr) >= 1 && len(addr) <= maxAddrBytes && !strings.ContainsRune(addr, 0)
}

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
// well-formed command within the limits of RAFTD.md, which every node then
// ignores alike.
func decodeCommand(data []byte) (command, bool) {
	if len(data) == 0 {
		return command{}, false
	}
	c := command{op: data[0]}
	r := &reader{b: data[1:]}
	ok := true
	switch c.op {
	case cmdSet:
		c.key = string(r.bytes())
		c.value = bytes.Clone(r.bytes())
		ok = keyOK(c.key) && len(c.value) <= maxValueBytes
	case cmdDelete:
		c.key = string(r.bytes())
		ok = keyOK(c.key)
	case cmdPeer:
		c.id = r.u64()
		c.addr = string(r.bytes())
		ok = peerOK(c.id, c.addr)
	case cmdRemovePeer:
		c.id = r.u64()
	default:
		return c, false
	}
	return c, ok && !r.bad && len(r.b) == 0
}

// store is the key/value state machine; peer addresses live next to the
// keys so a restarted node learns them again from its log.
type store struct {
	mu    sync.RWMutex
	kv    map[string][]byte
	peers map[uint64]string
	// onPeer is told about address changes (the transport's address book).
	onPeer func(id uint64, addr string, removed bool)
	// onRefused, if set, is told about a snapshot Restore refused (the
	// state is then unchanged and the Raft stops).
	onRefused func(err error)
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

// Snapshot writes the state in the snapshot format of RAFTD.md. The driver
// calls it between batches, so the state is the one at the snapshot's
// index; it streams into the library's snapshot file.
func (s *store) Snapshot(w io.Writer) error {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return encodeSnapshot(w, s.kv, s.peers)
}

// encodeSnapshot writes format version 1: the magic and version, then the
// peers then the keys, each list as a count and items in ascending order
// (ids as numbers, keys as bytes), so equal states give equal bytes on
// every raftd.
func encodeSnapshot(w io.Writer, kv map[string][]byte, peers map[uint64]string) error {
	e := &encoder{w: w}
	e.write([]byte(snapshotMagic))
	e.u32(snapshotVersion)
	ids := make([]uint64, 0, len(peers))
	for id := range peers {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	e.u32(uint32(len(ids)))
	for _, id := range ids {
		e.u64(id)
		e.bytes([]byte(peers[id]))
	}
	keys := make([]string, 0, len(kv))
	for k := range kv {
		keys = append(keys, k)
	}
	sort.Strings(keys) // byte order
	e.u32(uint32(len(keys)))
	for _, k := range keys {
		e.bytes([]byte(k))
		e.bytes(kv[k])
	}
	return e.err
}

// errMalformedSnapshot marks a snapshot that breaks the format's rules.
var errMalformedSnapshot = errors.New("raftd: malformed snapshot")

// decodeSnapshot reads a whole snapshot in format version 1 as a stream;
// the error wraps errMalformedSnapshot and says which rule broke.
func decodeSnapshot(r io.Reader) (map[string][]byte, map[uint64]string, error) {
	d := &decoder{r: r}
	if magic := d.fill(4, "the magic"); d.err == nil && string(magic) != snapshotMagic {
		d.fail("not a raftd snapshot (magic %x, expected %x)", magic, snapshotMagic)
	}
	if version := d.u32("the version"); d.err == nil && version != snapshotVersion {
		d.fail("format version %d; this raftd reads version %d", version, snapshotVersion)
	}
	peers := map[uint64]string{}
	var previousID uint64
	for i, n := uint32(0), d.u32("the peer count"); i < n && d.err == nil; i++ {
		id := d.u64("a peer id")
		if d.err == nil && id <= previousID {
			d.fail("peer %d: id %d is 0, repeated or out of order", i, id)
		}
		addr := string(d.sized(1, maxAddrBytes, "a peer address"))
		if d.err == nil && strings.ContainsRune(addr, 0) {
			d.fail("the address of peer %d holds a NUL byte", id)
		}
		peers[id] = addr
		previousID = id
	}
	kv := map[string][]byte{}
	var previousKey string
	for i, n := uint32(0), d.u32("the key count"); i < n && d.err == nil; i++ {
		k := string(d.sized(1, maxKeyBytes, "a key"))
		if d.err == nil && i > 0 && k <= previousKey {
			d.fail("key %d is repeated or out of order", i)
		}
		kv[k] = d.sized(0, maxValueBytes, "a value")
		previousKey = k
	}
	if d.err == nil {
		var one [1]byte
		switch _, err := io.ReadFull(r, one[:]); {
		case err == nil:
			d.fail("bytes after the last value")
		case err != io.EOF:
			d.fail("reading past the last value: %v", err)
		}
	}
	if d.err != nil {
		return nil, nil, d.err
	}
	return kv, peers, nil
}

// Restore replaces the keys and peers with a snapshot's: the whole file
// is decoded first, so a malformed one changes nothing.
func (s *store) Restore(r io.Reader) error {
	kv, peers, err := decodeSnapshot(r)
	if err != nil {
		if s.onRefused != nil {
			s.onRefused(err)
		}
		return err
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

func (d *decoder) fail(format string, args ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("%w: "+format, append([]any{errMalformedSnapshot}, args...)...)
	}
}

// read fills b, or fails saying what was being read.
func (d *decoder) read(b []byte, what string) {
	if d.err != nil {
		return
	}
	if _, err := io.ReadFull(d.r, b); err == io.EOF || err == io.ErrUnexpectedEOF {
		d.fail("truncated in %s", what)
	} else if err != nil {
		d.fail("reading %s: %v", what, err)
	}
}

func (d *decoder) fill(n int, what string) []byte {
	clear(d.buf[:n])
	d.read(d.buf[:n], what)
	return d.buf[:n]
}

func (d *decoder) u32(what string) uint32 { return binary.LittleEndian.Uint32(d.fill(4, what)) }
func (d *decoder) u64(what string) uint64 { return binary.LittleEndian.Uint64(d.fill(8, what)) }

// sized reads a length between low and high, checked before anything is
// allocated (at most 1 MiB, whatever the file claims), then those bytes.
func (d *decoder) sized(low, high uint32, what string) []byte {
	n := d.u32(what)
	if d.err == nil && (n < low || n > high) {
		d.fail("%s of %d bytes (allowed: %d to %d)", what, n, low, high)
	}
	if d.err != nil {
		return nil
	}
	b := make([]byte, n)
	d.read(b, what)
	return b
}
