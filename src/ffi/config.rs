//! `embraft_config`: the opaque, growable node configuration. Setters only
//! check what their own argument can tell (NULLs, enum values); the
//! combination is validated once, by `embraft_node_new`, with the core's
//! and the node's own rules.

use super::guard::{
    borrow_ids, borrow_mut_or_return, borrow_or_return, catch_panics, record_failures,
    require_node_id, require_outputs, write_output, Failure,
};
use super::last_error::LastError;
use super::{
    embraft_status, EMBRAFT_ERR_INVALID_CONFIG, EMBRAFT_OK, EMBRAFT_SYNC_ALWAYS,
    EMBRAFT_SYNC_NEVER, EMBRAFT_THREADING_INLINE, EMBRAFT_THREADING_NODE, EMBRAFT_WAL_WRITE_MMAP,
    EMBRAFT_WAL_WRITE_PWRITE,
};
use crate::node::{LogLevel, NodeConfig, Threading};
use crate::wal::{SyncMode, WriteMethod};
use std::ffi::{c_char, CStr};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// An opaque node configuration. Create with `embraft_config_new`, free with
/// `embraft_config_free`.
pub struct embraft_config {
    pub(crate) config: NodeConfig,
    /// `embraft_node_new` refuses a config whose directory was never set.
    pub(crate) data_dir_set: bool,
    /// Also receives the reason `embraft_node_new` failed.
    pub(crate) errors: LastError,
}

impl embraft_config {
    /// The configuration a node or runtime is created from, refused when
    /// its data directory was never set (an empty path would put the WAL
    /// in the working directory).
    pub(crate) fn checked(&self) -> Result<&NodeConfig, Failure> {
        if !self.data_dir_set {
            return Err(Failure::new(
                EMBRAFT_ERR_INVALID_CONFIG,
                "the data directory is not set",
            ));
        }
        Ok(&self.config)
    }
}

/// Creates a configuration with the defaults (election 10 ticks, heartbeat
/// 1 tick, pre-vote and check-quorum on, always sync, applied index 0) and
/// no id, peers or data directory. On success `*config_out` receives a new
/// handle owned by the caller, to be released with `embraft_config_free`.
///
/// Thread safety: may be called from any thread.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_new(
    config_out: *mut *mut embraft_config,
) -> embraft_status {
    catch_panics(|| {
        require_outputs!(config_out);
        let config = Box::new(embraft_config {
            config: NodeConfig::new(0, ""),
            data_dir_set: false,
            errors: LastError::default(),
        });
        // SAFETY: checked non-NULL above; writable by the caller's contract.
        unsafe { write_output(config_out, Box::into_raw(config)) };
        EMBRAFT_OK
    })
}

/// Frees a configuration. NULL is a no-op. Nodes created from it keep
/// their own copy, so it may be freed right after `embraft_node_new`.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_free(config: *mut embraft_config) {
    // Freeing cannot fail; a panic in a destructor is swallowed here.
    catch_panics(|| {
        if !config.is_null() {
            // SAFETY: a non-NULL handle came from embraft_config_new and is
            // freed once (the caller's contract).
            drop(unsafe { Box::from_raw(config) });
        }
        EMBRAFT_OK
    });
}

/// Copies the message of the most recent failed call on `config` (setters
/// and `embraft_node_new`) into `buf`, truncated to `buf_len - 1` bytes and
/// NUL-terminated; an empty string if no call failed. `buf` may be NULL
/// only when `buf_len` is 0. If `message_len` is not NULL it receives the
/// full message length (without the NUL). The caller owns `buf`.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_last_error(
    config: *const embraft_config,
    buf: *mut c_char,
    buf_len: usize,
    message_len: *mut usize,
) -> embraft_status {
    catch_panics(|| {
        let config = borrow_or_return!(config);
        // SAFETY: buffer validity is the caller's contract (see above).
        unsafe { config.errors.copy_out(buf, buf_len, message_len) }
    })
}

/// The shared body of every setter: NULL check of the handle, panic
/// boundary, and a failure recorded as the config's last error.
///
/// # Safety
/// `config` is NULL or a live handle not used concurrently.
unsafe fn with_config(
    config: *mut embraft_config,
    body: impl FnOnce(&mut embraft_config) -> Result<(), Failure>,
) -> embraft_status {
    catch_panics(|| {
        let config = borrow_mut_or_return!(config);
        // The message lives beside the fields the body changes.
        let errors = std::mem::take(&mut config.errors);
        let status = record_failures(&errors, || body(config));
        config.errors = errors;
        status
    })
}

/// Applies `change` to a configuration handle: the plain setters.
///
/// # Safety
/// `config` is NULL or a live handle not used concurrently.
unsafe fn set(
    config: *mut embraft_config,
    change: impl FnOnce(&mut embraft_config),
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |config| {
            change(config);
            Ok(())
        })
    }
}

/// Sets an option chosen from a list of constants: `parse` maps the C
/// value to the option's, or refuses it (`None`) as an unknown `what`.
///
/// # Safety
/// `config` must be NULL or a live configuration not used concurrently.
unsafe fn set_choice<T>(
    config: *mut embraft_config,
    value: u32,
    what: &str,
    parse: impl FnOnce(u32) -> Option<T>,
    apply: impl FnOnce(&mut NodeConfig, T),
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |config| {
            let choice =
                parse(value).ok_or_else(|| Failure::invalid(format!("unknown {what} {value}")))?;
            apply(&mut config.config, choice);
            Ok(())
        })
    }
}

/// Sets this node's id (non-zero, unique in the cluster); 0 fails with
/// `EMBRAFT_ERR_INVALID_ARGUMENT` and leaves the config as it was.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_id(
    config: *mut embraft_config,
    id: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |c| {
            c.config.raft.id = require_node_id(id, "id")?;
            Ok(())
        })
    }
}

/// Sets the voters of a new cluster, this node included: `count` ids read
/// from `ids` (copied; `ids` may be NULL when `count` is 0). An id 0 fails
/// with `EMBRAFT_ERR_INVALID_ARGUMENT` and leaves the config as it was.
/// Used only when
/// the data directory is empty; a restarted node recovers its membership.
/// Leave empty (the default) for a node that joins a running cluster: it
/// starts with no membership and learns it from the leader's log once a
/// member proposes `EMBRAFT_CONF_ADD_VOTER` or `EMBRAFT_CONF_ADD_LEARNER`
/// for it.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_peers(
    config: *mut embraft_config,
    ids: *const u64,
    count: usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |config| {
            // SAFETY: the array's validity is the caller's contract.
            config.config.peers = borrow_ids(ids, count, "ids")?.to_vec();
            Ok(())
        })
    }
}

/// Sets the data directory from a NUL-terminated path (copied; any bytes
/// but NUL). It is created if missing. One node at a time may use a
/// directory.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_data_dir(
    config: *mut embraft_config,
    path: *const c_char,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        with_config(config, |config| {
            if path.is_null() {
                return Err(Failure::null("data directory path"));
            }
            // SAFETY: non-NULL and NUL-terminated by the caller's contract.
            let path = CStr::from_ptr(path).to_bytes();
            if path.is_empty() {
                return Err(Failure::invalid("data directory path is empty"));
            }
            config.config.data_dir = Path::new(std::ffi::OsStr::from_bytes(path)).to_path_buf();
            config.data_dir_set = true;
            Ok(())
        })
    }
}

/// Sets the base election timeout in ticks (default 10); the actual timeout
/// is random in `[ticks, 2 * ticks)`. Must exceed the heartbeat interval
/// (`embraft_node_new` refuses it otherwise with
/// `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_election_ticks(
    config: *mut embraft_config,
    ticks: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.election_tick = ticks) }
}

/// Sets the heartbeat interval of a leader in ticks (default 1). At least
/// 1 and below the election ticks (`embraft_node_new` refuses others with
/// `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_heartbeat_ticks(
    config: *mut embraft_config,
    ticks: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.heartbeat_tick = ticks) }
}

/// Enables or disables the pre-vote round before elections (default on),
/// which keeps a node that was cut off from raising the cluster's term.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_pre_vote(
    config: *mut embraft_config,
    enabled: bool,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.pre_vote = enabled) }
}

/// Enables or disables check-quorum (default on): a leader that has not
/// heard from a quorum for an election timeout steps down.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_check_quorum(
    config: *mut embraft_config,
    enabled: bool,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.check_quorum = enabled) }
}

/// Sets the number of append messages in flight per follower (default 256).
/// At least 1 (`embraft_node_new` refuses 0 with
/// `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_max_inflight_msgs(
    config: *mut embraft_config,
    messages: usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.max_inflight_msgs = messages) }
}

/// Sets the bytes of entries in flight per follower (default 32 MiB). At
/// least 1 (`embraft_node_new` refuses 0 with
/// `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_max_inflight_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.max_inflight_bytes = bytes) }
}

/// Sets the bytes of entries in one append message (default 1 MiB; one
/// entry is always sent). At least 1 (`embraft_node_new` refuses 0 with
/// `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_max_msg_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.max_msg_bytes = bytes) }
}

/// Sets the largest proposal payload in bytes (default 1 MiB); larger
/// proposals fail with `EMBRAFT_ERR_TOO_LARGE`. `embraft_node_new` refuses
/// with `EMBRAFT_ERR_INVALID_CONFIG` 0, more than 1 GiB, and a value the
/// WAL segment cannot hold (see `embraft_config_set_segment_size`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_max_entry_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.max_entry_bytes = bytes) }
}

/// Sets the bytes of committed entries handed out in one ready batch
/// (default 16 MiB; one entry is always handed out). At least 1
/// (`embraft_node_new` refuses 0 with `EMBRAFT_ERR_INVALID_CONFIG`).
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_max_apply_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.max_apply_bytes = bytes) }
}

/// Sets the sync mode: `EMBRAFT_SYNC_ALWAYS` (default) or
/// `EMBRAFT_SYNC_NEVER` (tests and benchmarks only); other values fail
/// with `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_sync_mode(
    config: *mut embraft_config,
    mode: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        set_choice(
            config,
            mode,
            "sync mode",
            |mode| match mode {
                EMBRAFT_SYNC_ALWAYS => Some(SyncMode::Always),
                EMBRAFT_SYNC_NEVER => Some(SyncMode::Never),
                _ => None,
            },
            |c, mode| c.wal.sync = mode,
        )
    }
}

/// Sets how the WAL writes batches: `EMBRAFT_WAL_WRITE_PWRITE` (default)
/// or `EMBRAFT_WAL_WRITE_MMAP`; other values fail with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`. Both are equally durable and share one
/// on-disk format, so a data directory can be reopened with either.
/// `pwrite` is the default because it spares the kernel the page faults
/// and TLB shootdowns of writing through a shared mapping; see
/// docs/BENCHMARKS.md for the measurements.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_wal_write_method(
    config: *mut embraft_config,
    method: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        set_choice(
            config,
            method,
            "WAL write method",
            |method| match method {
                EMBRAFT_WAL_WRITE_MMAP => Some(WriteMethod::Mmap),
                EMBRAFT_WAL_WRITE_PWRITE => Some(WriteMethod::Pwrite),
                _ => None,
            },
            |c, method| c.wal.write_method = method,
        )
    }
}

/// Sets where the node does its work: `EMBRAFT_THREADING_NODE` (default)
/// or `EMBRAFT_THREADING_INLINE`; other values fail with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`.
///
/// An inline node runs at most one thread of its own, with
/// `EMBRAFT_SYNC_ALWAYS`: it waits for WAL syncs and then releases what
/// waited on them (vote and append answers, a leader's commit), signalling
/// the readiness fd (a short-lived thread also verifies a snapshot
/// received from the leader). Each input call (`tick`, `step`,
/// `propose`, `propose_conf_change`, `propose_membership`, `read_index`,
/// `transfer_leader`, `report_unreachable`, `ack_applied`,
/// `snapshot_begin`, `snapshot_writer_finish`) handles its input on the
/// caller's thread, writes the WAL (never waiting for a sync) and
/// prepares the resulting batch before it returns, so that
/// `embraft_node_poll_ready` with timeout 0 hands it out at once (except
/// for `step` and `propose` calls made while another thread runs the
/// node's round: they leave their input to that thread, which handles it
/// before its own call returns, and return at once); a longer
/// timeout waits for another thread's call to produce one, and the
/// readiness descriptor still signals. The persistence rules are those of
/// a threaded node: a vote or append response is in the batch only once
/// what it promises is durable. Calls may still come from any thread; they
/// take turns on the node, one call may serve inputs queued by
/// others meanwhile (they share its WAL write), and a call can take as
/// long as a WAL write. The host must keep calling `embraft_node_tick`:
/// timers advance only with it.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_threading(
    config: *mut embraft_config,
    mode: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        set_choice(
            config,
            mode,
            "threading mode",
            |mode| match mode {
                EMBRAFT_THREADING_NODE => Some(Threading::Node),
                EMBRAFT_THREADING_INLINE => Some(Threading::Inline),
                _ => None,
            },
            |c, mode| c.threading = mode,
        )
    }
}

/// Sets the size of each WAL segment file in bytes (default 64 MiB). A
/// multiple of 8 from 4096 to 1 GiB, and large enough to hold an entry of
/// the maximum entry size with its records: at least
/// `max_entry_bytes` rounded up to a multiple of 8, plus 840 bytes (the
/// entry's record header, a hard state and commit record, the segment
/// header, and the state restated at the segment's start, with room for a
/// membership of 64 node ids). `embraft_node_new` checks the pair, so the
/// two setters may come in any order, and refuses it with
/// `EMBRAFT_ERR_INVALID_CONFIG`; with the default 1 MiB entries a segment
/// needs at least 1,049,464 bytes.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_segment_size(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.wal.segment_size = bytes) }
}

/// Sets the index the host's state machine has already applied (default
/// 0): after a restart, committed entries up to it are not delivered again.
/// Must be an index the node delivered, so at most the last index recorded
/// in the data directory. It may exceed the recovered commit index: a
/// commit index is written without a sync of its own, so a crash can lose
/// its latest value.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_applied_index(
    config: *mut embraft_config,
    index: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.applied = index) }
}

/// Sets how many inputs (ticks, messages, proposals, acks) may wait for
/// the node's thread before calls answer `EMBRAFT_ERR_BUSY` (default 4096).
/// From 1 to `EMBRAFT_MAX_INPUT_QUEUE_CAPACITY` (1,048,576);
/// `embraft_node_new` refuses others with `EMBRAFT_ERR_INVALID_CONFIG`.
/// Memory is taken only by inputs waiting, not per slot up front. Threads
/// calling at the same moment may each queue one input beyond it.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_input_queue_capacity(
    config: *mut embraft_config,
    inputs: usize,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.input_capacity = inputs) }
}

/// Sets the initial log level, one of `EMBRAFT_LOG_*` (default
/// `EMBRAFT_LOG_OFF`); other values fail with
/// `EMBRAFT_ERR_INVALID_ARGUMENT`. Log lines arrive in ready batches.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_log_level(
    config: *mut embraft_config,
    level: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        set_choice(config, level, "log level", log_level, |c, level| {
            c.log_level = level
        })
    }
}

/// Enables lease-based reads (default off; requires check-quorum): a
/// leader answers read requests without a heartbeat round while its lease
/// holds, trading a dependency on bounded clock drift for latency. A
/// leader that has handed leadership over (`embraft_node_transfer_leader`
/// sent its `TimeoutNow`) or gone quiescent serves reads through a
/// heartbeat round instead.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_lease_reads(
    config: *mut embraft_config,
    enabled: bool,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.lease_reads = enabled) }
}

/// Makes leaders skip the appends that would only carry a new commit
/// index (default off): followers learn it from the next append with
/// entries or the next heartbeat, so their applies and follower reads may
/// lag by up to a heartbeat interval, for fewer messages and rounds per
/// proposal, which matters with many groups. Membership changes are still
/// told at once. (A runtime made in Rust with `RuntimeConfig::new` has it
/// on; one made here takes this setting.)
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_skip_commit_broadcast(
    config: *mut embraft_config,
    enabled: bool,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.skip_commit_broadcast = enabled) }
}

/// Sets the bytes of log entries a node, or all groups of a runtime
/// together, keep in memory (default 256 MiB; 0: no bound). Beyond it,
/// older entries are read back from the WAL when needed
/// (docs/ARCHITECTURE.md, "The runtime").
///
/// Thread safety: not concurrently with other calls on the same
/// configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_cache_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.cache_bytes = bytes) }
}

/// Sets how many segments a node's WAL, or a runtime's shared WAL, may
/// hold before the groups whose entries keep the oldest ones are asked
/// for snapshots (`embraft_ready_snapshot_wanted`,
/// `embraft_runtime_ready_snapshots_wanted`; default 16; 0: never on this
/// account).
///
/// Thread safety: not concurrently with other calls on the same
/// configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_wal_segments_soft_limit(
    config: *mut embraft_config,
    segments: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe {
        set(config, |c| {
            c.config.wal_segments_soft_limit = segments as usize
        })
    }
}

/// Sets after how many idle ticks a leader quiesces (default 0: never).
/// An idle leader (everything committed and acknowledged by every member,
/// no read, transfer or membership change under way) then stops
/// heartbeating and tells its followers, who stop their election timers;
/// any proposal, read, transfer or message wakes the group. A quiescent
/// follower checks in with its leader after fifty election timeouts, or at
/// once when the host reports the leader unreachable
/// (`embraft_node_report_unreachable`), so a leader that died while its
/// group was quiet is replaced within about a hundred election timeouts,
/// or as fast as without quiescence when the transport reports it (a
/// check-in costs a round trip: rarer ones keep ten thousand quiet groups
/// cheap). No lease
/// read is served from a quiescent leader's lease. docs/ARCHITECTURE.md,
/// "Quiescence", has the rules.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_quiesce_ticks(
    config: *mut embraft_config,
    ticks: u32,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.quiesce_tick = ticks) }
}

/// Sets how many entries before a snapshot point are kept in the log when
/// a snapshot is taken (default 1024), so that a follower lagging by less
/// catches up without a snapshot.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_compact_keep_entries(
    config: *mut embraft_config,
    entries: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.compact_keep_entries = entries) }
}

/// Sets after how many applied entries since the last snapshot a ready
/// batch asks the host for a new one (`embraft_ready_snapshot_wanted`);
/// 0 (the default) never asks on this account.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_snapshot_entries(
    config: *mut embraft_config,
    entries: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.snapshot.entries_threshold = entries) }
}

/// Sets after how many bytes of log delivered since the last snapshot
/// (payloads plus 24 bytes per entry) a ready batch asks the host for a
/// new one (`embraft_ready_snapshot_wanted`); 0 (the default) never asks
/// on this account.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_snapshot_bytes(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.snapshot.bytes_threshold = bytes) }
}

/// Sets the bytes of snapshot data in one message to a follower (default
/// and maximum 1 MiB, the transport's limit for a chunk). A few chunks per
/// follower are in flight at once. `embraft_node_new` refuses 0 or more
/// than 1 MiB with `EMBRAFT_ERR_INVALID_CONFIG`.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_snapshot_chunk_size(
    config: *mut embraft_config,
    bytes: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.snapshot.chunk_size = bytes) }
}

/// Sets the seed of the generator that randomizes election timeouts, for
/// reproducible tests. 0 (the default) picks a random seed.
///
/// Thread safety: must not run concurrently with any other call on the
/// same configuration.
#[no_mangle]
pub unsafe extern "C" fn embraft_config_set_random_seed(
    config: *mut embraft_config,
    seed: u64,
) -> embraft_status {
    // SAFETY: forwarded from this function's contract.
    unsafe { set(config, |c| c.config.raft.seed = seed) }
}

/// The log level for a C value, or `None` for an unknown one.
pub(crate) fn log_level(level: u32) -> Option<LogLevel> {
    u8::try_from(level).ok().and_then(LogLevel::from_u8)
}
