"""What a node measured since it started (`Node.metrics()`): the C struct
filled by embraft_node_metrics decoded into the frozen `Metrics` and
`Histogram` dataclasses."""

from __future__ import annotations

import dataclasses
from typing import Callable, Dict, Optional, Tuple

from . import _ffi
from ._ffi import lib


def _names(function: Callable[[int], Optional[bytes]], count: int) -> Tuple[str, ...]:
    names = []
    for index in range(count):
        name = function(index)
        if name is None:
            raise _ffi.LibraryError(f"embraft names only {index} of {count} metric labels")
        names.append(name.decode())
    return tuple(names)


# The names of the per-kind counters, static in the library: read once.
MESSAGE_KINDS: Tuple[str, ...] = _names(lib.embraft_metrics_message_kind, _ffi.MESSAGE_KINDS)
"""Raft message kinds (`PreVote`, `Append`, ...): the keys of
`Metrics.messages_sent` and `Metrics.messages_received`, in the library's
order."""

DROP_REASONS: Tuple[str, ...] = _names(lib.embraft_metrics_drop_reason, _ffi.DROP_REASONS)
"""Reasons a proposal is dropped (`not_leader`, `superseded`, ...): the keys
of `Metrics.proposals_dropped`, in the library's order."""

HISTOGRAM_BOUNDS_SECONDS: Tuple[float, ...] = tuple(
    (_ffi.HISTOGRAM_FIRST_BOUND_US << i) / 1e6 for i in range(_ffi.HISTOGRAM_BUCKETS - 1)
) + (float("inf"),)
"""Upper bounds of the histogram buckets in seconds: 32 µs doubling
(0.000032 ... 8.388608), the last one infinite."""


@dataclasses.dataclass(frozen=True)
class Histogram:
    """A latency distribution. `buckets[i]` counts the observations of at
    most `bounds_seconds[i]` (and more than the bucket before): the counts
    are not cumulative; `cumulative()` gives Prometheus's."""

    buckets: Tuple[int, ...]
    count: int
    sum_seconds: float

    @property
    def bounds_seconds(self) -> Tuple[float, ...]:
        return HISTOGRAM_BOUNDS_SECONDS

    def cumulative(self) -> Tuple[int, ...]:
        """Observations of at most each bound; the last one is `count`."""
        total = 0
        counts = []
        for observations in self.buckets:
            total += observations
            counts.append(total)
        return tuple(counts)


@dataclasses.dataclass(frozen=True)
class Metrics:
    """What a node and its WAL measured since the node started. Counters
    only grow; durations are in seconds."""

    wal_sync_duration: Histogram
    """Each WAL sync (fdatasync or msync)."""
    wal_bytes_written: int
    wal_batches_written: int
    proposals_committed: int
    """Proposals made on this node that committed."""
    proposals_dropped: Dict[str, int]
    """Proposals made on this node that were dropped, by reason (every
    name of `DROP_REASONS`, zeros included)."""
    proposal_commit_latency: Histogram
    """From a proposal's append on this node, as leader, to its commit."""
    leader_changes: int
    elections_started: int
    pre_votes_started: int
    messages_sent: Dict[str, int]
    """By message kind (every name of `MESSAGE_KINDS`, zeros included)."""
    messages_received: Dict[str, int]
    snapshots_sent: int
    snapshot_bytes_sent: int
    snapshots_received: int
    snapshot_bytes_received: int
    cache_hit_entries: int
    cache_miss_entries: int
    cached_entry_bytes: int
    apply_lag: int
    """Committed entries not yet applied."""


def _histogram(raw: _ffi.Histogram) -> Histogram:
    return Histogram(buckets=tuple(raw.buckets), count=raw.count, sum_seconds=raw.sum_us / 1e6)


def decode_metrics(raw: _ffi.Metrics) -> Metrics:
    """The dataclass of a filled embraft_metrics struct."""
    return Metrics(
        wal_sync_duration=_histogram(raw.wal_sync_duration),
        wal_bytes_written=raw.wal_bytes_written,
        wal_batches_written=raw.wal_batches_written,
        proposals_committed=raw.proposals_committed,
        proposals_dropped=dict(zip(DROP_REASONS, raw.proposals_dropped)),
        proposal_commit_latency=_histogram(raw.proposal_commit_latency),
        leader_changes=raw.leader_changes,
        elections_started=raw.elections_started,
        pre_votes_started=raw.pre_votes_started,
        messages_sent=dict(zip(MESSAGE_KINDS, raw.messages_sent)),
        messages_received=dict(zip(MESSAGE_KINDS, raw.messages_received)),
        snapshots_sent=raw.snapshots_sent,
        snapshot_bytes_sent=raw.snapshot_bytes_sent,
        snapshots_received=raw.snapshots_received,
        snapshot_bytes_received=raw.snapshot_bytes_received,
        cache_hit_entries=raw.cache_hit_entries,
        cache_miss_entries=raw.cache_miss_entries,
        cached_entry_bytes=raw.cached_entry_bytes,
        apply_lag=raw.apply_lag,
    )
