"""raftd: the replicated key/value server of docs/RAFTD.md, laid out as the
Go raftd (bindings/go/cmd/raftd) is:

- codec: replicated commands and the snapshot format, the contract shared
  with the C and Go raftd (docs/vectors);
- store: the key/value state the node applies commands to;
- service: one node (identity, embraft node, transport, reads and writes);
- http: the HTTP API and the server sharing its port with the transport;
- __main__: the command line, `python -m embraft.raftd` (`embraft-raftd`).

The package itself offers the codec and the store to other hosts and tests.
"""

from .codec import (
    COMMAND_DELETE,
    COMMAND_PEER,
    COMMAND_REMOVE_PEER,
    COMMAND_SET,
    MAX_ADDRESS_BYTES,
    MAX_KEY_BYTES,
    MAX_SHARDS,
    MAX_VALUE_BYTES,
    SNAPSHOT_MAGIC,
    SNAPSHOT_VERSION,
    MalformedSnapshotError,
    decode_command,
    decode_snapshot,
    encode_delete,
    encode_peer,
    encode_remove_peer,
    encode_set,
    encode_snapshot,
    fnv1a64,
    key_group,
)
from .store import KeyValueStore

__all__ = [
    "COMMAND_DELETE", "COMMAND_PEER", "COMMAND_REMOVE_PEER", "COMMAND_SET",
    "MAX_ADDRESS_BYTES", "MAX_KEY_BYTES", "MAX_SHARDS", "MAX_VALUE_BYTES", "SNAPSHOT_MAGIC",
    "SNAPSHOT_VERSION", "KeyValueStore", "MalformedSnapshotError", "decode_command",
    "decode_snapshot", "encode_delete", "encode_peer", "encode_remove_peer", "encode_set",
    "encode_snapshot", "fnv1a64", "key_group",
]
