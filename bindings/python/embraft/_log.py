"""The loggers of the binding and the mapping between the library's log
levels and Python's."""

from __future__ import annotations

import logging
from typing import Optional

from . import _ffi

logger = logging.getLogger("embraft")
# Where the library's own lines go (they arrive in ready batches).
core_logger = logging.getLogger("embraft.core")

# Python logging has no TRACE; embraft's trace lines go one step below DEBUG.
TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_PYTHON_LEVELS = {_ffi.LOG_INFO: logging.INFO, _ffi.LOG_DEBUG: logging.DEBUG,
                  _ffi.LOG_TRACE: TRACE}


def python_level(library_level: int) -> int:
    """The Python level of a library log line."""
    return _PYTHON_LEVELS.get(library_level, logging.INFO)


def library_level(configured: Optional[int]) -> int:
    """The library's level: the one configured, else the one that makes it
    log what the "embraft.core" logger would show."""
    if configured is not None:
        return configured
    effective = core_logger.getEffectiveLevel()
    if effective <= TRACE:
        return _ffi.LOG_TRACE
    if effective <= logging.DEBUG:
        return _ffi.LOG_DEBUG
    if effective <= logging.INFO:
        return _ffi.LOG_INFO
    return _ffi.LOG_OFF
