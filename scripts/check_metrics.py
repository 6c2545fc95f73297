#!/usr/bin/env python3
"""Checks a raftd's /metrics against docs/RAFTD.md "Metrics", parsing the
text with prometheus_client's parser (the Prometheus text format):

    check_metrics.py [-v] [-shards N] RAFTD.md BEFORE AFTER

BEFORE and AFTER are two scrapes of the leader, with writes between them.
Every scrape must export every metric of the table with its type and help
text, every drop reason and the message types named there (zero or not),
and histograms with the table's buckets, cumulative, ending with +Inf
equal to _count. Between the scrapes the WAL's sync and proposal-commit
histograms must have grown, so must the committed proposals, and the
leader must have sent Append messages; no counter may go down.

With -shards N above 1 (a sharded raftd, RAFTD.md "Shards"; the scraped
node must lead the groups written to) the WAL's series (embraft_disk_wal_*)
and raftd_requests_total must have no `group` label and every other
embraft_* series must have one, with every group from 1 to N present in
every such family; the checks above then hold for each group's series
(with the WAL's), and the growth checks for their sum over the groups.

Prints the checks that failed (every check with -v) and a summary line;
exits 1 when any failed. The raftd tests of
each binding use it (the Python ones import it).
"""

from __future__ import annotations

import math
import re
import sys
from typing import Dict, List, NamedTuple, Tuple

from prometheus_client.parser import text_string_to_metric_families

# Durations' buckets: 32 µs doubling, 19 of them, then +Inf.
BOUNDS = [(32 << i) / 1e6 for i in range(19)] + [math.inf]


class Row(NamedTuple):
    name: str
    type: str
    labels: Tuple[str, ...]
    help: str


def _plain(cell: str) -> str:
    """A table cell without its Markdown code quotes."""
    return cell.strip().replace("`", "")


def table(raftd_md: str) -> Dict[str, Row]:
    """The rows of the table in the "Metrics" section, by exported name."""
    rows: Dict[str, Row] = {}
    with open(raftd_md, encoding="utf-8") as file:
        section = file.read().split("### Metrics", 1)[1].split("\n## ", 1)[0]
    for line in section.splitlines():
        match = re.fullmatch(r"\| `(\w+)` \| (\w+) \|(.*)\|(.*)\|", line.strip())
        if match:
            name, kind, labels, help_text = match.groups()
            rows[name] = Row(name, kind, tuple(re.findall(r"`(\w+)`", labels)),
                             _plain(help_text))
    return rows


def drop_reasons(rows: Dict[str, Row]) -> List[str]:
    """The reasons the table names for embraft_server_proposals_failed_total."""
    row = rows["embraft_server_proposals_failed_total"]
    return re.findall(r"\b[a-z_]+\b", row.help.split("(", 1)[1].split(")", 1)[0])


class Checker:
    def __init__(self, verbose: bool = False) -> None:
        self.verbose = verbose
        self.count = 0
        self.failures: List[str] = []

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        self.count += 1
        if not ok:
            self.failures.append(f"{name} ({detail})" if detail else name)
            print(f"FAIL metrics: {self.failures[-1]}")
        elif self.verbose:
            print(f"ok   metrics: {name}")
        return ok


# A scrape: sample name -> {frozenset of label pairs: value}, and the families.
Samples = Dict[str, Dict[frozenset, float]]


class Scrape(NamedTuple):
    families: Dict[str, Tuple[str, str]]  # exported name -> (type, help)
    samples: Samples

    def value(self, name: str, **labels: str) -> float:
        return self.samples.get(name, {}).get(frozenset(labels.items()), math.nan)


def parse(text: str) -> Scrape:
    families: Dict[str, Tuple[str, str]] = {}
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        # The parser names a counter's family without its _total.
        exported = family.name + "_total" if family.type == "counter" else family.name
        families[exported] = (family.type, family.documentation)
        for sample in family.samples:
            samples.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return Scrape(families, samples)


GROUP = "group"
WAL_PREFIX = "embraft_disk_wal_"


def _family_of(sample: str, families: Dict[str, Tuple[str, str]]) -> str:
    """The exported family name a sample belongs to."""
    for suffix in ("_bucket", "_count", "_sum"):
        if sample.endswith(suffix) and sample[:-len(suffix)] in families:
            return sample[:-len(suffix)]
    return sample


def _grouped(name: str) -> bool:
    """Whether a sharded raftd labels the family's series by group."""
    return name.startswith("embraft_") and not name.startswith(WAL_PREFIX)


def group_scrape(scrape: Scrape, group: str) -> Scrape:
    """The series of one group, without their group label, with the
    node-wide ones (the WAL's, raftd's)."""
    samples: Samples = {}
    for name, series in scrape.samples.items():
        grouped = _grouped(_family_of(name, scrape.families))
        for labels, value in series.items():
            pairs = dict(labels)
            if grouped and pairs.pop(GROUP, None) != group:
                continue
            samples.setdefault(name, {})[frozenset(pairs.items())] = value
    return Scrape(scrape.families, samples)


def merge_groups(scrape: Scrape) -> Scrape:
    """Every series summed over the groups (the group label removed)."""
    samples: Samples = {}
    for name, series in scrape.samples.items():
        for labels, value in series.items():
            pairs = frozenset((k, v) for k, v in labels if k != GROUP)
            merged = samples.setdefault(name, {})
            merged[pairs] = merged.get(pairs, 0.0) + value
    return Scrape(scrape.families, samples)


def check_scrape(checker: Checker, which: str, text: str, rows: Dict[str, Row],
                 shards: int = 1) -> Scrape:
    try:
        scrape = parse(text)
    except ValueError as error:
        checker.check(f"{which}: the text parses", False, str(error))
        return Scrape({}, {})
    for row in rows.values():
        exported = scrape.families.get(row.name)
        checker.check(f"{which}: {row.name} is a {row.type} with the table's help",
                      exported == (row.type, row.help), f"found {exported}")
    unknown = sorted(set(scrape.families) - set(rows))
    checker.check(f"{which}: no metric outside the table", not unknown, ", ".join(unknown))
    if shards <= 1:
        check_series(checker, which, scrape, rows)
        return scrape
    groups = [str(g) for g in range(1, shards + 1)]
    misplaced = sorted(
        {name for name, series in scrape.samples.items() for labels in series
         if (GROUP in dict(labels)) != _grouped(_family_of(name, scrape.families))
         or dict(labels).get(GROUP, groups[0]) not in groups})
    checker.check(f"{which}: a group label from 1 to {shards} on exactly the embraft_* "
                  "series but the WAL's", not misplaced, ", ".join(misplaced))
    for group in groups:
        one = group_scrape(scrape, group)
        missing = sorted(name for name in rows if _grouped(name) and not any(
            _family_of(sample, scrape.families) == name for sample in one.samples))
        checker.check(f"{which}: group {group} has every embraft_* family", not missing,
                      ", ".join(missing))
        check_series(checker, f"{which} group {group}", one, rows)
    return scrape


def check_series(checker: Checker, which: str, scrape: Scrape, rows: Dict[str, Row]) -> None:
    """The series of one node or group: every drop reason and message
    type, and histograms with the table's buckets."""
    # Every series of a labelled family, zero or not, from the first scrape.
    failed = scrape.samples.get("embraft_server_proposals_failed_total", {})
    reasons = sorted(dict(labels)["reason"] for labels in failed)
    checker.check(f"{which}: a proposals_failed series per reason",
                  reasons == sorted(drop_reasons(rows)), f"found {reasons}")
    types = {}
    for direction in ("sent", "received"):
        series = scrape.samples.get(f"embraft_network_messages_{direction}_total", {})
        types[direction] = sorted(dict(labels)["type"] for labels in series)
    checker.check(f"{which}: message series for PreVote, Append, Heartbeat, ... both ways",
                  {"PreVote", "Append", "Heartbeat"} <= set(types["sent"])
                  and types["sent"] == types["received"], str(types))
    for row in rows.values():
        if row.type == "histogram":
            check_histogram(checker, which, scrape, row.name)


def check_histogram(checker: Checker, which: str, scrape: Scrape, name: str) -> None:
    buckets = sorted((float(dict(labels)["le"]), value)
                     for labels, value in scrape.samples.get(f"{name}_bucket", {}).items())
    bounds = [bound for bound, _ in buckets]
    counts = [count for _, count in buckets]
    checker.check(f"{which}: {name} has the buckets 32 µs × 2^i and +Inf",
                  bounds == BOUNDS, str(bounds))
    checker.check(f"{which}: {name} buckets are cumulative",
                  all(a <= b for a, b in zip(counts, counts[1:])), str(counts))
    count = scrape.value(f"{name}_count")
    checker.check(f"{which}: {name} +Inf bucket equals _count",
                  bool(counts) and counts[-1] == count, f"{counts[-1:]} vs {count}")
    checker.check(f"{which}: {name}_sum is a number of seconds",
                  scrape.value(f"{name}_sum") >= 0)


def check_growth(checker: Checker, before: Scrape, after: Scrape) -> None:
    went_down = [f"{name}{dict(labels)}"
                 for name, series in before.samples.items() if name.endswith("_total")
                 for labels, value in series.items()
                 if after.samples.get(name, {}).get(labels, math.inf) < value]
    checker.check("no counter went down", not went_down, ", ".join(went_down))
    # Sharded: what grew is the sum over the groups.
    before, after = merge_groups(before), merge_groups(after)
    for name in ("embraft_disk_wal_fsync_duration_seconds_count",
                 "embraft_server_proposal_commit_duration_seconds_count",
                 "embraft_server_proposals_committed_total",
                 "embraft_disk_wal_write_bytes_total"):
        checker.check(f"{name} grew with the writes", after.value(name) > before.value(name),
                      f"{before.value(name)} -> {after.value(name)}")
    sent = after.value("embraft_network_messages_sent_total", type="Append")
    checker.check("the leader sent Append messages", sent > 0, str(sent))


def check(raftd_md: str, before_text: str, after_text: str, verbose: bool = False,
          shards: int = 1) -> List[str]:
    """Every check of the module docstring; the names of those that failed."""
    rows = table(raftd_md)
    checker = Checker(verbose)
    if checker.check("the table of RAFTD.md lists the metrics", len(rows) >= 20, str(len(rows))):
        before = check_scrape(checker, "before", before_text, rows, shards)
        after = check_scrape(checker, "after", after_text, rows, shards)
        check_growth(checker, before, after)
    print(f"metrics: {checker.count - len(checker.failures)} checks passed, "
          f"{len(checker.failures)} failed")
    return checker.failures


def main(argv: List[str]) -> int:
    args = argv[1:]
    verbose = args[:1] == ["-v"]
    if verbose:
        args = args[1:]
    shards = 1
    if args[:1] == ["-shards"]:
        try:
            shards = int(args[1], 10)
        except (IndexError, ValueError):
            shards = 0
        args = args[2:]
    if len(args) != 3 or shards < 1:
        print(__doc__, file=sys.stderr)
        return 2
    texts = []
    for path in args[1:]:
        with open(path, encoding="utf-8") as file:
            texts.append(file.read())
    return 1 if check(args[0], texts[0], texts[1], verbose, shards) else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
