//! Tunables of one Raft node and their validation.

use super::log::LogReadError;
use super::types::{NodeId, NO_NODE};
use std::fmt;

/// The largest `max_entry_bytes` a node accepts.
pub const MAX_ENTRY_BYTES_LIMIT: u64 = 1 << 30;

/// The configuration of one node's Raft core.
#[derive(Clone, Debug)]
pub struct Config {
    /// This node's id; never [`NO_NODE`].
    pub id: NodeId,
    /// Base election timeout in ticks. The actual timeout is drawn from
    /// `[election_tick, 2 * election_tick)` after every reset.
    pub election_tick: u32,
    /// A leader sends heartbeats every `heartbeat_tick` ticks.
    pub heartbeat_tick: u32,
    /// Run a pre-vote round before a real election, so a node that was cut
    /// off does not raise the cluster's term when it comes back.
    pub pre_vote: bool,
    /// A leader that has not heard from a quorum within an election timeout
    /// steps down; followers that heard from a leader recently refuse votes.
    pub check_quorum: bool,
    /// In-flight appends per follower, in messages.
    pub max_inflight_msgs: usize,
    /// In-flight appends per follower, in bytes of entries.
    pub max_inflight_bytes: u64,
    /// Bytes of entries in one append message (at least one entry is always
    /// sent).
    pub max_msg_bytes: u64,
    /// Largest payload a proposal may carry.
    pub max_entry_bytes: u64,
    /// Bytes of committed entries handed out in one ready batch (at least one
    /// entry is always handed out).
    pub max_apply_bytes: u64,
    /// Serve read-index requests from the leader's lease instead of a
    /// heartbeat round. Needs `check_quorum`. The lease runs for
    /// `election_tick - 1` ticks from the sending of the last heartbeat
    /// round a quorum acknowledged, and assumes that clocks on the nodes
    /// advance at similar rates. A restarted node does not remember the
    /// lease it granted and may vote at once, so a follower crash can cut a
    /// lease short and let a deposed leader serve a stale read. A leader
    /// that sent a transfer's `TimeoutNow` serves no lease read for the
    /// rest of its term.
    pub lease_reads: bool,
    /// Entries kept in memory (and in the log) before a snapshot point, so
    /// that a follower lagging by less than this catches up without a
    /// snapshot.
    pub compact_keep_entries: u64,
    /// Seed of the generator that randomizes election timeouts.
    pub seed: u64,
    /// A leader with nothing to do for this many ticks goes quiet (0:
    /// never): it stops heartbeating and tells its followers, who stop
    /// their election timers until they hear from it again. See
    /// docs/ARCHITECTURE.md, "Quiescence".
    pub quiesce_tick: u32,
    /// Bytes of entries the core keeps cached in memory (0, the default:
    /// no bound). Once a ready batch is taken or persisted, the oldest
    /// entries beyond it leave the cache, if a log storage is installed
    /// (`Raft::set_log_storage`) to read them back from. Entries not yet
    /// durable or not yet handed out for applying stay, so the cache may
    /// exceed this while they wait. See docs/ARCHITECTURE.md, "Entry cache
    /// and log view".
    pub max_cached_bytes: u64,
    /// A leader whose commit index advances does not send appends that
    /// carry nothing but the new commit index (false, the default: it
    /// sends one to every follower that could use it, as etcd's
    /// `bcastAppend` does). That saves a step on each follower per commit,
    /// and the leader's step for each answer, which is most of a group's
    /// work when proposals arrive one at a time. The cost: followers learn
    /// the commit index from the next append carrying entries or the next
    /// heartbeat, so their applies, and reads served by a follower, may lag
    /// by up to one heartbeat interval. The leader still tells followers a
    /// commit of a membership change at once (they must put it in force
    /// promptly), and broadcasts while it votes in no configuration (it
    /// steps down once its commit is made); the `Quiesce` message carries
    /// the commit index, so a group never goes quiet with a follower
    /// untold. `RuntimeConfig::new` turns it on; through the C API it is
    /// off unless `embraft_config_set_skip_commit_broadcast` turns it on.
    pub skip_commit_broadcast: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            id: NO_NODE,
            election_tick: 10,
            heartbeat_tick: 1,
            pre_vote: true,
            check_quorum: true,
            max_inflight_msgs: 256,
            max_inflight_bytes: 32 << 20,
            max_msg_bytes: 1 << 20,
            max_entry_bytes: 1 << 20,
            max_apply_bytes: 16 << 20,
            lease_reads: false,
            compact_keep_entries: 1024,
            seed: 0,
            quiesce_tick: 0,
            max_cached_bytes: 0,
            skip_commit_broadcast: false,
        }
    }
}

/// Why a [`Config`] was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// The id is [`NO_NODE`].
    InvalidId,
    /// `heartbeat_tick` is zero or `election_tick <= heartbeat_tick`.
    InvalidTicks,
    /// A flow-control or size limit is zero or too large.
    InvalidLimit(&'static str),
    /// Lease reads were asked for without check-quorum.
    LeaseWithoutCheckQuorum,
    /// The initial membership is empty or names [`NO_NODE`].
    InvalidMembership(&'static str),
    /// The recovered log is not contiguous or does not follow the snapshot.
    InvalidLog(&'static str),
    /// The recovered log could not be read through the log storage.
    LogRead(LogReadError),
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::InvalidId => write!(f, "node id 0 is reserved"),
            ConfigError::InvalidTicks => {
                write!(
                    f,
                    "heartbeat_tick must be > 0 and election_tick > heartbeat_tick"
                )
            }
            ConfigError::InvalidLimit(what) => write!(f, "{what} is out of range"),
            ConfigError::LeaseWithoutCheckQuorum => {
                write!(f, "lease_reads requires check_quorum")
            }
            ConfigError::InvalidMembership(why) => write!(f, "invalid membership: {why}"),
            ConfigError::InvalidLog(why) => write!(f, "invalid recovered log: {why}"),
            ConfigError::LogRead(error) => write!(f, "recovered log unreadable: {error}"),
        }
    }
}

impl std::error::Error for ConfigError {}

impl Config {
    /// Checks every field; the core refuses a config that fails.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.id == NO_NODE {
            return Err(ConfigError::InvalidId);
        }
        if self.heartbeat_tick == 0 || self.election_tick <= self.heartbeat_tick {
            return Err(ConfigError::InvalidTicks);
        }
        if self.lease_reads && !self.check_quorum {
            return Err(ConfigError::LeaseWithoutCheckQuorum);
        }
        // Payloads travel with u32 length prefixes.
        if self.max_entry_bytes > MAX_ENTRY_BYTES_LIMIT {
            return Err(ConfigError::InvalidLimit("max_entry_bytes (over 1 GiB)"));
        }
        for (value, name) in [
            (self.max_inflight_msgs as u64, "max_inflight_msgs"),
            (self.max_inflight_bytes, "max_inflight_bytes"),
            (self.max_msg_bytes, "max_msg_bytes"),
            (self.max_entry_bytes, "max_entry_bytes"),
            (self.max_apply_bytes, "max_apply_bytes"),
        ] {
            if value == 0 {
                return Err(ConfigError::InvalidLimit(name));
            }
        }
        Ok(())
    }
}
