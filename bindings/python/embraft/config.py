"""A node's configuration: the `Config` users fill in, and the C
configuration handle built from it."""

from __future__ import annotations

import dataclasses
import os
import warnings
from ctypes import byref, c_uint64
from typing import Any, Callable, Literal, Optional, Sequence

from . import _ffi
from ._ffi import lib
from ._log import library_level
from ._managed import Managed
from .errors import ConfigError, error_for_status

WalWriteMethod = Literal["default", "mmap", "pwrite"]

_WAL_WRITE_METHODS = {"mmap": _ffi.WAL_WRITE_MMAP, "pwrite": _ffi.WAL_WRITE_PWRITE}


def _wal_write_method(config: "Config") -> Optional[int]:
    """The EMBRAFT_WAL_WRITE_* constant `config` asks for; None leaves the
    library's default."""
    method: str = config.wal_write_method
    if config.wal_pwrite is not None:
        alias = "pwrite" if config.wal_pwrite else "mmap"
        if method not in ("default", alias):
            raise ConfigError(f"wal_pwrite={config.wal_pwrite} contradicts "
                              f"wal_write_method={method!r}", _ffi.ERR_INVALID_ARGUMENT)
        method = alias
    if method == "default":
        return None
    if method not in _WAL_WRITE_METHODS:
        raise ConfigError(f"unknown wal_write_method {method!r} "
                          "(expected 'default', 'mmap' or 'pwrite')", _ffi.ERR_INVALID_ARGUMENT)
    return _WAL_WRITE_METHODS[method]


@dataclasses.dataclass
class Config:
    """A node's configuration. Ticks are counted in `tick_interval`
    seconds, which the driver thread keeps."""

    id: int
    data_dir: str
    peers: Sequence[int] = ()
    tick_interval: float = 0.05
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    sync: bool = True
    # Run the node inline: each call does the node's work (WAL write
    # included) on the calling thread; the library's one thread waits for
    # the WAL syncs.
    inline: bool = False
    # How the WAL writes batches: "pwrite" or "mmap" (through its mapping),
    # equally durable and with the same files; "default" follows the
    # library, which picks the faster one (docs/BENCHMARKS.md).
    wal_write_method: WalWriteMethod = "default"
    # Deprecated for wal_write_method: True is "pwrite", False "mmap".
    wal_pwrite: Optional[bool] = None
    max_entry_bytes: Optional[int] = None
    max_msg_bytes: Optional[int] = None
    max_inflight_msgs: Optional[int] = None
    max_inflight_bytes: Optional[int] = None
    max_apply_bytes: Optional[int] = None
    segment_size: Optional[int] = None
    applied_index: int = 0
    input_queue_capacity: Optional[int] = None
    lease_reads: bool = False
    # Idle ticks after which a leader and its followers go quiet (no
    # heartbeats, no election timers) until work arrives; None never does.
    quiesce_ticks: Optional[int] = None
    compact_keep_entries: Optional[int] = None
    # Take a snapshot automatically (on the driver thread) once this many
    # entries, or this many bytes of log, were applied since the last one;
    # None (the default) never does on that account.
    snapshot_entries: Optional[int] = None
    snapshot_bytes: Optional[int] = None
    snapshot_chunk_size: Optional[int] = None
    random_seed: int = 0
    # None follows the "embraft.core" logger's effective level.
    log_level: Optional[int] = None

    def __post_init__(self) -> None:
        if self.wal_pwrite is not None:
            # Three frames up: past the generated __init__, to the caller.
            warnings.warn("Config.wal_pwrite is deprecated: use wal_write_method",
                          DeprecationWarning, stacklevel=3)


# Config fields left to the library's default when None, and their setters.
_OPTIONAL_SETTERS = {
    "max_entry_bytes": lib.embraft_config_set_max_entry_bytes,
    "max_msg_bytes": lib.embraft_config_set_max_msg_bytes,
    "max_inflight_msgs": lib.embraft_config_set_max_inflight_msgs,
    "max_inflight_bytes": lib.embraft_config_set_max_inflight_bytes,
    "max_apply_bytes": lib.embraft_config_set_max_apply_bytes,
    "segment_size": lib.embraft_config_set_segment_size,
    "input_queue_capacity": lib.embraft_config_set_input_queue_capacity,
    "quiesce_ticks": lib.embraft_config_set_quiesce_ticks,
    "compact_keep_entries": lib.embraft_config_set_compact_keep_entries,
    "snapshot_entries": lib.embraft_config_set_snapshot_entries,
    "snapshot_bytes": lib.embraft_config_set_snapshot_bytes,
    "snapshot_chunk_size": lib.embraft_config_set_snapshot_chunk_size,
}


class ConfigHandle(Managed[_ffi.ConfigPtr]):
    """A C configuration (embraft_config*)."""

    _free = lib.embraft_config_free
    _what = "configuration"

    @classmethod
    def new(cls) -> "ConfigHandle":
        ptr = _ffi.ConfigPtr()
        code = lib.embraft_config_new(byref(ptr))
        if code != _ffi.OK:
            raise error_for_status(code)
        return cls(ptr)

    @classmethod
    def build(cls, config: Config) -> "ConfigHandle":
        """A C configuration holding every field of `config`."""
        handle = cls.new()
        try:
            handle.set(lib.embraft_config_set_id, config.id)
            peers = list(config.peers)
            handle.set(lib.embraft_config_set_peers, (c_uint64 * len(peers))(*peers),
                       len(peers))
            handle.set(lib.embraft_config_set_data_dir, os.fsencode(config.data_dir))
            handle.set(lib.embraft_config_set_election_ticks, config.election_ticks)
            handle.set(lib.embraft_config_set_heartbeat_ticks, config.heartbeat_ticks)
            handle.set(lib.embraft_config_set_pre_vote, config.pre_vote)
            handle.set(lib.embraft_config_set_check_quorum, config.check_quorum)
            handle.set(lib.embraft_config_set_sync_mode,
                       _ffi.SYNC_ALWAYS if config.sync else _ffi.SYNC_NEVER)
            handle.set(lib.embraft_config_set_threading,
                       _ffi.THREADING_INLINE if config.inline else _ffi.THREADING_NODE)
            wal_write_method = _wal_write_method(config)
            if wal_write_method is not None:
                handle.set(lib.embraft_config_set_wal_write_method, wal_write_method)
            handle.set(lib.embraft_config_set_applied_index, config.applied_index)
            handle.set(lib.embraft_config_set_lease_reads, config.lease_reads)
            handle.set(lib.embraft_config_set_random_seed, config.random_seed)
            handle.set(lib.embraft_config_set_log_level, library_level(config.log_level))
            for field, setter in _OPTIONAL_SETTERS.items():
                value = getattr(config, field)
                if value is not None:
                    handle.set(setter, value)
        except BaseException:
            handle.close()
            raise
        return handle

    def set(self, setter: Callable[..., int], *args: Any) -> None:
        """Calls a setter, raising with the configuration's last error. A
        value the setter refuses is a field of `Config` no node can start
        with: ConfigError, as for combinations refused at start."""
        code = setter(self.ptr(), *args)
        if code == _ffi.ERR_INVALID_ARGUMENT:
            raise ConfigError(error_for_status(code, self.last_error()).args[0], code)
        self.check(code)

    def check(self, code: int) -> None:
        """Raises for a status of a call that records its reason in this
        configuration's last error (the setters, and embraft_node_new)."""
        if code != _ffi.OK:
            raise error_for_status(code, self.last_error())

    def last_error(self) -> str:
        return _ffi.last_error_text(lib.embraft_config_last_error, self.ptr())
