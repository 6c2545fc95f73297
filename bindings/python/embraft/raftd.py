"""raftd: the replicated key/value server of docs/RAFTD.md.

    python -m embraft.raftd [-h HOST] [-p PORT] [-join HOST:PORT] [-v] [-debug] [-trace] DATA-DIR

HTTP and the Raft stream transport share one port: each accepted connection
is peeked at, and one starting with EMRF goes to the transport. Snapshots
(every RAFTD_SNAPSHOT_EVERY applied entries, RAFTD_COMPACT_KEEP entries kept
behind them) are in the format of RAFTD.md "Snapshots", shared with the C
and the Go raftd.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
import urllib.parse
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import BinaryIO, Callable, Dict, List, Optional, Tuple

from .errors import (
    BusyError,
    EmbraftError,
    MembershipChangeError,
    NotLeaderError,
    ReadIndexError,
)
from .node import TRACE, Config, Node
from .transport import MAGIC, StreamTransport, parse_address

logger = logging.getLogger("raftd")

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20
MAX_ADDRESS_BYTES = 255
MAX_DRAINED_BODY = 16 << 20
WRITE_TIMEOUT = 10.0
READ_TIMEOUT = 5.0
FORWARD_TIMEOUT = WRITE_TIMEOUT + 5.0
TICK_INTERVAL = 0.1
FORWARDED_HEADER = "X-Raftd-Forwarded"

COMMAND_SET = 1
COMMAND_DELETE = 2
COMMAND_PEER = 3
COMMAND_REMOVE_PEER = 4

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

SNAPSHOT_MAGIC = b"RDKV"
SNAPSHOT_VERSION = 1
SNAPSHOT_EVERY_DEFAULT = 10000


# ----- replicated commands ------------------------------------------------------

def encode_set(key: bytes, value: bytes) -> bytes:
    return b"".join((bytes([COMMAND_SET]), _U32.pack(len(key)), key, _U32.pack(len(value)),
                     value))


def encode_delete(key: bytes) -> bytes:
    return bytes([COMMAND_DELETE]) + _U32.pack(len(key)) + key


def encode_peer(node_id: int, address: str) -> bytes:
    encoded = _address_bytes(address)
    return bytes([COMMAND_PEER]) + _U64.pack(node_id) + _U32.pack(len(encoded)) + encoded


def encode_remove_peer(node_id: int) -> bytes:
    return bytes([COMMAND_REMOVE_PEER]) + _U64.pack(node_id)


# Addresses are bytes in the log and in snapshots (RAFTD.md checks no
# UTF-8); as str, bytes that are not UTF-8 survive a round trip.
def _address_bytes(address: str) -> bytes:
    return address.encode("utf-8", "surrogateescape")


def _address_str(address: bytes) -> str:
    return address.decode("utf-8", "surrogateescape")


def _key_ok(key: bytes) -> bool:
    return 1 <= len(key) <= MAX_KEY_BYTES


def _peer_ok(node_id: int, address: bytes) -> bool:
    return node_id != 0 and 1 <= len(address) <= MAX_ADDRESS_BYTES and b"\0" not in address


class _Reader:
    """Reads a command's fields; any fault raises ValueError."""

    def __init__(self, data: bytes):
        self.data = data
        self.position = 0

    def take(self, size: int) -> bytes:
        end = self.position + size
        if end > len(self.data):
            raise ValueError("truncated command")
        field = self.data[self.position:end]
        self.position = end
        return field

    def u32(self) -> int:
        return _U32.unpack(self.take(4))[0]

    def u64(self) -> int:
        return _U64.unpack(self.take(8))[0]

    def sized(self) -> bytes:
        return self.take(self.u32())

    def finish(self) -> None:
        if self.position != len(self.data):
            raise ValueError("trailing bytes")


def decode_command(data: bytes) -> Tuple:
    """A command as a tuple whose first item is its COMMAND_* code; a
    ValueError for anything but one well-formed command within the limits
    of RAFTD.md "Replicated commands"."""
    reader = _Reader(data)
    code = reader.take(1)[0] if data else 0
    if code == COMMAND_SET:
        key, value = reader.sized(), reader.sized()
        if not _key_ok(key) or len(value) > MAX_VALUE_BYTES:
            raise ValueError("key or value out of bounds")
        command: Tuple = (code, key, value)
    elif code == COMMAND_DELETE:
        key = reader.sized()
        if not _key_ok(key):
            raise ValueError("key out of bounds")
        command = (code, key)
    elif code == COMMAND_PEER:
        node_id, address = reader.u64(), reader.sized()
        if not _peer_ok(node_id, address):
            raise ValueError("peer id or address out of bounds")
        command = (code, node_id, _address_str(address))
    elif code == COMMAND_REMOVE_PEER:
        command = (code, reader.u64())
    else:
        raise ValueError(f"unknown command {code}")
    reader.finish()
    return command


def _apply_command(values: Dict[bytes, bytes], peers: Dict[int, str], command: Tuple) -> None:
    code = command[0]
    if code == COMMAND_SET:
        values[command[1]] = command[2]
    elif code == COMMAND_DELETE:
        values.pop(command[1], None)
    elif code == COMMAND_PEER:
        peers[command[1]] = command[2]
    else:
        peers.pop(command[1], None)


# ----- snapshots (RAFTD.md "Snapshots") ------------------------------------------

class MalformedSnapshotError(EmbraftError, ValueError):
    """A snapshot file that breaks the format of RAFTD.md: the node cannot
    be brought to the snapshot's state, so it must stop."""


def encode_snapshot(values: Dict[bytes, bytes], peers: Dict[int, str], out: BinaryIO) -> None:
    """Writes the state in snapshot format version 1: peers by id, keys by
    their bytes, so that equal states give equal bytes on every raftd."""
    write = out.write
    write(SNAPSHOT_MAGIC + _U32.pack(SNAPSHOT_VERSION) + _U32.pack(len(peers)))
    for node_id in sorted(peers):
        address = _address_bytes(peers[node_id])
        write(_U64.pack(node_id) + _U32.pack(len(address)) + address)
    write(_U32.pack(len(values)))
    for key in sorted(values):
        value = values[key]
        write(b"".join((_U32.pack(len(key)), key, _U32.pack(len(value)), value)))


class _SnapshotReader:
    """Reads a snapshot's fields from a stream; every fault raises
    MalformedSnapshotError. No field is longer than 1 MiB (the limits are
    checked before reading), so a damaged length cannot ask for much."""

    def __init__(self, src: BinaryIO):
        self.src = src

    def take(self, size: int, what: str) -> bytes:
        data = self.src.read(size)
        while data is not None and 0 < len(data) < size:
            more = self.src.read(size - len(data))
            if not more:
                break
            data += more
        if data is None or len(data) != size:
            raise MalformedSnapshotError(f"truncated in {what}")
        return data

    def u32(self, what: str) -> int:
        return _U32.unpack(self.take(4, what))[0]

    def u64(self, what: str) -> int:
        return _U64.unpack(self.take(8, what))[0]

    def sized(self, what: str, low: int, high: int) -> bytes:
        size = self.u32(f"the length of {what}")
        if not low <= size <= high:
            raise MalformedSnapshotError(
                f"{what} of {size} bytes (allowed: {low} to {high})")
        return self.take(size, what)


def decode_snapshot(src: BinaryIO) -> Tuple[Dict[bytes, bytes], Dict[int, str]]:
    """The keys and peers of a snapshot in format version 1, read as a
    stream; MalformedSnapshotError for anything that breaks its rules."""
    reader = _SnapshotReader(src)
    magic = reader.take(4, "the magic")
    if magic != SNAPSHOT_MAGIC:
        raise MalformedSnapshotError(f"not a raftd snapshot (magic {magic.hex()}, "
                                     f"expected {SNAPSHOT_MAGIC.hex()})")
    version = reader.u32("the version")
    if version != SNAPSHOT_VERSION:
        raise MalformedSnapshotError(f"format version {version}; this raftd reads "
                                     f"version {SNAPSHOT_VERSION}")
    peers: Dict[int, str] = {}
    previous = 0
    for i in range(reader.u32("the peer count")):
        node_id = reader.u64(f"peer {i}")
        if node_id <= previous:
            raise MalformedSnapshotError(
                f"peer {i}: id {node_id} is 0, repeated or out of order")
        address = reader.sized(f"the address of peer {node_id}", 1, MAX_ADDRESS_BYTES)
        if b"\0" in address:
            raise MalformedSnapshotError(f"the address of peer {node_id} holds a NUL byte")
        peers[node_id] = _address_str(address)
        previous = node_id
    values: Dict[bytes, bytes] = {}
    previous_key = b""
    for i in range(reader.u32("the key count")):
        key = reader.sized(f"key {i}", 1, MAX_KEY_BYTES)
        if key <= previous_key:
            raise MalformedSnapshotError(f"key {i} is repeated or out of order")
        values[key] = reader.sized(f"the value of key {i}", 0, MAX_VALUE_BYTES)
        previous_key = key
    if reader.src.read(1):
        raise MalformedSnapshotError("bytes after the last value")
    return values, peers


class KeyValueStore:
    """The replicated state: keys and peer addresses. Applied on the node's
    driver thread; read from HTTP threads under the lock.

    `on_restore(name, error)` is told about each restore: error is None
    once the state was replaced, or the MalformedSnapshotError that refused
    it (the state is then unchanged)."""

    def __init__(self, on_restore: Optional[
            Callable[[str, Optional[MalformedSnapshotError]], None]] = None) -> None:
        self.lock = threading.Lock()
        self.values: Dict[bytes, bytes] = {}
        self.peers: Dict[int, str] = {}
        self.on_restore = on_restore

    def apply(self, index: int, data: bytes) -> None:
        try:
            command = decode_command(data)
        except (ValueError, UnicodeDecodeError):
            # Every node ignores the same malformed entry alike.
            logger.debug("entry %d is not a command; ignored", index)
            return
        with self.lock:
            _apply_command(self.values, self.peers, command)

    def snapshot(self, out: BinaryIO) -> None:
        """The state in the snapshot format of RAFTD.md. Runs on the driver
        thread, the only one that changes the state, so it needs no lock
        (HTTP threads only read) and writes as it goes."""
        encode_snapshot(self.values, self.peers, out)

    def restore(self, src: BinaryIO) -> None:
        """Decodes a whole snapshot into new maps, then swaps them in at
        once; a malformed one raises MalformedSnapshotError and changes
        nothing."""
        name = str(getattr(src, "name", "<stream>"))
        try:
            values, peers = decode_snapshot(src)
        except MalformedSnapshotError as exc:
            if self.on_restore is not None:
                self.on_restore(name, exc)
            raise
        with self.lock:
            self.values, self.peers = values, peers
        if self.on_restore is not None:
            self.on_restore(name, None)

    def get(self, key: bytes) -> Optional[bytes]:
        with self.lock:
            return self.values.get(key)

    def peer_address(self, node_id: int) -> Optional[str]:
        with self.lock:
            return self.peers.get(node_id)

    def peer_map(self) -> Dict[str, str]:
        with self.lock:
            return {str(i): a for i, a in self.peers.items()}


# ----- the server -----------------------------------------------------------------

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
                        compact_keep_entries=_env_int("RAFTD_COMPACT_KEEP", None))
        self.node = Node(config, self.store, self.transport)
        self.node.on_state_change(
            lambda role, leader, term: logger.info("%s in term %d, leader %d", role, term,
                                                   leader))

    def _join(self, join: str) -> Dict:
        body = json.dumps({"id": str(self.node_id), "addr": self.advertised}).encode()
        deadline = time.monotonic() + 60
        while True:
            try:
                status, _, answer = _http_request(join, "POST", "/join", body, {},
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

    def metrics_text(self) -> str:
        assert self.node is not None
        status = self.node.status()
        lines = []
        gauges = [("embraft_term", "Current Raft term.", status.term),
                  ("embraft_commit_index", "Highest committed log index.", status.commit),
                  ("embraft_applied_index", "Highest applied log index.", status.applied),
                  ("embraft_last_index", "Last index in the log.", status.last_index),
                  ("embraft_is_leader", "1 if this node leads.", int(status.role == "leader"))]
        for name, help_text, value in gauges:
            lines += [f"# HELP {name} {help_text}", f"# TYPE {name} gauge", f"{name} {value}"]
        lines += ["# HELP raftd_requests_total HTTP requests served.",
                  "# TYPE raftd_requests_total counter"]
        with self.metrics_lock:
            counts = sorted(self.request_counts.items())
        for (method, code), count in counts:
            lines.append(f'raftd_requests_total{{method="{method}",code="{code}"}} {count}')
        return "\n".join(lines) + "\n"

    def count_request(self, method: str, code: int) -> None:
        with self.metrics_lock:
            key = (method, code)
            self.request_counts[key] = self.request_counts.get(key, 0) + 1


def _http_request(address: str, method: str, path: str, body: Optional[bytes],
                  headers: Dict[str, str], timeout: float) -> Tuple[int, Dict[str, str], bytes]:
    host, port = parse_address(address)
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: "RaftdServer"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (the base's name)
        logger.debug("%s %s", self.address_string(), format % args)

    def send_response(self, code: int, message: Optional[str] = None) -> None:
        # A request line too malformed to parse leaves no method.
        self.server.raftd.count_request(self.command or "NONE", int(code))
        super().send_response(code, message)

    def _reply(self, code: int, body: bytes = b"", content_type: str = "text/plain",
               headers: Optional[Dict[str, str]] = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _body(self, limit: int) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        if length > limit:
            # Read what the client is sending before answering, or it may
            # see a reset instead of the 413; past a bound, just hang up.
            if length <= MAX_DRAINED_BODY:
                while length > 0:
                    chunk = self.rfile.read(min(length, 1 << 16))
                    if not chunk:
                        break
                    length -= len(chunk)
            else:
                self.close_connection = True
            raise HttpError(413, f"body larger than {limit} bytes\n")
        return self.rfile.read(length) if length else b""

    def _key(self, path: str) -> bytes:
        key = urllib.parse.unquote_to_bytes(path[len("/db/"):])
        if not key or len(key) > MAX_KEY_BYTES or b"/" in key:
            raise HttpError(400, "keys are non-empty path segments of at most 1024 bytes\n")
        try:
            key.decode("utf-8")
        except UnicodeDecodeError:
            raise HttpError(400, "keys are UTF-8\n") from None
        return key

    def _dispatch(self, route: Callable[[str, Dict[str, List[str]]], None]) -> None:
        parsed = urllib.parse.urlsplit(self.path)
        try:
            route(parsed.path, urllib.parse.parse_qs(parsed.query))
        except HttpError as exc:
            self._reply(exc.code, exc.text.encode(), headers=exc.headers)
        except Exception as exc:
            logger.exception("request %s %s failed", self.command, self.path)
            self._reply(500, f"internal error: {exc}\n".encode())

    def _forward_if_follower(self, body: Optional[bytes]) -> bool:
        """Relays a write to the leader; False when this node leads."""
        raftd = self.server.raftd
        assert raftd.node is not None
        if raftd.node.is_leader:
            return False
        if self.headers.get(FORWARDED_HEADER):
            raise HttpError(503, "not the leader\n", {"Retry-After": "1"})
        address = raftd.leader_address()
        headers = {FORWARDED_HEADER: "1"}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        try:
            status, answer_headers, answer = _http_request(
                address, self.command, self.path, body, headers, FORWARD_TIMEOUT)
        except OSError as exc:
            raise HttpError(503, f"leader unreachable: {exc}\n", {"Retry-After": "1"}) from None
        relayed = {k: v for k, v in answer_headers.items() if k.lower() == "retry-after"}
        self._reply(status, answer, answer_headers.get("Content-Type", "text/plain"), relayed)
        return True

    def do_GET(self) -> None:
        self._dispatch(self._get)

    def do_POST(self) -> None:
        self._dispatch(self._post)

    def do_DELETE(self) -> None:
        self._dispatch(self._delete)

    def _get(self, path: str, query: Dict[str, List[str]]) -> None:
        raftd = self.server.raftd
        if path.startswith("/db/"):
            key = self._key(path)
            if query.get("stale", [""])[0] != "true":
                raftd.wait_read_point()
            value = raftd.store.get(key)
            if value is None:
                raise HttpError(404, "key not found\n")
            self._reply(200, value, "application/octet-stream")
        elif path == "/status":
            self._reply(200, json.dumps(raftd.status_json()).encode(), "application/json")
        elif path == "/metrics":
            self._reply(200, raftd.metrics_text().encode(), "text/plain; version=0.0.4")
        else:
            raise HttpError(404, "no such endpoint\n")

    def _post(self, path: str, query: Dict[str, List[str]]) -> None:
        raftd = self.server.raftd
        if path.startswith("/db/"):
            key = self._key(path)
            value = self._body(MAX_VALUE_BYTES)
            if not self._forward_if_follower(value):
                raftd.propose_and_wait(encode_set(key, value))
                self._reply(200)
        elif path == "/join":
            body = self._body(64 * 1024)
            node_id, address = _parse_join(body)
            if not self._forward_if_follower(body):
                description = raftd.join_member(node_id, address)
                self._reply(200, json.dumps(description).encode(), "application/json")
        elif path == "/leave":
            body = self._body(64 * 1024)
            node_id = _parse_leave(body, raftd.node_id)
            forwarded = json.dumps({"id": str(node_id)}).encode()
            if not self._forward_if_follower(forwarded):
                raftd.leave_member(node_id)
                self._reply(200)
        else:
            raise HttpError(404, "no such endpoint\n")

    def _delete(self, path: str, query: Dict[str, List[str]]) -> None:
        if not path.startswith("/db/"):
            raise HttpError(404, "no such endpoint\n")
        key = self._key(path)
        self._body(0)
        if not self._forward_if_follower(None):
            self.server.raftd.propose_and_wait(encode_delete(key))
            self._reply(200)


def _parse_node_id(value: object) -> int:
    node_id = int(value) if isinstance(value, (str, int)) and not isinstance(value, bool) else 0
    if not 0 < node_id < 1 << 64:
        raise ValueError("bad node id")
    return node_id


def _parse_join(body: bytes) -> Tuple[int, str]:
    try:
        request = json.loads(body)
        node_id = _parse_node_id(request["id"])
        address = request["addr"]
        parse_address(address)
        if not isinstance(address, str):
            raise ValueError("addr")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise HttpError(400, 'expected {"id": "<id>", "addr": "host:port"}\n') from None
    return node_id, address


def _parse_leave(body: bytes, own_id: int) -> int:
    if not body.strip():
        return own_id
    try:
        return _parse_node_id(json.loads(body)["id"])
    except (ValueError, KeyError, TypeError):
        raise HttpError(400, 'expected {"id": "<id>"} or no body\n') from None


class RaftdServer(ThreadingHTTPServer):
    """HTTP and the stream transport on one port, told apart by a peek at
    each connection's first four bytes."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: Tuple[str, int], raftd: Raftd):
        self.raftd = raftd
        super().__init__(address, RequestHandler)

    def finish_request(self, request: socket.socket, client_address) -> None:
        request.settimeout(5.0)
        try:
            first = request.recv(4, socket.MSG_PEEK | socket.MSG_WAITALL)
        except OSError:
            return
        transport = self.raftd.transport
        if first == MAGIC:
            if transport is not None:
                transport.serve_connection(request)
            return
        request.settimeout(None)
        super().finish_request(request, client_address)


def _configure_logging(verbose: bool, debug: bool, trace: bool) -> None:
    logging.basicConfig(stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    level = logging.INFO if verbose or debug or trace else logging.WARNING
    logging.getLogger("raftd").setLevel(level)
    logging.getLogger("embraft").setLevel(level)
    core = TRACE if trace else logging.DEBUG if debug else logging.WARNING
    logging.getLogger("embraft.core").setLevel(core)
    logging.getLogger("embraft.transport").setLevel(logging.DEBUG if debug or trace else level)


def parse_arguments(argv: Optional[List[str]]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="raftd", add_help=False,
                                     description="Replicated key/value server (docs/RAFTD.md)")
    parser.add_argument("-h", dest="host", default="localhost")
    parser.add_argument("-p", dest="port", type=int, default=4001)
    parser.add_argument("-join", dest="join")
    parser.add_argument("-v", dest="verbose", action="store_true")
    parser.add_argument("-debug", action="store_true")
    parser.add_argument("-trace", action="store_true")
    parser.add_argument("-help", "--help", action="help")
    parser.add_argument("data_dir", metavar="DATA-DIR")
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    arguments = parse_arguments(argv)
    _configure_logging(arguments.verbose, arguments.debug, arguments.trace)
    server: Optional[RaftdServer] = None

    def fatal() -> None:
        # On the node's thread: stop serving from another one (shutdown
        # waits for serve_forever, which may not have started yet).
        if server is not None:
            threading.Thread(target=server.shutdown, daemon=True).start()

    raftd = Raftd(arguments.host, arguments.port, arguments.data_dir, fatal)
    # Bind before joining so a taken port fails at once; connections from
    # peers wait in the backlog until the node serves them.
    server = RaftdServer((arguments.host, arguments.port), raftd)

    def stop(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        raftd.start(arguments.join)
        if not raftd.failed:
            logger.info("node %d serving on %s", raftd.node_id, raftd.advertised)
            server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        raftd.close()
    if raftd.failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
