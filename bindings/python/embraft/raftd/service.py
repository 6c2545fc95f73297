"""One raftd node: its identity file, the embraft node over the store and
the stream transport, joining and leaving, linearizable reads and writes
with their deadlines, status and metrics. Failures a client should see
are HttpError, which the HTTP layer answers with."""

from __future__ import annotations

import functools
import http.client
import json
import logging
import os
import random
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Callable, Dict, List, Optional, Tuple

from ..errors import (
    BusyError,
    EmbraftError,
    MembershipChangeError,
    NotLeaderError,
    ReadIndexError,
)
from ..node import Config, Node, Replicated
from ..runtime import Runtime
from ..status import Status
from ..transport import GroupStreamTransport, StreamTransport, parse_address
from .codec import MAX_SHARDS, MalformedSnapshotError, encode_peer, encode_remove_peer, key_group
from .metrics import Scrape, scrape, scrape_groups
from .metrics import render as render_metrics
from .store import KeyValueStore

logger = logging.getLogger("raftd")

WRITE_TIMEOUT = 10.0
READ_TIMEOUT = 5.0
FORWARD_TIMEOUT = WRITE_TIMEOUT + 5.0
TICK_INTERVAL = 0.1
SNAPSHOT_EVERY_DEFAULT = 10000
# How long a joining node keeps asking to join one group (RAFTD.md "Shards").
JOIN_PATIENCE = 60.0
# Answers to a /join that may change on their own: no leader yet, not
# committed in time, another membership change of the group in progress.
JOIN_RETRY_STATUSES = (409, 503, 504)
RUNTIME_WORKERS = 2
FORWARDED_HEADER = "X-Raftd-Forwarded"


class HttpError(Exception):
    def __init__(self, code: int, text: str, headers: Optional[Dict[str, str]] = None):
        super().__init__(text)
        self.code = code
        self.text = text
        self.headers = headers or {}


def _env_int(name: str, default: Optional[int]) -> Optional[int]:
    """A positive integer tuning knob from the environment (RAFTD.md
    "Snapshots"); anything else means the default."""
    try:
        value = int(os.environ.get(name, ""), 10)
    except ValueError:
        return default
    return value if value > 0 else default


def _random_id() -> int:
    return random.SystemRandom().randrange(1, 1 << 63)


class Raftd:
    """One raftd node: identity, its Raft groups (one embraft node, or with
    `-shards` above 1 one runtime of N groups), their stores, the
    transport, metrics."""

    def __init__(self, host: str, port: int, data_dir: str,
                 on_fatal: Optional[Callable[[], None]] = None, shards: int = 1):
        self.advertised = f"{host}:{port}"
        self.data_dir = data_dir
        # Asked for by -shards; a restart or a join replaces it with the
        # cluster's number.
        self.shards = shards
        # One store per group; group 1's holds the address book.
        self.stores: Dict[int, KeyValueStore] = {}
        # Called (on a driver thread) when the node cannot go on: the
        # server should stop and the process exit non-zero.
        self.on_fatal = on_fatal
        self.failed = False
        self.node: Optional[Node] = None
        self.runtime: Optional[Runtime] = None
        self.groups: Dict[int, Replicated] = {}
        self.transport: Optional[StreamTransport] = None
        self.node_id = 0
        self.cluster_id = 0
        # Addresses from the join answer: a joining node needs its leader's
        # before it has applied the log that records them.
        self.bootstrap_peers: Dict[int, str] = {}
        self.join_address: Optional[str] = None
        self.request_counts: Dict[Tuple[str, int], int] = {}
        self.metrics_lock = threading.Lock()

    @property
    def sharded(self) -> bool:
        return self.shards > 1

    @property
    def store(self) -> KeyValueStore:
        """Group 1's store: the address book, and every key of one group."""
        return self.stores[1]

    def group(self, group: int) -> Replicated:
        return self.groups[group]

    def key_group(self, key: bytes) -> int:
        return key_group(key, self.shards)

    # ----- start-up

    def identity_path(self) -> str:
        return os.path.join(self.data_dir, "node.json")

    def start(self, join: Optional[str]) -> None:
        """Starts the node; a joining sharded node's joins of groups 2 ... N
        (and a restarted one's unfinished ones) go on on a thread, since
        the leaders need this node's listener to add it."""
        os.makedirs(self.data_dir, exist_ok=True)
        if os.path.exists(self.identity_path()):
            with open(self.identity_path()) as file:
                identity = json.load(file)
            self.node_id, self.cluster_id = int(identity["id"]), int(identity["cluster_id"])
            self.shards = _shard_count(identity.get("shards", 1))
            # A sharded node that joined keeps its join answer's address
            # book until its log's replaces it: it may have crashed before
            # it received group 1's log, and it needs some address to
            # answer group 1's leader and to finish joining the others.
            self.bootstrap_peers = {int(i): str(a)
                                    for i, a in identity.get("peers", {}).items()}
            logger.info("restarting node %d of cluster %d (%d group%s)", self.node_id,
                        self.cluster_id, self.shards, "s" if self.sharded else "")
            self._start_groups(peers=[])
            if self.sharded:
                unjoined = [g for g in range(2, self.shards + 1) if not self._is_member(g)]
                if unjoined:
                    self._join_groups_later(unjoined)
        elif join:
            self.node_id = _random_id()
            self.join_address = join
            description = self._join(join)
            self.cluster_id = int(description["cluster_id"])
            self.shards = _shard_count(description.get("shards", 1))
            self.bootstrap_peers = {int(i): a for i, a in description["peers"].items()}
            self._write_identity()
            logger.info("joined cluster %d as node %d", self.cluster_id, self.node_id)
            self._start_groups(peers=[])
            if self.sharded:
                self._join_groups_later(list(range(2, self.shards + 1)))
        else:
            self.node_id, self.cluster_id = _random_id(), _random_id()
            self._write_identity()
            logger.info("founding cluster %d as node %d (%d group%s)", self.node_id,
                        self.cluster_id, self.shards, "s" if self.sharded else "")
            self._start_groups(peers=[self.node_id])
            threading.Thread(target=self._record_own_address, daemon=True).start()

    def _restored(self, group: int, name: str, error: Optional[MalformedSnapshotError]) -> None:
        if error is None:
            if group == 1:
                # The address book is now exactly the snapshot's.
                self.bootstrap_peers = {}
            logger.info("%srestored the key/value state from snapshot %s",
                        f"group {group}: " if self.sharded else "", name)
            return
        logger.error("refusing snapshot %s: %s; stopping (the node applies nothing on top "
                     "of a state it cannot restore)", name, error)
        self._fail()

    def _fail(self) -> None:
        self.failed = True
        if self.on_fatal is not None:
            self.on_fatal()

    def _write_identity(self) -> None:
        identity: Dict[str, object] = {"id": str(self.node_id),
                                       "cluster_id": str(self.cluster_id)}
        if self.sharded:
            identity["shards"] = self.shards
            if self.bootstrap_peers:
                identity["peers"] = {str(i): a for i, a in self.bootstrap_peers.items()}
        temporary = self.identity_path() + ".tmp"
        with open(temporary, "w") as file:
            json.dump(identity, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.identity_path())

    def resolve(self, peer: int) -> Optional[Tuple[str, int]]:
        """A peer's address, for the transport: group 1's address book, or
        the join answer's until the log has recorded it."""
        address = self.store.peer_address(peer) or self.bootstrap_peers.get(peer)
        return parse_address(address) if address else None

    def _start_groups(self, peers: List[int]) -> None:
        config = Config(id=self.node_id, peers=peers,
                        data_dir=os.path.join(self.data_dir, "wal"),
                        tick_interval=TICK_INTERVAL,
                        snapshot_entries=_env_int("RAFTD_SNAPSHOT_EVERY", SNAPSHOT_EVERY_DEFAULT),
                        compact_keep_entries=_env_int("RAFTD_COMPACT_KEEP", None),
                        quiesce_ticks=_env_int("RAFTD_QUIESCE_TICKS", None))
        for group in range(1, self.shards + 1):
            self.stores[group] = KeyValueStore(functools.partial(self._restored, group))
        if not self.sharded:
            self.transport = StreamTransport(self.node_id, self.cluster_id, self.resolve)
            self.node = Node(config, self.store, self.transport)
            self.groups = {1: self.node}
        else:
            self.transport = GroupStreamTransport(self.node_id, self.cluster_id, self.resolve)
            self.runtime = Runtime(config, transport=self.transport, workers=RUNTIME_WORKERS)
            for group in range(1, self.shards + 1):
                self.groups[group] = self.runtime.start_group(group, peers, self.stores[group])
        for group, replica in self.groups.items():
            replica.on_state_change(functools.partial(
                _log_state_change, f"group {group}: " if self.sharded else ""))

    def _is_member(self, group: int) -> bool:
        status = self.group(group).status()
        return bool(status.voters or status.learners or status.voters_outgoing)

    def _join_request(self, group: int) -> bytes:
        request: Dict[str, object] = {"id": str(self.node_id), "addr": self.advertised}
        if group != 1:
            request["group"] = group
        return json.dumps(request).encode()

    def _join(self, join: str) -> Dict:
        """Joins group 1 through `join`: the cluster description."""
        answer = self._join_group(1, lambda: [join])
        if answer is None:
            raise SystemExit(f"raftd: cannot join through {join}")
        return json.loads(answer)

    def _join_group(self, group: int, targets: Callable[[], List[str]]) -> Optional[bytes]:
        """Sends this node's /join for `group` to the addresses `targets`
        names, in turn, until one answers 200 (RAFTD.md "Joining"): the
        answer, or None after JOIN_PATIENCE seconds."""
        body = self._join_request(group)
        deadline = time.monotonic() + JOIN_PATIENCE
        attempt = 0
        reason = "no node to ask"
        while not self.failed:
            addresses = targets()
            if addresses:
                address = addresses[attempt % len(addresses)]
                attempt += 1
                try:
                    status, _, answer = http_request(address, "POST", "/join", body, {},
                                                      FORWARD_TIMEOUT)
                    if status == 200:
                        return answer
                    reason = f"{address}: {status} {answer.decode(errors='replace').strip()}"
                    # Group 1's join keeps the one-group server's patience
                    # with every answer.
                    if group != 1 and status not in JOIN_RETRY_STATUSES:
                        break
                except OSError as exc:
                    reason = f"{address}: {exc}"
            if time.monotonic() > deadline:
                break
            logger.info("joining group %d failed (%s); retrying", group, reason)
            time.sleep(1)
        logger.error("cannot join group %d: %s", group, reason)
        return None

    def _join_groups_later(self, groups: List[int]) -> None:
        def join_all() -> None:
            for group in groups:
                if self._join_group(group, self._join_targets) is None:
                    self._fail()
                    return
                logger.info("joined group %d", group)

        threading.Thread(target=join_all, daemon=True, name="raftd-join").start()

    def _join_targets(self) -> List[str]:
        """Where to send a group's /join: the -join address, else the other
        nodes of the address book (a restart has no -join)."""
        if self.join_address:
            return [self.join_address]
        own = str(self.node_id)
        peers = {**{str(i): a for i, a in self.bootstrap_peers.items()}, **self.store.peer_map()}
        return [address for node, address in sorted(peers.items()) if node != own]

    def _record_own_address(self) -> None:
        """A founding node records its address once it leads its cluster."""
        first = self.group(1)
        while not self.failed:
            try:
                first.wait_for_leader(5, leader=self.node_id)
                first.propose(encode_peer(self.node_id, self.advertised)).result(WRITE_TIMEOUT)
                return
            except (EmbraftError, TimeoutError, FutureTimeout):
                if (self.node or self.runtime) is None or _closed(self):
                    return
                time.sleep(0.1)

    def close(self) -> None:
        if self.node is not None:
            self.node.close()
        if self.runtime is not None:
            self.runtime.close()

    # ----- requests

    def leader_address(self, group: int = 1) -> str:
        leader = self.group(group).leader
        address = self.store.peer_address(leader) if leader else None
        if not address:
            raise HttpError(503, "no leader known\n", {"Retry-After": "1"})
        return address

    def forward_to_leader(self, group: int, method: str, path: str, body: Optional[bytes]
                          ) -> Tuple[int, Dict[str, str], bytes]:
        """Relays a request to `group`'s leader, marked as forwarded so it
        is never forwarded again; 503 when no leader is known or reachable."""
        address = self.leader_address(group)
        headers = {FORWARDED_HEADER: "1"}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            return http_request(address, method, path, body, headers, FORWARD_TIMEOUT)
        except OSError as exc:
            raise HttpError(503, f"leader unreachable: {exc}\n", {"Retry-After": "1"}) from None

    def propose_and_wait(self, command: bytes, group: int = 1) -> int:
        replica = self.group(group)
        deadline = time.monotonic() + WRITE_TIMEOUT
        while True:
            try:
                future = replica.propose(command)
                break
            except BusyError:
                if time.monotonic() > deadline:
                    raise HttpError(503, "node busy\n", {"Retry-After": "1"}) from None
                time.sleep(0.001)
        return self._wait(future, deadline)

    def _wait(self, future: Future, deadline: float) -> int:
        try:
            return future.result(max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            raise HttpError(504, "not committed in time; outcome unknown\n") from None
        except NotLeaderError:
            raise HttpError(503, "leadership lost\n", {"Retry-After": "1"}) from None
        except MembershipChangeError as exc:
            raise HttpError(409, f"{exc}\n") from None
        except EmbraftError as exc:
            raise HttpError(503, f"{exc}\n", {"Retry-After": "1"}) from None

    def wait_read_point(self, group: int = 1) -> None:
        replica = self.group(group)
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            try:
                replica.read_index().result(max(0.0, deadline - time.monotonic()))
                return
            except (ReadIndexError, BusyError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except FutureTimeout:
                break
        raise HttpError(503, "no read index within 5 s\n", {"Retry-After": "1"})

    def join_member(self, node_id: int, address: str, group: int = 1) -> Dict:
        """On `group`'s leader: adds the node as a voter of it (group 1
        records its address first) and answers the cluster description."""
        replica = self.group(group)
        if group == 1:
            self.propose_and_wait(encode_peer(node_id, address))
        if node_id not in replica.status().voters:
            self._wait(replica.add_voter(node_id), time.monotonic() + WRITE_TIMEOUT)
        return self.cluster_description()

    def leave_group(self, node_id: int, group: int) -> None:
        """On `group`'s leader: removes the node from that group only."""
        replica = self.group(group)
        status = replica.status()
        if node_id in status.voters or node_id in status.learners:
            self._wait(replica.remove_node(node_id), time.monotonic() + WRITE_TIMEOUT)

    def leave_member(self, node_id: int) -> None:
        """On group 1's leader: removes the node from groups N ... 2 (each
        on its leader), then from group 1, and forgets its address."""
        for group in range(self.shards, 1, -1):
            self._leave_group_anywhere(node_id, group)
        removing_itself = node_id == self.node_id
        if removing_itself:
            # A leader that removes itself steps down once the change
            # commits and could no longer propose the address's removal.
            self.propose_and_wait(encode_remove_peer(node_id))
        self.leave_group(node_id, 1)
        if not removing_itself:
            self.propose_and_wait(encode_remove_peer(node_id))

    def _leave_group_anywhere(self, node_id: int, group: int) -> None:
        if self.group(group).is_leader:
            self.leave_group(node_id, group)
            return
        body = json.dumps({"id": str(node_id), "group": group}).encode()
        status, _, answer = self.forward_to_leader(group, "POST", "/leave", body)
        if status != 200:
            raise HttpError(status, f"leaving group {group}: "
                            f"{answer.decode(errors='replace').strip()}\n",
                            {"Retry-After": "1"} if status == 503 else {})

    def cluster_description(self) -> Dict:
        description: Dict[str, object] = {
            "cluster_id": str(self.cluster_id), "leader": str(self.group(1).leader),
            "peers": self.store.peer_map()}
        if self.sharded:
            description["shards"] = self.shards
        return description

    def status_json(self) -> Dict:
        status = self.group(1).status()
        answer: Dict[str, object] = {
            "id": str(self.node_id), "cluster_id": str(self.cluster_id),
            "role": status.role, "term": status.term, "leader": str(status.leader),
            "commit": status.commit, "applied": status.applied,
            "last_index": status.last_index,
            "voters": [str(v) for v in status.voters],
            "learners": [str(v) for v in status.learners],
            "peers": self.store.peer_map()}
        if self.sharded:
            answer["shards"] = self.shards
            answer["groups"] = [_group_json(group, self.group(group).status())
                                for group in range(1, self.shards + 1)]
        return answer

    def metrics_scrape(self) -> Scrape:
        """Every metric of RAFTD.md's table, read from the groups now."""
        measured = [(group, self.group(group).status(), self.group(group).metrics())
                    for group in range(1, self.shards + 1)]
        with self.metrics_lock:
            requests = sorted(self.request_counts.items())
        if not self.sharded:
            return scrape(measured[0][1], measured[0][2], requests)
        return scrape_groups(measured, requests)

    def metrics_text(self, use_client: Optional[bool] = None) -> str:
        """The /metrics text, through prometheus_client when it is
        installed, else written by hand (`use_client` forces either)."""
        return render_metrics(self.metrics_scrape, use_client)

    def count_request(self, method: str, code: int) -> None:
        with self.metrics_lock:
            key = (method, code)
            self.request_counts[key] = self.request_counts.get(key, 0) + 1


def _log_state_change(prefix: str, role: str, leader: int, term: int) -> None:
    logger.info("%s%s in term %d, leader %d", prefix, role, term, leader)


def _closed(raftd: Raftd) -> bool:
    if raftd.node is not None:
        return raftd.node.closed
    return raftd.runtime is None or raftd.runtime.closed


def _shard_count(value: object) -> int:
    """A number of shards from node.json or a join answer."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_SHARDS:
        raise SystemExit(f"raftd: bad number of shards {value!r} (1 to {MAX_SHARDS})")
    return value


def _group_json(group: int, status: Status) -> Dict[str, object]:
    return {"group": group, "role": status.role, "term": status.term,
            "leader": str(status.leader), "commit": status.commit,
            "applied": status.applied, "last_index": status.last_index,
            "voters": [str(v) for v in status.voters],
            "learners": [str(v) for v in status.learners]}


def http_request(address: str, method: str, path: str, body: Optional[bytes],
                  headers: Dict[str, str], timeout: float) -> Tuple[int, Dict[str, str], bytes]:
    host, port = parse_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()
