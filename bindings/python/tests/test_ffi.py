"""The ctypes layer against include/embraft.h: every function declared, with
the header's types, every constant equal, and the ABI check."""

import ctypes
import os
import re
import shutil
import subprocess
import sys
from ctypes import POINTER, c_bool, c_char_p, c_int, c_int32, c_size_t, c_uint32, c_uint64, c_void_p

import pytest
from conftest import HEADER

from embraft import _ffi

# Each C handle type has a ctypes type of its own.
HANDLE_TYPES = {"embraft_config": _ffi.ConfigPtr, "embraft_node": _ffi.NodePtr,
                "embraft_ready": _ffi.ReadyPtr, "embraft_snapshot_writer": _ffi.SnapshotWriterPtr,
                "embraft_status_report": _ffi.StatusReportPtr,
                "embraft_runtime": _ffi.RuntimePtr,
                "embraft_runtime_ready": _ffi.RuntimeReadyPtr}

# The #[repr(C)] items of a runtime batch: C type -> ctypes Structure.
RUNTIME_ITEMS = {"embraft_rt_message": _ffi.RtMessage, "embraft_rt_entry": _ffi.RtEntry,
                 "embraft_rt_outcome": _ffi.RtOutcome, "embraft_rt_read": _ffi.RtRead,
                 "embraft_rt_state": _ffi.RtState, "embraft_rt_restore": _ffi.RtRestore,
                 "embraft_rt_snapshot_wanted": _ffi.RtSnapshotWanted,
                 "embraft_rt_log": _ffi.RtLog}

# C type (whitespace removed around '*') -> the ctypes type the layer must use.
EXPECTED_CTYPES = {
    "void": None,
    "embraft_status": c_int32,
    "uint32_t": c_uint32,
    "uint64_t": c_uint64,
    "size_t": c_size_t,
    "bool": c_bool,
    "const char*": c_char_p,
    "char*": c_char_p,
    "const uint8_t*": c_char_p,
    "const uint64_t*": POINTER(c_uint64),
    "int*": POINTER(c_int),
    "uint32_t*": POINTER(c_uint32),
    "uint64_t*": POINTER(c_uint64),
    "size_t*": POINTER(c_size_t),
    "bool*": POINTER(c_bool),
    "const uint8_t**": POINTER(c_void_p),
    "const char**": POINTER(c_void_p),
    "const uint64_t**": POINTER(POINTER(c_uint64)),
    "embraft_rt_frame_report*": POINTER(_ffi.RtFrameReport),
    "embraft_metrics*": POINTER(_ffi.Metrics),
}
for _handle, _ctype in HANDLE_TYPES.items():
    EXPECTED_CTYPES[f"{_handle}*"] = _ctype
    EXPECTED_CTYPES[f"const {_handle}*"] = _ctype
    EXPECTED_CTYPES[f"{_handle}**"] = POINTER(_ctype)
for _item, _ctype in RUNTIME_ITEMS.items():
    EXPECTED_CTYPES[f"const {_item}**"] = POINTER(POINTER(_ctype))


def _normalize(c_type: str) -> str:
    return re.sub(r"\s*\*\s*", "*", " ".join(c_type.split())).strip()


def header_prototypes():
    """name -> (result C type, [argument C types]) from the header."""
    text = HEADER.read_text()
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"^\s*#[^\n]*", "", text, flags=re.M)
    prototypes = {}
    for match in re.finditer(r"([A-Za-z_][\w\s\*]*?)\b(embraft_\w+)\s*\(([^;{]*?)\)\s*;", text):
        result, name, arguments = match.groups()
        types = []
        if arguments.strip() != "void":
            for argument in arguments.split(","):
                argument = " ".join(argument.split())
                types.append(_normalize(re.sub(r"\w+$", "", argument)))
        prototypes[name] = (_normalize(result), types)
    return prototypes


def header_constants():
    text = HEADER.read_text()
    return {name: int(value) for name, value in
            re.findall(r"^#define EMBRAFT_(\w+) (\d+)\s*$", text, flags=re.M)}


def test_header_parses_into_many_prototypes():
    prototypes = header_prototypes()
    assert len(prototypes) > 60
    assert prototypes["embraft_node_propose"] == (
        "embraft_status", ["const embraft_node*", "const uint8_t*", "size_t", "uint64_t*"])


def test_every_header_function_is_declared_identically():
    prototypes = header_prototypes()
    missing = sorted(set(prototypes) - set(_ffi.PROTOTYPES))
    extra = sorted(set(_ffi.PROTOTYPES) - set(prototypes))
    assert not missing, f"functions of the header missing from _ffi: {missing}"
    assert not extra, f"functions in _ffi that the header lacks: {extra}"
    for name, (result, arguments) in prototypes.items():
        for c_type in [result] + arguments:
            assert c_type in EXPECTED_CTYPES, f"{name}: no ctypes mapping for {c_type!r}"
        expected_result = EXPECTED_CTYPES[result]
        expected_arguments = [EXPECTED_CTYPES[c_type] for c_type in arguments]
        declared_result, declared_arguments = _ffi.PROTOTYPES[name]
        assert declared_result is expected_result, f"{name}: result type"
        assert list(declared_arguments) == expected_arguments, f"{name}: argument types"
        function = getattr(_ffi.lib, name)
        assert function.restype is expected_result, f"{name}: restype not applied"
        assert list(function.argtypes) == expected_arguments, f"{name}: argtypes not applied"


def test_handle_types_are_distinct_void_pointers():
    assert len(set(HANDLE_TYPES.values())) == len(HANDLE_TYPES)
    for ctype in HANDLE_TYPES.values():
        assert issubclass(ctype, c_void_p)


@pytest.mark.parametrize("wrong", [_ffi.NodePtr(), c_void_p(), 1, None])
def test_a_wrong_handle_is_refused_before_the_call(wrong):
    # ctypes reports the TypeError of the handle type's from_param as an
    # ArgumentError; nothing reaches the library.
    with pytest.raises(ctypes.ArgumentError, match="TypeError: expected a ConfigPtr"):
        _ffi.lib.embraft_config_free(wrong)


def test_every_header_constant_matches():
    constants = header_constants()
    assert len(constants) > 50
    for name, value in constants.items():
        assert hasattr(_ffi, name), f"EMBRAFT_{name} missing from _ffi"
        assert getattr(_ffi, name) == value, f"EMBRAFT_{name}"


def test_loaded_library_reports_the_header_abi_version():
    assert _ffi.lib.embraft_abi_version() == header_constants()["ABI_VERSION"]


def _import_with_library(path: str) -> subprocess.CompletedProcess:
    environment = dict(os.environ, EMBRAFT_LIBRARY=path)
    return subprocess.run([sys.executable, "-c", "import embraft"], env=environment,
                          capture_output=True, text=True, timeout=60)


def test_missing_library_is_a_clear_import_error(tmp_path):
    result = _import_with_library(str(tmp_path / "nowhere.so"))
    assert result.returncode != 0
    assert "LibraryError" in result.stderr and "cannot load the embraft library" in result.stderr


@pytest.mark.skipif(shutil.which("cc") is None, reason="needs a C compiler")
def test_library_with_another_abi_version_is_refused(tmp_path):
    source = tmp_path / "fake.c"
    source.write_text("unsigned int embraft_abi_version(void) { return 999; }\n")
    library = tmp_path / "libfake.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(library), str(source)], check=True,
                   timeout=60)
    result = _import_with_library(str(library))
    assert result.returncode != 0
    assert "ABI version 999" in result.stderr
    assert f"ABI version {_ffi.ABI_VERSION}" in result.stderr


def test_snapshot_functions_of_abi_1_are_gone():
    # The library owns snapshot files since ABI version 2.
    for name in ("embraft_crc32", "embraft_node_compact", "embraft_node_send_snapshot_chunk",
                 "embraft_node_report_snapshot", "embraft_node_restore_snapshot",
                 "embraft_ready_snapshot_send", "embraft_ready_snapshot_chunk"):
        assert name not in _ffi.PROTOTYPES
        assert not hasattr(_ffi.lib, name), name


def test_status_strings_cover_unknown_codes():
    assert _ffi.status_text(_ffi.ERR_BUSY)
    assert _ffi.status_text(12345)
