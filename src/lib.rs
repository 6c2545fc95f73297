//! embraft: a Raft consensus library with a durable write-ahead log,
//! embedded through a C ABI.
//!
//! Layers, bottom to top (arrows point down only):
//! - [`core`]: the pure, deterministic Raft state machine.
//! - [`codec`]: versioned binary encoding of messages and log records.
//! - [`wal`]: the memory-mapped, segmented write-ahead log.
//! - [`snapshot`]: snapshot files (beside the WAL: files, not roles).
//! - `group`: one thread-free Raft group: a core, its proposals and
//!   snapshot transfers, writes out and durability reports in.
//! - [`runtime`]: many groups on one worker pool (or inline) and one
//!   shared WAL.
//! - [`node`]: the single-group API: a runtime running one group.
//! - [`metrics`] (beside all of them): counters and histograms.
//! - [`ffi`]: the `extern "C"` surface (see include/embraft.h, docs/FFI.md).

pub mod codec;
pub mod core;
mod error;
pub mod ffi;
mod fs_util;
mod group;
pub mod metrics;
pub mod node;
pub mod runtime;
pub mod snapshot;
mod threads;
pub mod wal;
