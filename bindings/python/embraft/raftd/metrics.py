"""raftd's /metrics (RAFTD.md "Metrics"): every metric of the table, read
from the node at each scrape, in the Prometheus text format 0.0.4.

With prometheus_client installed (the package's `metrics` extra) a
collector on a private registry yields the families and the client's
`generate_latest` writes them; without it this module writes the same
text itself (the same bytes: the tests compare both)."""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

from ..metrics import DROP_REASONS, HISTOGRAM_BOUNDS_SECONDS, MESSAGE_KINDS, Histogram, Metrics
from ..status import Status

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

GAUGE, COUNTER, HISTOGRAM = "gauge", "counter", "histogram"


@dataclasses.dataclass(frozen=True)
class Family:
    """One row of RAFTD.md's table."""

    name: str
    type: str
    help: str
    labels: Tuple[str, ...] = ()


FAMILIES: Tuple[Family, ...] = (
    Family("embraft_term", GAUGE, "The node's current term."),
    Family("embraft_commit_index", GAUGE, "The highest log index known committed."),
    Family("embraft_applied_index", GAUGE,
           "The highest log index applied to the key/value store."),
    Family("embraft_last_index", GAUGE, "The index of the last entry in the node's log."),
    Family("embraft_is_leader", GAUGE, "1 if this node is the leader, else 0."),
    Family("embraft_disk_wal_fsync_duration_seconds", HISTOGRAM,
           "The latency distributions of the WAL's syncs (fdatasync or msync)."),
    Family("embraft_disk_wal_write_bytes_total", COUNTER, "Bytes of records written to the WAL."),
    Family("embraft_disk_wal_write_batches_total", COUNTER, "Batches written to the WAL."),
    Family("embraft_server_proposals_committed_total", COUNTER,
           "Proposals made on this node that committed."),
    Family("embraft_server_proposals_failed_total", COUNTER,
           "Proposals made on this node that were dropped, by reason (not_leader, "
           "transfer_in_progress, too_large, superseded, conf_change_pending, "
           "conf_change_invalid, learner_behind, unknown).", ("reason",)),
    Family("embraft_server_proposal_commit_duration_seconds", HISTOGRAM,
           "The latency distributions from a proposal's append on the leader to its commit."),
    Family("embraft_server_leader_changes_seen_total", COUNTER,
           "Times the known leader changed."),
    Family("embraft_server_elections_started_total", COUNTER,
           "Elections this node started as a candidate."),
    Family("embraft_server_pre_votes_started_total", COUNTER,
           "Pre-vote rounds this node started."),
    Family("embraft_server_apply_lag_entries", GAUGE,
           "Committed entries not yet applied (commit index \u2212 applied index)."),
    Family("embraft_network_messages_sent_total", COUNTER,
           "Raft messages sent, by type (PreVote, Append, Heartbeat, ...: "
           "embraft_metrics_message_kind).", ("type",)),
    Family("embraft_network_messages_received_total", COUNTER,
           "Raft messages received, by type.", ("type",)),
    Family("embraft_snapshot_sends_total", COUNTER, "Snapshot transfers completed to followers."),
    Family("embraft_snapshot_sent_bytes_total", COUNTER,
           "Snapshot chunk bytes sent (resends included)."),
    Family("embraft_snapshot_receives_total", COUNTER, "Snapshots received and installed."),
    Family("embraft_snapshot_received_bytes_total", COUNTER,
           "Snapshot chunk bytes received."),
    Family("embraft_entry_cache_hits_total", COUNTER,
           "Log entries read from the entry cache."),
    Family("embraft_entry_cache_misses_total", COUNTER,
           "Log entries read back from the WAL because they had left the cache."),
    Family("embraft_entry_cache_bytes", GAUGE, "Bytes of log entries in the entry cache."),
    Family("raftd_requests_total", COUNTER,
           "HTTP requests served, by method and status code.", ("method", "code")),
)

Series = List[Tuple[Tuple[str, ...], Union[float, Histogram]]]
"""The series of a family: label values (in the family's label order) and
the value, a Histogram for a histogram family."""

Scrape = List[Tuple[Family, Series]]
"""Every family with what it measured at one scrape."""

GROUP_LABEL = "group"
# The runtime's shared WAL: one series per node even when sharded.
WAL_PREFIX = "embraft_disk_wal_"


def scrape(status: Status, metrics: Metrics,
           requests: Sequence[Tuple[Tuple[str, int], int]]) -> Scrape:
    """The values of every family of FAMILIES, in its order, from the
    node's status and metrics and raftd's request counts ((method, code),
    count). Every drop reason and message type has a series, zero or not."""
    values = _measured(status, metrics)
    values["raftd_requests_total"] = _requests(requests)
    return [(family, values[family.name]) for family in FAMILIES]


def _requests(requests: Sequence[Tuple[Tuple[str, int], int]]) -> Series:
    return [((method, str(code)), count)
            for (method, code), count in requests]


def scrape_groups(groups: Sequence[Tuple[int, Status, Metrics]],
                  requests: Sequence[Tuple[Tuple[str, int], int]]) -> Scrape:
    """A sharded node's scrape (RAFTD.md "Shards"): every embraft_* family
    with a `group` label first and one series per group, except the
    shared WAL's (from any group's metrics, which all carry the runtime's);
    the request counts per node."""
    per_group = [(str(group), _measured(status, metrics)) for group, status, metrics in groups]
    result: Scrape = []
    for family in FAMILIES:
        if family.name == "raftd_requests_total":
            result.append((family, _requests(requests)))
        elif family.name.startswith(WAL_PREFIX):
            result.append((family, per_group[0][1][family.name]))
        else:
            labelled = dataclasses.replace(family, labels=(GROUP_LABEL,) + family.labels)
            series: Series = []
            for group, values in per_group:
                series += [((group,) + labels, value) for labels, value in values[family.name]]
            result.append((labelled, series))
    return result


def _measured(status: Status, metrics: Metrics) -> Dict[str, Series]:
    """The series of every embraft_* family of one group or node."""
    def one(value: float) -> Series:
        return [((), value)]

    return {
        "embraft_term": one(status.term),
        "embraft_commit_index": one(status.commit),
        "embraft_applied_index": one(status.applied),
        "embraft_last_index": one(status.last_index),
        "embraft_is_leader": one(1 if status.role == "leader" else 0),
        "embraft_disk_wal_fsync_duration_seconds": [((), metrics.wal_sync_duration)],
        "embraft_disk_wal_write_bytes_total": one(metrics.wal_bytes_written),
        "embraft_disk_wal_write_batches_total": one(metrics.wal_batches_written),
        "embraft_server_proposals_committed_total": one(metrics.proposals_committed),
        "embraft_server_proposals_failed_total":
            [((reason,), metrics.proposals_dropped[reason]) for reason in DROP_REASONS],
        "embraft_server_proposal_commit_duration_seconds":
            [((), metrics.proposal_commit_latency)],
        "embraft_server_leader_changes_seen_total": one(metrics.leader_changes),
        "embraft_server_elections_started_total": one(metrics.elections_started),
        "embraft_server_pre_votes_started_total": one(metrics.pre_votes_started),
        "embraft_server_apply_lag_entries": one(metrics.apply_lag),
        "embraft_network_messages_sent_total":
            [((kind,), metrics.messages_sent[kind]) for kind in MESSAGE_KINDS],
        "embraft_network_messages_received_total":
            [((kind,), metrics.messages_received[kind]) for kind in MESSAGE_KINDS],
        "embraft_snapshot_sends_total": one(metrics.snapshots_sent),
        "embraft_snapshot_sent_bytes_total": one(metrics.snapshot_bytes_sent),
        "embraft_snapshot_receives_total": one(metrics.snapshots_received),
        "embraft_snapshot_received_bytes_total": one(metrics.snapshot_bytes_received),
        "embraft_entry_cache_hits_total": one(metrics.cache_hit_entries),
        "embraft_entry_cache_misses_total": one(metrics.cache_miss_entries),
        "embraft_entry_cache_bytes": one(metrics.cached_entry_bytes),
    }


def bucket_bounds() -> List[str]:
    """The `le` label values: Go's float format, as client_golang writes them."""
    return [go_float(bound) for bound in HISTOGRAM_BOUNDS_SECONDS]


# ----- text by hand


def go_float(value: float) -> str:
    """A float the way Prometheus's Go code (and prometheus_client) writes
    it: 3.0, 3.2e-05, 1e+06, +Inf."""
    value = float(value)
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if math.isnan(value):
        return "NaN"
    text = repr(value)
    dot = text.find(".")
    # Go writes an exponent from 1e+06 on, Python's repr from 1e+16: the
    # same rewriting as prometheus_client's floatToGoString, so that both
    # renderings agree byte for byte.
    if value > 0 and dot > 6:
        mantissa = f"{text[0]}.{text[1:dot]}{text[dot + 1:]}".rstrip("0.")
        return f"{mantissa}e+{dot - 1:02d}"
    return text


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def _escape_label(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _sample(name: str, labels: Dict[str, str], value: float) -> str:
    # Labels in name order, as prometheus_client writes them.
    pairs = ",".join(f'{key}="{_escape_label(labels[key])}"' for key in sorted(labels))
    return f"{name}{{{pairs}}} {go_float(value)}\n" if pairs else f"{name} {go_float(value)}\n"


def render_text(data: Scrape) -> str:
    """The text format written by hand."""
    out: List[str] = []
    bounds = bucket_bounds()
    for family, values in data:
        out.append(f"# HELP {family.name} {_escape_help(family.help)}\n")
        out.append(f"# TYPE {family.name} {family.type}\n")
        for label_values, value in values:
            labels = dict(zip(family.labels, label_values))
            if isinstance(value, Histogram):
                for le, count in zip(bounds, value.cumulative()):
                    out.append(_sample(f"{family.name}_bucket", {**labels, "le": le}, count))
                out.append(_sample(f"{family.name}_count", labels, value.count))
                out.append(_sample(f"{family.name}_sum", labels, value.sum_seconds))
            else:
                out.append(_sample(family.name, labels, value))
    return "".join(out)


# ----- text by prometheus_client


def client_available() -> bool:
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        return False
    return True


def render_with_client(source: Callable[[], Scrape]) -> str:
    """The text format written by prometheus_client from a private registry."""
    from prometheus_client import CollectorRegistry
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector

    class ScrapeCollector(Collector):
        def collect(self) -> Iterable[Metric]:
            bounds = bucket_bounds()
            for family, values in source():
                metric: Union[GaugeMetricFamily, CounterMetricFamily, HistogramMetricFamily]
                if family.type == HISTOGRAM:
                    metric = HistogramMetricFamily(family.name, family.help,
                                                   labels=family.labels)
                    for label_values, histogram in values:
                        assert isinstance(histogram, Histogram)
                        # Buckets cumulative, the last (+Inf) being the count.
                        metric.add_metric(list(label_values),
                                          list(zip(bounds, histogram.cumulative())),
                                          histogram.sum_seconds)
                    yield metric
                    continue
                if family.type == GAUGE:
                    metric = GaugeMetricFamily(family.name, family.help, labels=family.labels)
                else:
                    # The family is named without _total; its samples get it.
                    metric = CounterMetricFamily(family.name, family.help,
                                                 labels=family.labels)
                for label_values, value in values:
                    assert not isinstance(value, Histogram)
                    metric.add_metric(list(label_values), value)
                yield metric

    registry = CollectorRegistry(auto_describe=False)
    registry.register(ScrapeCollector())
    return generate_latest(registry).decode("utf-8")


def render(source: Callable[[], Scrape], use_client: Optional[bool] = None) -> str:
    """The /metrics text: through prometheus_client when it is installed
    (or `use_client` is True), else by hand (or `use_client` is False)."""
    if use_client is None:
        use_client = client_available()
    return render_with_client(source) if use_client else render_text(source())
