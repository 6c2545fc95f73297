"""Shared helpers for the embraft Python tests."""

import os
import socket
import threading
from pathlib import Path
from typing import BinaryIO, Dict, List, Tuple

import pytest

import embraft
from embraft.transport import StreamTransport

REPOSITORY = Path(__file__).resolve().parents[3]
HEADER = REPOSITORY / "include" / "embraft.h"


class MemoryStateMachine:
    """Records applied entries; snapshots are the entries joined."""

    def __init__(self) -> None:
        self.entries: List[Tuple[int, bytes]] = []
        self.restored: List[bytes] = []
        self.lock = threading.Lock()

    def apply(self, index: int, data: bytes) -> None:
        with self.lock:
            self.entries.append((index, data))

    def snapshot(self, out: BinaryIO) -> None:
        with self.lock:
            entries = list(self.entries)
        for i, (_, data) in enumerate(entries):
            out.write(b"\n" + data if i else data)

    def restore(self, src: BinaryIO) -> None:
        data = src.read()
        with self.lock:
            self.restored.append(data)
            self.entries = [(0, line) for line in data.split(b"\n") if line]

    def values(self) -> List[bytes]:
        with self.lock:
            return [data for _, data in self.entries]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Small WAL segments: every node preallocates one, and tests start many.
TEST_SEGMENT_BYTES = 4 << 20


def single_node_config(directory: Path, node_id: int = 1, **options) -> embraft.Config:
    options.setdefault("tick_interval", 0.02)
    options.setdefault("segment_size", TEST_SEGMENT_BYTES)
    return embraft.Config(id=node_id, peers=[node_id], data_dir=str(directory / f"wal{node_id}"),
                          **options)


@pytest.fixture
def single_node(tmp_path):
    machine = MemoryStateMachine()
    with embraft.Node(single_node_config(tmp_path), machine) as node:
        node.wait_for_leader(10)
        yield node, machine


class LocalCluster:
    """Nodes in this process joined by the TCP stream transport on loopback."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.addresses: Dict[int, Tuple[str, int]] = {}
        self.nodes: Dict[int, embraft.Node] = {}
        self.machines: Dict[int, MemoryStateMachine] = {}

    def start(self, node_id: int, peers, **options) -> embraft.Node:
        transport = StreamTransport(node_id, 7, self.addresses.get,
                                    listen=("127.0.0.1", 0))
        self.addresses[node_id] = transport.address
        options.setdefault("tick_interval", 0.02)
        options.setdefault("segment_size", TEST_SEGMENT_BYTES)
        config = embraft.Config(id=node_id, peers=list(peers),
                                data_dir=str(self.directory / f"wal{node_id}"), **options)
        self.machines[node_id] = MemoryStateMachine()
        self.nodes[node_id] = embraft.Node(config, self.machines[node_id], transport)
        return self.nodes[node_id]

    def close(self) -> None:
        for node in self.nodes.values():
            node.close()


@pytest.fixture
def local_cluster(tmp_path):
    cluster = LocalCluster(tmp_path)
    yield cluster
    cluster.close()


def wait_until(condition, timeout: float, interval: float = 0.02) -> bool:
    import time
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()


__all__ = ["HEADER", "MemoryStateMachine", "free_port", "single_node_config", "wait_until",
           "os"]
