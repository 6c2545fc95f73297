"""Exceptions: one per status code a caller can meet, and one per reason a
proposal or a read can fail after it was accepted."""

from __future__ import annotations

from typing import Dict, Optional, Type

from . import _ffi


class EmbraftError(Exception):
    """Base of every embraft exception. `status` is the C status code, or
    None for failures that do not come from a status code."""

    status: Optional[int] = None

    def __init__(self, message: str, status: Optional[int] = None):
        super().__init__(message)
        if status is not None:
            self.status = status


class InvalidArgumentError(EmbraftError, ValueError):
    """An argument is out of its documented range."""


class UnknownGroupError(EmbraftError, LookupError):
    """A runtime call named a group the runtime does not run."""


class GroupExistsError(EmbraftError):
    """A runtime was asked to start a group it already runs."""


class ConfigError(EmbraftError):
    """The configuration (or its combination with the data directory)
    cannot start a node."""


class BusyError(EmbraftError):
    """The node's input queue is full; nothing was done. Retry shortly."""


class MessageError(EmbraftError):
    """Bytes handed to Node.step are not a message for this node."""


class MalformedMessageError(MessageError):
    """The bytes are not an encoded message."""


class WrongRecipientError(MessageError):
    """The message is addressed to another node."""


class TooLargeError(EmbraftError, ValueError):
    """The proposal exceeds the configured maximum entry size."""


class NotDeliveredError(EmbraftError):
    """An acknowledged index was never delivered."""


class DirectoryLockedError(EmbraftError):
    """Another node holds the data directory."""


class StorageError(EmbraftError):
    """Reading or writing the data directory failed."""


class CorruptError(StorageError):
    """The data directory holds damaged or missing data (a snapshot file
    the WAL names is missing or fails its length or CRC check, or the WAL
    itself is corrupt): the node cannot start from it as it is."""


class SnapshotError(EmbraftError):
    """A snapshot could not be taken at the index asked for."""


class NotAppliedError(SnapshotError, ValueError):
    """The snapshot's index is not applied and acknowledged on this node
    yet."""


class StaleSnapshotError(SnapshotError):
    """The node already has a snapshot at or beyond the index (taken since,
    or installed from the leader). Nothing is lost: the newer one stands."""


class NodeFailedError(EmbraftError):
    """The node stopped after a storage failure or an internal error:
    close it and open a new one on the same data directory."""


class ResourceError(EmbraftError):
    """A thread, file descriptor or memory could not be had."""


class InternalError(EmbraftError):
    """A bug in embraft (a Rust panic caught at the boundary)."""


class ClosedError(EmbraftError):
    """The node was closed."""


class ProposalDroppedError(EmbraftError):
    """A proposal was accepted by the node but did not commit."""

    outcome: int = 0


class NotLeaderError(ProposalDroppedError):
    """This node is not the leader. `leader` is the leader it knows of, or
    0."""

    outcome = _ffi.PROPOSAL_DROPPED_NOT_LEADER

    def __init__(self, message: str, leader: int = 0):
        super().__init__(message)
        self.leader = leader


class TransferInProgressError(ProposalDroppedError):
    """Refused while leadership was being transferred."""

    outcome = _ffi.PROPOSAL_DROPPED_TRANSFER


class ProposalTooLargeError(ProposalDroppedError, TooLargeError):
    """Refused by the core as larger than its entry limit."""

    outcome = _ffi.PROPOSAL_DROPPED_TOO_LARGE


class SupersededError(ProposalDroppedError):
    """A new leader's entry was committed at the proposal's index."""

    outcome = _ffi.PROPOSAL_DROPPED_SUPERSEDED


class MembershipChangeError(ProposalDroppedError):
    """A membership change was refused (one pending, invalid, or the
    learner to promote is behind)."""


class OutcomeUnknownError(EmbraftError):
    """A snapshot installed from the leader covers the proposal's index: it
    may or may not have committed. `index` is where it was placed."""

    def __init__(self, message: str, index: int):
        super().__init__(message)
        self.index = index


class ReadIndexError(EmbraftError):
    """No linearizable read point could be had (no leader, leadership lost
    or refused); retry. `result` is the EMBRAFT_READ_* code."""

    def __init__(self, message: str, result: int):
        super().__init__(message)
        self.result = result


_STATUS_EXCEPTIONS: Dict[int, Type[EmbraftError]] = {
    _ffi.ERR_NULL_ARGUMENT: InvalidArgumentError,
    _ffi.ERR_INVALID_ARGUMENT: InvalidArgumentError,
    _ffi.ERR_OUT_OF_RANGE: InvalidArgumentError,
    _ffi.ERR_INVALID_CONFIG: ConfigError,
    _ffi.ERR_BUSY: BusyError,
    _ffi.ERR_MALFORMED_MESSAGE: MalformedMessageError,
    _ffi.ERR_WRONG_RECIPIENT: WrongRecipientError,
    _ffi.ERR_TOO_LARGE: TooLargeError,
    _ffi.ERR_NOT_DELIVERED: NotDeliveredError,
    _ffi.ERR_DIRECTORY_LOCKED: DirectoryLockedError,
    _ffi.ERR_STORAGE: StorageError,
    _ffi.ERR_NODE_FAILED: NodeFailedError,
    _ffi.ERR_RESOURCE: ResourceError,
    _ffi.ERR_PANIC: InternalError,
    _ffi.ERR_NOT_APPLIED: NotAppliedError,
    _ffi.ERR_STALE_SNAPSHOT: StaleSnapshotError,
    _ffi.ERR_CORRUPT: CorruptError,
    _ffi.ERR_UNKNOWN_GROUP: UnknownGroupError,
    _ffi.ERR_GROUP_EXISTS: GroupExistsError,
}

_DROP_REASONS: Dict[int, str] = {
    _ffi.PROPOSAL_DROPPED_NOT_LEADER: "not the leader",
    _ffi.PROPOSAL_DROPPED_TRANSFER: "a leadership transfer is under way",
    _ffi.PROPOSAL_DROPPED_TOO_LARGE: "entry too large",
    _ffi.PROPOSAL_DROPPED_SUPERSEDED: "superseded by a new leader's entry",
    _ffi.PROPOSAL_DROPPED_CONF_CHANGE_PENDING: "a membership change is pending",
    _ffi.PROPOSAL_DROPPED_CONF_CHANGE_INVALID: "membership change not possible",
    _ffi.PROPOSAL_DROPPED_LEARNER_BEHIND: "the learner has not caught up",
}

_READ_REASONS: Dict[int, str] = {
    _ffi.READ_NO_LEADER: "no leader known",
    _ffi.READ_LEADERSHIP_LOST: "leadership changed before the read was confirmed",
    _ffi.READ_REFUSED: "the node asked is no longer the leader",
    _ffi.READ_BUSY: "too many reads are in progress",
}


def error_for_status(code: int, detail: str = "") -> EmbraftError:
    """The exception for a failed call's status code, with the handle's
    last error message when there is one."""
    cls = _STATUS_EXCEPTIONS.get(code, EmbraftError)
    text = _ffi.status_text(code)
    if detail:
        # The library's messages often repeat the code's description.
        text = detail if detail.startswith(text) else f"{text}: {detail}"
    return cls(text, code)


def error_for_outcome(outcome: int, index: int, leader: int) -> EmbraftError:
    """The exception a proposal's future fails with for a non-committed
    outcome."""
    reason = _DROP_REASONS.get(outcome)
    if outcome == _ffi.PROPOSAL_DROPPED_NOT_LEADER:
        return NotLeaderError(f"proposal dropped: {reason}", leader)
    if outcome == _ffi.PROPOSAL_UNKNOWN:
        return OutcomeUnknownError(
            f"proposal at index {index} is covered by an installed snapshot", index)
    specific = {
        _ffi.PROPOSAL_DROPPED_TRANSFER: TransferInProgressError,
        _ffi.PROPOSAL_DROPPED_TOO_LARGE: ProposalTooLargeError,
        _ffi.PROPOSAL_DROPPED_SUPERSEDED: SupersededError,
    }.get(outcome, MembershipChangeError if reason else ProposalDroppedError)
    error = specific(f"proposal dropped: {reason or f'outcome {outcome}'}")
    error.outcome = outcome
    return error


def error_for_read(result: int) -> ReadIndexError:
    return ReadIndexError(f"read index failed: {_READ_REASONS.get(result, result)}", result)
