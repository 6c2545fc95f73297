"""The replicated key/value state raftd serves: keys and peer addresses,
changed by the commands of the log and replaced by snapshots."""

from __future__ import annotations

import logging
import threading
from typing import BinaryIO, Callable, Dict, Optional, Tuple

from .codec import (
    COMMAND_DELETE,
    COMMAND_PEER,
    COMMAND_SET,
    MalformedSnapshotError,
    decode_command,
    decode_snapshot,
    encode_snapshot,
)

logger = logging.getLogger("raftd")


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


