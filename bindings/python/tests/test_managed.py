"""The managed handles: freed once, a finalizer as a safety net, ClosedError
after close."""

import gc

import pytest
from conftest import single_node_config

import embraft
from embraft import _ffi
from embraft._managed import Managed
from embraft.config import ConfigHandle
from embraft.driver import NodeHandle


class _Counted(Managed[_ffi.ConfigPtr]):
    """A configuration handle that counts its frees."""

    frees = 0
    _what = "counted configuration"

    @staticmethod
    def _free(ptr: _ffi.ConfigPtr) -> None:
        _Counted.frees += 1
        _ffi.lib.embraft_config_free(ptr)


def _counted() -> _Counted:
    return _Counted(ConfigHandle.new().take())


def test_close_frees_once_and_use_after_close_raises_closed_error():
    before = _Counted.frees
    handle = _counted()
    handle.close()
    handle.close()
    assert _Counted.frees == before + 1
    assert handle.closed
    with pytest.raises(embraft.ClosedError, match="counted configuration is closed"):
        handle.ptr()


def test_a_forgotten_handle_is_freed_by_its_finalizer():
    before = _Counted.frees
    handle = _counted()
    del handle
    gc.collect()
    assert _Counted.frees == before + 1


def test_a_consumed_handle_is_not_freed_again():
    before = _Counted.frees
    handle = _counted()
    ptr = handle.take()
    handle.close()
    assert _Counted.frees == before
    assert handle.closed
    _ffi.lib.embraft_config_free(ptr)


def test_a_null_handle_is_refused():
    with pytest.raises(ValueError):
        ConfigHandle(_ffi.ConfigPtr())


def test_context_manager_closes():
    with ConfigHandle.new() as handle:
        assert not handle.closed
    assert handle.closed


def test_config_errors_carry_the_configuration_last_error(tmp_path):
    config = single_node_config(tmp_path, election_ticks=1, heartbeat_ticks=1)
    with pytest.raises(embraft.ConfigError) as caught:
        NodeHandle.new(config)
    assert str(caught.value)
