//! Per-follower replication progress and flow control.
