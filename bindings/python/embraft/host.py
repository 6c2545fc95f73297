"""What the host hands a node: its state machine and its transport."""

from __future__ import annotations

from typing import BinaryIO, Callable, Protocol, runtime_checkable


@runtime_checkable
class StateMachine(Protocol):
    """What the host implements. Every method runs on the node's driver
    thread, one call at a time, in log order."""

    def apply(self, index: int, data: bytes) -> None:
        """Apply the committed entry at `index`."""

    def snapshot(self, out: BinaryIO) -> None:
        """Write the state as of the last applied entry to `out`, a
        buffered binary stream into the snapshot's file (write-only, not
        seekable). Do not close it; the node finishes the snapshot."""

    def restore(self, src: BinaryIO) -> None:
        """Replace the state with a snapshot's, read from `src` (the file
        `snapshot` wrote, on this node or on the leader, opened for
        reading and verified against its checksum). Read it within the
        call: the file may be deleted afterwards."""


class Transport(Protocol):
    """Carries encoded messages between nodes (embraft.transport has the
    TCP stream transport of WIRE.md). A node owns the transport it is given:
    it starts it and closes it."""

    def start(self, deliver: Callable[[bytes], None],
              unreachable: Callable[[int], None]) -> None:
        """Begin; hand received messages to `deliver` (which raises
        embraft.MessageError for bytes that are not a message for this node)
        and report peers that cannot be reached to `unreachable`."""

    def send(self, to: int, data: bytes) -> None:
        """Queue `data` for node `to`; never blocks for long."""

    def close(self) -> None:
        """Stop and release every connection and thread."""
