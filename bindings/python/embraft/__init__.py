"""embraft: Python binding of the embraft Raft library.

    import embraft
    with embraft.Node(embraft.Config(id=1, peers=[1], data_dir="/tmp/n1"),
                      my_state_machine) as node:
        node.wait_for_leader(5)
        index = node.propose(b"hello").result(timeout=5)

See docs/PYTHON.md in the repository.
"""

from . import _ffi
from ._ffi import LibraryError
from .errors import (
    BusyError,
    ClosedError,
    ConfigError,
    CorruptError,
    DirectoryLockedError,
    EmbraftError,
    GroupExistsError,
    InternalError,
    InvalidArgumentError,
    MalformedMessageError,
    MembershipChangeError,
    MessageError,
    NodeFailedError,
    NotAppliedError,
    NotDeliveredError,
    NotLeaderError,
    OutcomeUnknownError,
    ProposalDroppedError,
    ProposalTooLargeError,
    ReadIndexError,
    ResourceError,
    SnapshotError,
    StaleSnapshotError,
    StorageError,
    SupersededError,
    TooLargeError,
    TransferInProgressError,
    UnknownGroupError,
    WrongRecipientError,
)
from .metrics import Histogram, Metrics
from .node import Config, Node, PeerProgress, Replicated, StateMachine, Status, Transport
from .runtime import FrameReport, Group, Runtime, RuntimeStats
from .snapshot import SnapshotWriter

LOG_OFF = _ffi.LOG_OFF
LOG_INFO = _ffi.LOG_INFO
LOG_DEBUG = _ffi.LOG_DEBUG
LOG_TRACE = _ffi.LOG_TRACE

ABI_VERSION = _ffi.ABI_VERSION


def library_version() -> str:
    """The loaded library's release version, such as "0.1.0"."""
    return _ffi.lib.embraft_version().decode()


__version__ = "0.1.0"

__all__ = [
    "ABI_VERSION", "BusyError", "ClosedError", "Config", "ConfigError", "CorruptError",
    "DirectoryLockedError", "EmbraftError", "FrameReport", "Group", "GroupExistsError",
    "Histogram", "InternalError", "InvalidArgumentError", "LOG_DEBUG", "LOG_INFO", "LOG_OFF",
    "LOG_TRACE", "LibraryError", "MalformedMessageError", "MembershipChangeError", "MessageError",
    "Metrics", "Node", "NodeFailedError", "NotAppliedError", "NotDeliveredError", "NotLeaderError",
    "OutcomeUnknownError", "PeerProgress", "ProposalDroppedError", "ProposalTooLargeError",
    "ReadIndexError", "Replicated", "ResourceError", "Runtime", "RuntimeStats", "SnapshotError",
    "SnapshotWriter", "StaleSnapshotError", "StateMachine", "Status", "StorageError",
    "SupersededError", "TooLargeError", "TransferInProgressError", "Transport",
    "UnknownGroupError", "WrongRecipientError", "library_version",
]
