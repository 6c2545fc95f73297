package embraft

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
)

// snapshotStore keeps the state machine snapshots in DATA-DIR/snapshots,
// one file per snapshot named by its index (the log records where each
// stands; the host owns the bytes, docs/FFI.md). Only the latest is kept.
type snapshotStore struct {
	dir string
	mu  sync.Mutex
	// latest caches the newest snapshot, which is the one peers ask for.
	latestIndex uint64
	latest      []byte
}

func openSnapshotStore(dataDir string) (*snapshotStore, error) {
	dir := filepath.Join(dataDir, "snapshots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("embraft: snapshot directory: %w", err)
	}
	return &snapshotStore{dir: dir}, nil
}

func (s *snapshotStore) path(index uint64) string {
	return filepath.Join(s.dir, fmt.Sprintf("%020d.snap", index))
}

// save writes the snapshot durably (temporary file, fsync, rename,
// directory fsync) before anyone relies on it, then removes older ones.
func (s *snapshotStore) save(ref SnapshotRef, data []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	tmp := s.path(ref.Index) + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("embraft: saving snapshot: %w", err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, s.path(ref.Index))
	}
	if err == nil {
		err = syncDir(s.dir)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("embraft: saving snapshot: %w", err)
	}
	s.latestIndex, s.latest = ref.Index, data
	entries, _ := os.ReadDir(s.dir)
	for _, e := range entries {
		name := e.Name()
		if idx, err := strconv.ParseUint(strings.TrimSuffix(name, ".snap"), 10, 64); err == nil && idx < ref.Index {
			os.Remove(filepath.Join(s.dir, name))
		}
	}
	return nil
}

func (s *snapshotStore) load(index uint64) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.latest != nil && s.latestIndex == index {
		return s.latest, nil
	}
	data, err := os.ReadFile(s.path(index))
	if err != nil {
		return nil, fmt.Errorf("embraft: snapshot %d: %w", index, err)
	}
	return data, nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
