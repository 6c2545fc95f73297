package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	embraft "github.com/embraft/embraft/bindings/go"
)

// vectorPath is the snapshot test vector shared by every raftd
// (docs/RAFTD.md "Test vector").
const vectorPath = "../../../../docs/vectors/raftd-snapshot-v1.bin"

var (
	vectorKV    = map[string][]byte{"Z": []byte("upper"), "a": []byte("1"), "alpha": {}, "é": {0x00, 0xff, 0x0a}}
	vectorPeers = map[uint64]string{1: "127.0.0.1:4001", 0x0102030405060708: "localhost:4002"}
)

func readVector(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(vectorPath)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestSnapshotVectorDecodesAndEncodesByteForByte(t *testing.T) {
	vector := readVector(t)
	s := newStore(func(uint64, string, bool) {})
	if err := s.Restore(bytes.NewReader(vector)); err != nil {
		t.Fatal(err)
	}
	if !maps.EqualFunc(s.kv, vectorKV, bytes.Equal) || !maps.Equal(s.peers, vectorPeers) {
		t.Fatalf("decoded %q and %v", s.kv, s.peers)
	}
	var out bytes.Buffer
	if err := s.Snapshot(&out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), vector) {
		t.Fatalf("re-encoded:\n% x\nwant:\n% x", out.Bytes(), vector)
	}
}

// damagedVectors are variants of the vector that break one rule each.
func damagedVectors(v []byte) map[string][]byte {
	const peersAt, keysAt = 12, 12 + 26 + 26
	const firstKey = keysAt + 4
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	u32 := func(n uint32) []byte { return binary.LittleEndian.AppendUint32(nil, n) }
	cases := map[string][]byte{
		"bad magic":          cat([]byte("RDKW"), v[4:]),
		"version 2":          cat(v[:4], []byte{2}, v[5:]),
		"trailing byte":      cat(v, []byte{0}),
		"peer id 0":          cat(v[:peersAt], make([]byte, 8), v[peersAt+8:]),
		"peers out of order": cat(v[:peersAt], v[peersAt+26:keysAt], v[peersAt:peersAt+26], v[keysAt:]),
		"repeated peer":      cat(v[:peersAt], v[peersAt:peersAt+26], v[peersAt:peersAt+26], v[keysAt:]),
		"keys out of order":  cat(v[:firstKey], v[firstKey+14:firstKey+24], v[firstKey:firstKey+14], v[firstKey+24:]),
		"empty address":      cat(v[:peersAt+8], u32(0), v[peersAt+26:]),
		"address with NUL":   cat(v[:peersAt+12], []byte{0}, v[peersAt+13:]),
		"empty key":          cat(v[:firstKey], u32(0), v[firstKey+5:]),
		"key of 1025 bytes":  cat(v[:firstKey], u32(1025), bytes.Repeat([]byte("k"), 1025), v[firstKey+5:]),
		"value over 1 MiB":   cat(v[:firstKey+5], u32(maxValueBytes+1), make([]byte, maxValueBytes+1), v[firstKey+14:]),
		"count beyond data":  cat(v[:keysAt], u32(0xffffffff), v[keysAt+4:]),
	}
	for n := 0; n < len(v); n++ {
		cases[fmt.Sprintf("truncated to %d bytes", n)] = v[:n]
	}
	return cases
}

func TestMalformedSnapshotsAreRefusedAndChangeNothing(t *testing.T) {
	for name, data := range damagedVectors(readVector(t)) {
		var refused []error
		s := newStore(func(uint64, string, bool) { t.Errorf("%s: the address book changed", name) })
		s.onRefused = func(err error) { refused = append(refused, err) }
		s.kv["kept"] = []byte("state")
		err := s.Restore(bytes.NewReader(data))
		if !errors.Is(err, errMalformedSnapshot) {
			t.Errorf("%s: Restore returned %v", name, err)
		}
		if len(s.kv) != 1 || string(s.kv["kept"]) != "state" || len(s.peers) != 0 {
			t.Errorf("%s: the state changed: %q %v", name, s.kv, s.peers)
		}
		if len(refused) != 1 {
			t.Errorf("%s: onRefused called %d times", name, len(refused))
		}
		if strings.HasPrefix(name, "truncated") && !strings.Contains(err.Error(), "truncated") {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCommandsOutOfBoundsAreIgnored(t *testing.T) {
	s := newStore(func(uint64, string, bool) {})
	long := strings.Repeat("k", maxKeyBytes)
	for _, c := range [][]byte{
		encodeSet("", []byte("v")), encodeSet(long+"k", []byte("v")),
		encodeSet("k", make([]byte, maxValueBytes+1)), encodePeer(0, "h:1"), encodePeer(5, ""),
		encodePeer(5, strings.Repeat("h", 256)), encodePeer(5, "h\x00:1"),
	} {
		s.Apply(embraft.Entry{Data: c})
	}
	s.Apply(embraft.Entry{Data: encodeSet(long, make([]byte, maxValueBytes))})
	s.Apply(embraft.Entry{Data: encodePeer(5, strings.Repeat("h", 255))})
	if len(s.kv) != 1 || len(s.kv[long]) != maxValueBytes || len(s.peers) != 1 {
		t.Fatalf("%d keys, peers %v", len(s.kv), s.peers)
	}
}

// TestMalformedSnapshotStopsTheNode: a snapshot file that embraft accepts
// (its length and CRC-32 match its name) but that is not raftd's makes the
// restarted raftd exit with status 1 and say why.
func TestMalformedSnapshotStopsTheNode(t *testing.T) {
	if testing.Short() {
		t.Skip("multi-process test")
	}
	c := newCluster(t, 1, []string{"-v"}, []string{"RAFTD_SNAPSHOT_EVERY=20", "RAFTD_COMPACT_KEEP=5"})
	c.bootstrap()
	p := c.procs[0]
	for i := 0; i < 30; i++ {
		if code, body := do("POST", p.url(fmt.Sprintf("/db/k%d", i)), "v"); code != 200 {
			t.Fatalf("write: %d %s", code, body)
		}
	}
	files := func() []string {
		m, _ := filepath.Glob(filepath.Join(p.dir, "wal", "snapshots", "snap-*.snap"))
		return m
	}
	waitFor(t, 10*time.Second, "a snapshot", func() bool { return len(files()) > 0 })
	exited := func() chan struct{} {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.exited
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-exited():
	case <-time.After(20 * time.Second):
		t.Fatal("raftd did not stop on SIGTERM")
	}
	// The latest file is the one the WAL names (names sort by index).
	all := files()
	latest := all[len(all)-1]
	parts := strings.Split(filepath.Base(latest), "-")
	data := readVector(t)[:117]
	name := fmt.Sprintf("snap-%s-%s-%020d-%08x.snap", parts[1], parts[2], len(data), crc32.ChecksumIEEE(data))
	if err := os.WriteFile(filepath.Join(filepath.Dir(latest), name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(latest); err != nil {
		t.Fatal(err)
	}
	p.start()
	select {
	case <-exited():
	case <-time.After(30 * time.Second):
		t.Fatal("raftd kept running on a malformed snapshot")
	}
	p.mu.Lock()
	code := p.cmd.ProcessState.ExitCode()
	p.mu.Unlock()
	if code != 1 {
		t.Fatalf("exit status %d, want 1", code)
	}
	if log := p.logText(); !strings.Contains(log, "refusing snapshot") || !strings.Contains(log, "truncated") {
		t.Fatalf("the log does not say why:\n%s", tail(log, 2000))
	}
}
