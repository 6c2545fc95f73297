"""Ready batches: the C handle a node's poll hands out, decoded at once into
a `Ready` whose fields hold copies (no view into library memory outlives
the handle)."""

from __future__ import annotations

import dataclasses
import os
from ctypes import byref, c_bool, c_size_t, c_uint32, c_uint64, c_void_p
from typing import Callable, List, Optional, TypeVar

from . import _ffi
from ._ffi import lib
from ._managed import Managed
from .errors import error_for_status

_Item = TypeVar("_Item")


@dataclasses.dataclass
class LogLine:
    level: int  # an embraft LOG_* level
    text: str


@dataclasses.dataclass
class Message:
    to: int
    data: bytes


@dataclasses.dataclass
class Entry:
    index: int
    term: int
    kind: int  # ENTRY_NORMAL, ENTRY_NOOP or ENTRY_CONF_CHANGE
    data: bytes
    proposal: int  # the local proposal's id, or 0


@dataclasses.dataclass
class Outcome:
    proposal: int
    outcome: int  # a PROPOSAL_* code
    index: int


@dataclasses.dataclass
class ReadResult:
    context: int
    result: int  # a READ_* code
    index: int


@dataclasses.dataclass
class StateChange:
    role: int  # a ROLE_* code
    leader: int
    term: int


@dataclasses.dataclass
class SnapshotToRestore:
    index: int
    term: int
    # The file to restore from: valid while the batch's handle is open.
    path: str


@dataclasses.dataclass
class Ready:
    """One batch, in the order a host must handle it (FFI.md)."""

    log_lines: List[LogLine]
    state: Optional[StateChange]
    messages: List[Message]
    restore: Optional[SnapshotToRestore]
    entries: List[Entry]
    outcomes: List[Outcome]
    reads: List[ReadResult]
    # The index at which the node asks for a snapshot, or None.
    snapshot_wanted: Optional[int]


def _check(code: int) -> None:
    if code != _ffi.OK:
        raise error_for_status(code, "reading a ready batch")


class ReadyHandle(Managed[_ffi.ReadyPtr]):
    """A ready batch (embraft_ready*). Only the driver thread holds one."""

    _free = lib.embraft_ready_free
    _what = "ready batch"

    def decode(self) -> Ready:
        ready = self.ptr()
        count = c_size_t()
        count_ref = byref(count)
        return Ready(
            log_lines=self._log_lines(ready, count, count_ref),
            state=self._state(ready),
            messages=self._messages(ready, count, count_ref),
            restore=self._restore(ready),
            entries=self._entries(ready, count, count_ref),
            outcomes=self._outcomes(ready, count, count_ref),
            reads=self._reads(ready, count, count_ref),
            snapshot_wanted=self._snapshot_wanted(ready))

    @staticmethod
    def _log_lines(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object) -> List[LogLine]:
        _check(lib.embraft_ready_log_count(ready, count_ref))
        level, text = c_uint32(), c_void_p()
        lines = []
        for i in range(count.value):
            _check(lib.embraft_ready_log(ready, i, byref(level), byref(text)))
            lines.append(LogLine(level.value,
                                 _ffi.string_at(text).decode("utf-8", "replace")))
        return lines

    @staticmethod
    def _state(ready: _ffi.ReadyPtr) -> Optional[StateChange]:
        changed = c_bool()
        _check(lib.embraft_ready_state_changed(ready, byref(changed)))
        if not changed.value:
            return None
        role, leader, term = c_uint32(), c_uint64(), c_uint64()
        _check(lib.embraft_ready_state(ready, byref(role), byref(leader), byref(term)))
        return StateChange(role.value, leader.value, term.value)

    @staticmethod
    def _messages(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object) -> List[Message]:
        _check(lib.embraft_ready_message_count(ready, count_ref))
        to, data, length = c_uint64(), c_void_p(), c_size_t()
        refs = (byref(to), byref(data), byref(length))
        message, string_at = lib.embraft_ready_message, _ffi.string_at
        messages = []
        for i in range(count.value):
            _check(message(ready, i, *refs))
            messages.append(Message(to.value, string_at(data, length.value)))
        return messages

    @staticmethod
    def _restore(ready: _ffi.ReadyPtr) -> Optional[SnapshotToRestore]:
        present, index, term = c_bool(), c_uint64(), c_uint64()
        _check(lib.embraft_ready_snapshot_to_restore(ready, byref(present), byref(index),
                                                     byref(term)))
        if not present.value:
            return None
        path = c_void_p()
        _check(lib.embraft_ready_snapshot_path(ready, byref(path)))
        return SnapshotToRestore(index.value, term.value,
                                 os.fsdecode(_ffi.string_at(path)))

    @staticmethod
    def _entries(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object) -> List[Entry]:
        _check(lib.embraft_ready_entry_count(ready, count_ref))
        index, term, kind = c_uint64(), c_uint64(), c_uint32()
        data, length, proposal = c_void_p(), c_size_t(), c_uint64()
        refs = (byref(index), byref(term), byref(kind), byref(data), byref(length),
                byref(proposal))
        entry, string_at = lib.embraft_ready_entry, _ffi.string_at
        entries = []
        for i in range(count.value):
            _check(entry(ready, i, *refs))
            entries.append(Entry(index.value, term.value, kind.value,
                                 string_at(data, length.value),
                                 proposal.value))
        return entries

    @staticmethod
    def _outcomes(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object) -> List[Outcome]:
        return ReadyHandle._id_code_index_items(
            ready, count, count_ref, lib.embraft_ready_outcome_count, lib.embraft_ready_outcome,
            Outcome)

    @staticmethod
    def _reads(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object) -> List[ReadResult]:
        return ReadyHandle._id_code_index_items(
            ready, count, count_ref, lib.embraft_ready_read_count, lib.embraft_ready_read,
            ReadResult)

    @staticmethod
    def _id_code_index_items(ready: _ffi.ReadyPtr, count: c_size_t, count_ref: object,
                             count_of: Callable[..., int], get: Callable[..., int],
                             make: Callable[[int, int, int], _Item]) -> List[_Item]:
        """The items of a list whose getter writes a u64 id, a u32 code and
        a u64 index (proposal outcomes, read results)."""
        _check(count_of(ready, count_ref))
        ident, code, index = c_uint64(), c_uint32(), c_uint64()
        refs = (byref(ident), byref(code), byref(index))
        items = []
        for i in range(count.value):
            _check(get(ready, i, *refs))
            items.append(make(ident.value, code.value, index.value))
        return items

    @staticmethod
    def _snapshot_wanted(ready: _ffi.ReadyPtr) -> Optional[int]:
        wanted, index = c_bool(), c_uint64()
        _check(lib.embraft_ready_snapshot_wanted(ready, byref(wanted), byref(index)))
        return index.value if wanted.value else None
