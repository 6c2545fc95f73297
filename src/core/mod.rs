//! The Raft state machine: pure and deterministic.
//!
//! Events go in ([`Raft::tick`], [`Raft::step`], [`Raft::propose`],
//! [`Raft::on_persisted`], [`Raft::on_applied`]); actions come out as a
//! [`Ready`] batch. The core never touches a disk, a socket, a thread or a
//! clock, and its only randomness is the seeded generator in [`Config`].

mod conf_change;
mod config;
mod log;
mod membership;
mod progress;
mod raft;
mod rng;
mod types;

pub use config::{Config, ConfigError};
pub use log::{LogReadError, LogStorage};
pub use membership::ConfChangeError;
pub use raft::{
    CompactError, InitialState, PeerStatus, ProposeError, Raft, ReadError, ReadState, Ready, Role,
    SnapshotChunk, SnapshotResponse, SoftState, Status, StepError, TransferError,
    MAX_READS_IN_PROGRESS, QUIESCENT_CHECK_TIMEOUTS,
};
pub use types::*;
