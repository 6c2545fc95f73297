package main

import (
	"errors"
	"net"
)

// startRuntime runs a sharded node (placeholder until the Go runtime API
// lands).
func (s *server) startRuntime(cfg config, ident identity, listener net.Listener) error {
	return errors.New("sharded nodes need the Go runtime API")
}
