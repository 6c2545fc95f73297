package main

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync/atomic"
)

// kvStore is the in-memory key/value state machine both libraries apply
// to: a proposal is an 8-byte key followed by the value. Proposers reuse a
// bounded set of keys, so the map stays the same size however long a run
// lasts and neither side's snapshot grows with the run.
type kvStore struct {
	m       map[uint64][]byte
	applied atomic.Uint64 // proposals applied, read by the harness after a run
}

func newKVStore() *kvStore { return &kvStore{m: make(map[uint64][]byte)} }

func (s *kvStore) apply(data []byte) error {
	if len(data) < 8 {
		return fmt.Errorf("kv: a %d-byte proposal has no 8-byte key", len(data))
	}
	key := binary.LittleEndian.Uint64(data)
	// The entry's buffer belongs to the library once apply returns.
	old := s.m[key]
	s.m[key] = append(old[:0], data[8:]...)
	s.applied.Add(1)
	return nil
}

func (s *kvStore) save(w io.Writer) error {
	bw := bufio.NewWriter(w)
	var hdr [16]byte
	binary.LittleEndian.PutUint64(hdr[:8], s.applied.Load())
	binary.LittleEndian.PutUint64(hdr[8:], uint64(len(s.m)))
	if _, err := bw.Write(hdr[:]); err != nil {
		return err
	}
	for k, v := range s.m {
		var rec [12]byte
		binary.LittleEndian.PutUint64(rec[:8], k)
		binary.LittleEndian.PutUint32(rec[8:], uint32(len(v)))
		if _, err := bw.Write(rec[:]); err != nil {
			return err
		}
		if _, err := bw.Write(v); err != nil {
			return err
		}
	}
	return bw.Flush()
}

func (s *kvStore) load(r io.Reader) error {
	br := bufio.NewReader(r)
	var hdr [16]byte
	if _, err := io.ReadFull(br, hdr[:]); err != nil {
		return fmt.Errorf("kv snapshot header: %w", err)
	}
	applied := binary.LittleEndian.Uint64(hdr[:8])
	n := binary.LittleEndian.Uint64(hdr[8:])
	m := make(map[uint64][]byte)
	for i := uint64(0); i < n; i++ {
		var rec [12]byte
		if _, err := io.ReadFull(br, rec[:]); err != nil {
			return fmt.Errorf("kv snapshot record %d of %d: %w", i, n, err)
		}
		size := binary.LittleEndian.Uint32(rec[8:])
		if size > 1<<20 {
			return errors.New("kv snapshot: value larger than 1 MiB")
		}
		v := make([]byte, size)
		if _, err := io.ReadFull(br, v); err != nil {
			return fmt.Errorf("kv snapshot value %d of %d: %w", i, n, err)
		}
		m[binary.LittleEndian.Uint64(rec[:8])] = v
	}
	s.m = m
	s.applied.Store(applied)
	return nil
}
