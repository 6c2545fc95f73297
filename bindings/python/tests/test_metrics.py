"""Node.metrics() and the raftd's /metrics text, both ways (prometheus_client
and by hand), checked with prometheus_client's parser against RAFTD.md."""

import dataclasses
import math
import sys

import pytest
from conftest import REPOSITORY

import embraft
from embraft.metrics import DROP_REASONS, HISTOGRAM_BOUNDS_SECONDS, MESSAGE_KINDS
from embraft.raftd import metrics as raftd_metrics

sys.path.insert(0, str(REPOSITORY / "scripts"))
import check_metrics  # noqa: E402 (from the repository's scripts/)

RAFTD_MD = str(REPOSITORY / "docs" / "RAFTD.md")


def test_label_names_come_from_the_library():
    assert len(MESSAGE_KINDS) == 15 and len(set(MESSAGE_KINDS)) == 15
    assert {"PreVote", "Append", "Heartbeat"} <= set(MESSAGE_KINDS)
    assert DROP_REASONS == ("not_leader", "transfer_in_progress", "too_large", "superseded",
                            "conf_change_pending", "conf_change_invalid", "learner_behind",
                            "unknown")


def test_histogram_bounds_double_from_32_microseconds():
    assert len(HISTOGRAM_BOUNDS_SECONDS) == 20
    assert HISTOGRAM_BOUNDS_SECONDS[0] == 0.000032
    assert HISTOGRAM_BOUNDS_SECONDS[18] == 8.388608
    assert math.isinf(HISTOGRAM_BOUNDS_SECONDS[19])


def test_node_metrics_count_proposals_and_syncs(single_node):
    node, _ = single_node
    before = node.metrics()
    assert isinstance(before, embraft.Metrics)
    for i in range(5):
        node.propose(b"m%d" % i).result(timeout=10)
    after = node.metrics()
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.proposals_committed = 0  # type: ignore[misc]
    assert after.proposals_committed == before.proposals_committed + 5
    assert set(after.proposals_dropped) == set(DROP_REASONS)
    assert set(after.messages_sent) == set(MESSAGE_KINDS) == set(after.messages_received)
    assert after.leader_changes >= 1 and after.elections_started >= 1
    assert after.wal_bytes_written > before.wal_bytes_written
    for histogram in (after.wal_sync_duration, after.proposal_commit_latency):
        assert isinstance(histogram, embraft.Histogram)
        assert histogram.bounds_seconds == HISTOGRAM_BOUNDS_SECONDS
        assert len(histogram.buckets) == 20 and sum(histogram.buckets) == histogram.count
        cumulative = histogram.cumulative()
        assert list(cumulative) == sorted(cumulative) and cumulative[-1] == histogram.count
        assert histogram.sum_seconds > 0
    assert after.proposal_commit_latency.count >= before.proposal_commit_latency.count + 5
    assert after.wal_sync_duration.count > before.wal_sync_duration.count


def _scrape_of(node):
    return lambda: raftd_metrics.scrape(node.status(), node.metrics(),
                                        [(("GET", 200), 2), (("PO\"ST\\\n", 404), 1)])


def test_both_renderings_are_the_same_text(single_node):
    node, _ = single_node
    node.propose(b"x").result(timeout=10)
    frozen = _scrape_of(node)()
    by_client = raftd_metrics.render(lambda: frozen, use_client=True)
    by_hand = raftd_metrics.render(lambda: frozen, use_client=False)
    assert by_client == by_hand
    # An odd method (quote, backslash, newline) is escaped, and parses back.
    assert 'method="PO\\"ST\\\\\\n"' in by_hand
    checker = check_metrics.Checker()
    scrape = check_metrics.check_scrape(checker, "single node", by_hand,
                                        check_metrics.table(RAFTD_MD))
    assert not checker.failures
    assert scrape.value("raftd_requests_total", method="PO\"ST\\\n", code="404") == 1
    assert scrape.value("embraft_is_leader") == 1


def test_without_prometheus_client_the_text_is_written_by_hand(single_node, monkeypatch):
    node, _ = single_node
    assert raftd_metrics.client_available()  # run-tests.sh installs the extra
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import fails
    assert not raftd_metrics.client_available()
    text = raftd_metrics.render(_scrape_of(node))
    monkeypatch.undo()
    families = check_metrics.parse(text).families
    assert families["embraft_server_proposals_failed_total"][0] == "counter"
    assert families["embraft_disk_wal_fsync_duration_seconds"][0] == "histogram"


def test_the_table_matches_raftd_md():
    rows = check_metrics.table(RAFTD_MD)
    assert [(f.name, f.type, f.labels, f.help) for f in raftd_metrics.FAMILIES] == \
        [(r.name, r.type, r.labels, r.help) for r in rows.values()]
    assert check_metrics.drop_reasons(rows) == list(DROP_REASONS)


def _mutated(text, old, new):
    assert old in text
    return text.replace(old, new, 1)


def test_the_checker_finds_what_breaks_the_contract(single_node):
    """check_metrics, which the C raftd's tests use too, fails a scrape that
    lacks a series, mistypes a family, changes a help text or has buckets
    that are not cumulative."""
    node, _ = single_node
    node.propose(b"x").result(timeout=10)
    good = raftd_metrics.render(_scrape_of(node), use_client=False)
    rows = check_metrics.table(RAFTD_MD)
    bucket = 'embraft_disk_wal_fsync_duration_seconds_bucket{le="+Inf"} '
    broken = [
        _mutated(good, 'embraft_server_proposals_failed_total{reason="superseded"} 0.0\n', ""),
        _mutated(good, "embraft_entry_cache_bytes gauge", "embraft_entry_cache_bytes counter"),
        _mutated(good, "Times the known leader changed.", "Leader changes."),
        _mutated(good, bucket, bucket + "1000"),
        _mutated(good, 'le="8.388608"', 'le="10.0"'),
    ]
    for text in broken:
        checker = check_metrics.Checker()
        check_metrics.check_scrape(checker, "broken", text, rows)
        assert checker.failures
    checker = check_metrics.Checker()
    check_metrics.check_scrape(checker, "good", good, rows)
    assert not checker.failures
    # No growth between two equal scrapes.
    assert check_metrics.check(RAFTD_MD, good, good)


@pytest.mark.parametrize("value", [0, 1, 3, 0.000032, 0.000128, 8.388608, 0.033888, 1e6, 1234567,
                                   12345678901, 123456789012345, 2**63, 2**64 - 1, math.inf])
def test_numbers_are_written_as_prometheus_client_writes_them(value):
    from prometheus_client.utils import floatToGoString

    assert raftd_metrics.go_float(value) == floatToGoString(value)


def test_sharded_scrape_labels_groups_and_the_checker_knows(single_node):
    """A sharded raftd's text (RAFTD.md "Shards"): group labels on every
    embraft_* series but the WAL's, both renderings alike, and
    check_metrics -shards N finds a missing or misplaced group label."""
    node, _ = single_node
    node.propose(b"x").result(timeout=10)
    status, metrics = node.status(), node.metrics()
    frozen = raftd_metrics.scrape_groups([(1, status, metrics), (2, status, metrics)],
                                         [(("GET", 200), 1)])
    by_hand = raftd_metrics.render(lambda: frozen, use_client=False)
    assert raftd_metrics.render(lambda: frozen, use_client=True) == by_hand
    assert 'embraft_is_leader{group="2"} 1.0' in by_hand
    assert ('embraft_server_proposal_commit_duration_seconds_bucket{group="1",le="+Inf"}'
            in by_hand)
    assert 'embraft_disk_wal_write_batches_total ' in by_hand
    assert 'raftd_requests_total{code="200",method="GET"} 1.0' in by_hand
    rows = check_metrics.table(RAFTD_MD)

    def failures(text, shards):
        checker = check_metrics.Checker()
        check_metrics.check_scrape(checker, "sharded", text, rows, shards)
        return checker.failures

    assert not failures(by_hand, 2)
    assert failures(by_hand, 3)  # group 3 has no series
    unsharded = raftd_metrics.render(_scrape_of(node), use_client=False)
    assert failures(unsharded, 2)
    assert failures(_mutated(by_hand, 'embraft_term{group="2"}', "embraft_term"), 2)
    assert failures(_mutated(by_hand, "embraft_disk_wal_write_bytes_total ",
                             'embraft_disk_wal_write_bytes_total{group="1"} '), 2)
    assert failures(_mutated(by_hand, 'embraft_entry_cache_bytes{group="2"}',
                             'embraft_entry_cache_bytes{group="9"}'), 2)
