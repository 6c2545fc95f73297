"""The raftd codec: replicated commands (RAFTD.md "Replicated commands")
and the snapshot format (RAFTD.md "Snapshots").

This is the contract between the C, Go and Python raftd, pinned by the test
vectors in docs/vectors: a change here must change all three alike.
"""

from __future__ import annotations

import struct
from typing import BinaryIO, Dict, Tuple

from ..errors import EmbraftError

MAX_KEY_BYTES = 1024
MAX_VALUE_BYTES = 1 << 20
MAX_ADDRESS_BYTES = 255

COMMAND_SET = 1
COMMAND_DELETE = 2
COMMAND_PEER = 3
COMMAND_REMOVE_PEER = 4

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

SNAPSHOT_MAGIC = b"RDKV"
SNAPSHOT_VERSION = 1

MAX_SHARDS = 65536
_FNV_OFFSET_BASIS = 0xCBF29CE484222325
_FNV_PRIME = 0x100000001B3
_U64_MASK = (1 << 64) - 1


# ----- shards (RAFTD.md "Shards") ----------------------------------------------------

def fnv1a64(data: bytes) -> int:
    """FNV-1a, 64 bits: the hash every raftd spreads keys with."""
    h = _FNV_OFFSET_BASIS
    for byte in data:
        h = ((h ^ byte) * _FNV_PRIME) & _U64_MASK
    return h


def key_group(key: bytes, shards: int) -> int:
    """The group (1 ... shards) that holds `key`."""
    return 1 + fnv1a64(key) % shards


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
