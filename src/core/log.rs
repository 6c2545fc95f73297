//! The in-memory Raft log.
