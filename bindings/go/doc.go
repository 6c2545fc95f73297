// Package embraft is the Go binding of embraft, a Raft library written in
// Rust with a C ABI (include/embraft.h), linked statically through cgo.
//
// Node wraps the C node one call for one call. Raft runs a Node: a ticker,
// and a driver goroutine that takes ready batches, sends their messages
// through a Transport, applies committed entries to a StateMachine and
// completes Propose and ReadIndex calls. StreamTransport speaks the TCP
// protocol every embraft binding shares (docs/WIRE.md); HTTPTransport
// carries the same frames over HTTP.
//
// Build the library first with `cargo build --release` at the repository
// root; see docs/GO.md for lifetimes, threading and the transports.
package embraft
