"""One raftd node: its identity file, the embraft node over the store and
the stream transport, joining and leaving, linearizable reads and writes
with their deadlines, status and metrics. Failures a client should see
are HttpError, which the HTTP layer answers with."""

from __future__ import annotations

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
from ..node import Config, Node
from ..transport import StreamTransport, parse_address
from .codec import MalformedSnapshotError, encode_peer, encode_remove_peer
from .metrics import Scrape, scrape
from .metrics import render as render_metrics
from .store import KeyValueStore

logger = logging.getLogger("raftd")

WRITE_TIMEOUT = 10.0
READ_TIMEOUT = 5.0
FORWARD_TIMEOUT = WRITE_TIMEOUT + 5.0
TICK_INTERVAL = 0.1
SNAPSHOT_EVERY_DEFAULT = 10000


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
    """One raftd node: identity, embraft node, store, transport, metrics."""

    def __init__(self, host: str, port: int, data_dir: str,
                 on_fatal: Optional[Callable[[], None]] = None):
        self.advertised = f"{host}:{port}"
        self.data_dir = data_dir
        self.store = KeyValueStore(self._restored)
        # Called (on the node's thread) when the node cannot go on: the
        # server should stop and the process exit non-zero.
        self.on_fatal = on_fatal
        self.failed = False
        self.node: Optional[Node] = None
        self.transport: Optional[StreamTransport] = None
        self.node_id = 0
        self.cluster_id = 0
        # Addresses from the join answer: a joining node needs its leader's
        # before it has applied the log that records them.
        self.bootstrap_peers: Dict[int, str] = {}
        self.request_counts: Dict[Tuple[str, int], int] = {}
        self.metrics_lock = threading.Lock()

    # ----- start-up

    def identity_path(self) -> str:
        return os.path.join(self.data_dir, "node.json")

    def start(self, join: Optional[str]) -> None:
        os.makedirs(self.data_dir, exist_ok=True)
        if os.path.exists(self.identity_path()):
            with open(self.identity_path()) as file:
                identity = json.load(file)
            self.node_id, self.cluster_id = int(identity["id"]), int(identity["cluster_id"])
            logger.info("restarting node %d of cluster %d", self.node_id, self.cluster_id)
            self._start_node(peers=[])
        elif join:
            self.node_id = _random_id()
            description = self._join(join)
            self.cluster_id = int(description["cluster_id"])
            self.bootstrap_peers = {int(i): a for i, a in description["peers"].items()}
            self._write_identity()
            logger.info("joined cluster %d as node %d", self.cluster_id, self.node_id)
            self._start_node(peers=[])
        else:
            self.node_id, self.cluster_id = _random_id(), _random_id()
            self._write_identity()
            logger.info("founding cluster %d as node %d", self.cluster_id, self.node_id)
            self._start_node(peers=[self.node_id])
            threading.Thread(target=self._record_own_address, daemon=True).start()

    def _restored(self, name: str, error: Optional[MalformedSnapshotError]) -> None:
        if error is None:
            # The address book is now exactly the snapshot's.
            self.bootstrap_peers = {}
            logger.info("restored the key/value state from snapshot %s", name)
            return
        logger.error("refusing snapshot %s: %s; stopping (the node applies nothing on top "
                     "of a state it cannot restore)", name, error)
        self.failed = True
        if self.on_fatal is not None:
            self.on_fatal()

    def _write_identity(self) -> None:
        temporary = self.identity_path() + ".tmp"
        with open(temporary, "w") as file:
            json.dump({"id": str(self.node_id), "cluster_id": str(self.cluster_id)}, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, self.identity_path())

    def _start_node(self, peers: List[int]) -> None:
        def resolve(peer: int) -> Optional[Tuple[str, int]]:
            address = self.store.peer_address(peer) or self.bootstrap_peers.get(peer)
            return parse_address(address) if address else None

        self.transport = StreamTransport(self.node_id, self.cluster_id, resolve)
        config = Config(id=self.node_id, peers=peers,
                        data_dir=os.path.join(self.data_dir, "wal"),
                        tick_interval=TICK_INTERVAL,
                        snapshot_entries=_env_int("RAFTD_SNAPSHOT_EVERY", SNAPSHOT_EVERY_DEFAULT),
                        compact_keep_entries=_env_int("RAFTD_COMPACT_KEEP", None),
                        quiesce_ticks=_env_int("RAFTD_QUIESCE_TICKS", None))
        self.node = Node(config, self.store, self.transport)
        self.node.on_state_change(
            lambda role, leader, term: logger.info("%s in term %d, leader %d", role, term,
                                                   leader))

    def _join(self, join: str) -> Dict:
        body = json.dumps({"id": str(self.node_id), "addr": self.advertised}).encode()
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, answer = http_request(join, "POST", "/join", body, {},
                                                  FORWARD_TIMEOUT)
                if status == 200:
                    return json.loads(answer)
                reason = f"{status} {answer.decode(errors='replace').strip()}"
            except OSError as exc:
                reason = str(exc)
            if time.monotonic() > deadline:
                raise SystemExit(f"raftd: cannot join through {join}: {reason}")
            logger.info("join through %s failed (%s); retrying", join, reason)
            time.sleep(1)

    def _record_own_address(self) -> None:
        """A founding node records its address once it leads its cluster."""
        assert self.node is not None
        while not self.node.closed:
            try:
                self.node.wait_for_leader(5, leader=self.node_id)
                self.node.propose(encode_peer(self.node_id, self.advertised)).result(WRITE_TIMEOUT)
                return
            except (EmbraftError, TimeoutError, FutureTimeout):
                time.sleep(0.1)

    def close(self) -> None:
        if self.node is not None:
            self.node.close()

    # ----- requests

    def leader_address(self) -> str:
        assert self.node is not None
        leader = self.node.leader
        address = self.store.peer_address(leader) if leader else None
        if not address:
            raise HttpError(503, "no leader known\n", {"Retry-After": "1"})
        return address

    def propose_and_wait(self, command: bytes) -> int:
        assert self.node is not None
        deadline = time.monotonic() + WRITE_TIMEOUT
        while True:
            try:
                future = self.node.propose(command)
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

    def wait_read_point(self) -> None:
        assert self.node is not None
        deadline = time.monotonic() + READ_TIMEOUT
        while True:
            try:
                self.node.read_index().result(max(0.0, deadline - time.monotonic()))
                return
            except (ReadIndexError, BusyError):
                if time.monotonic() > deadline:
                    break
                time.sleep(0.05)
            except FutureTimeout:
                break
        raise HttpError(503, "no read index within 5 s\n", {"Retry-After": "1"})

    def join_member(self, node_id: int, address: str) -> Dict:
        assert self.node is not None
        self.propose_and_wait(encode_peer(node_id, address))
        if node_id not in self.node.status().voters:
            deadline = time.monotonic() + WRITE_TIMEOUT
            self._wait(self.node.add_voter(node_id), deadline)
        return self.cluster_description()

    def leave_member(self, node_id: int) -> None:
        assert self.node is not None
        status = self.node.status()
        removing_itself = node_id == self.node_id
        if removing_itself:
            # A leader that removes itself steps down once the change
            # commits and could no longer propose the address's removal.
            self.propose_and_wait(encode_remove_peer(node_id))
        if node_id in status.voters or node_id in status.learners:
            self._wait(self.node.remove_node(node_id), time.monotonic() + WRITE_TIMEOUT)
        if not removing_itself:
            self.propose_and_wait(encode_remove_peer(node_id))

    def cluster_description(self) -> Dict:
        assert self.node is not None
        return {"cluster_id": str(self.cluster_id), "leader": str(self.node.leader),
                "peers": self.store.peer_map()}

    def status_json(self) -> Dict:
        assert self.node is not None
        status = self.node.status()
        return {"id": str(self.node_id), "cluster_id": str(self.cluster_id),
                "role": status.role, "term": status.term, "leader": str(status.leader),
                "commit": status.commit, "applied": status.applied,
                "last_index": status.last_index,
                "voters": [str(v) for v in status.voters],
                "learners": [str(v) for v in status.learners],
                "peers": self.store.peer_map()}

    def metrics_scrape(self) -> Scrape:
        """Every metric of RAFTD.md's table, read from the node now."""
        assert self.node is not None
        status = self.node.status()
        node_metrics = self.node.metrics()
        with self.metrics_lock:
            requests = sorted(self.request_counts.items())
        return scrape(status, node_metrics, requests)

    def metrics_text(self, use_client: Optional[bool] = None) -> str:
        """The /metrics text, through prometheus_client when it is
        installed, else written by hand (`use_client` forces either)."""
        return render_metrics(self.metrics_scrape, use_client)

    def count_request(self, method: str, code: int) -> None:
        with self.metrics_lock:
            key = (method, code)
            self.request_counts[key] = self.request_counts.get(key, 0) + 1



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
