package main

import (
	"fmt"
	"net"

	embraft "github.com/embraft/embraft/bindings/go"
)

var _ shard = (*embraft.Group)(nil)

// startRuntime runs a sharded node: groups 1 … N on one embraft runtime
// (one WAL, one worker pool), whose transport carries group frames
// between nodes.
func (s *server) startRuntime(cfg config, ident identity, listener net.Listener) error {
	transport := embraft.NewGroupStreamTransport(s.clusterID, s.id, 0, cfg.logger)
	s.transport = transport
	s.groups = make(shardTable, ident.shards)
	for i := range s.groups {
		s.groups[i] = s.newGroup(uint64(i+1), transport)
	}
	s.setKnownPeers(transport, ident.known)
	rt, err := embraft.StartRuntime(embraft.RuntimeOptions{
		Config:       s.raftConfig(cfg, nil),
		Transport:    transport,
		TickInterval: tickInterval,
		Logger:       cfg.logger,
	})
	if err != nil {
		return err
	}
	// A founder is the only voter of every group; a joining node's
	// groups start empty and learn their membership from the leaders'
	// logs; a restart ignores the members.
	var members []uint64
	if ident.founding {
		members = []uint64{s.id}
	}
	for _, g := range s.groups {
		running, err := rt.StartGroup(g.id, embraft.GroupOptions{
			Members: members, StateMachine: g.store, OnStateChange: s.logState(g.id),
			// The groups share one WAL, whose oldest segments go only once
			// every group with entries there has compacted past them: the
			// runtime asks those groups (an idle one too) for a snapshot
			// when the WAL outgrows its soft limit. Config.SnapshotEntries
			// is 0, so it asks for nothing else; RAFTD_SNAPSHOT_EVERY is
			// snapshotLoop's.
			AutoSnapshot: true,
		})
		if err != nil {
			rt.Close()
			return fmt.Errorf("group %d: %w", g.id, err)
		}
		g.raft = running
	}
	s.closeNode = rt.Close
	s.listener = embraft.NewMuxListener(listener, transport)
	return nil
}
