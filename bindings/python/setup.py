"""The Rust part of the build, with setuptools-rust (the metadata is in
pyproject.toml).

libembraft is a plain C library that the package loads with ctypes, not a
Python extension module: setuptools-rust builds the crate at the
repository root (two directories up; pip 21.3 and later build a local
project in place, so the relative path holds) as a cdylib with no Python
binding, and two small overrides keep what a ctypes library needs:
- the file is libembraft.so inside the package, where embraft._ffi looks
  for it, not a name carrying the interpreter's extension suffix;
- the wheel is tagged py3-none-<platform>: it holds native code for one
  platform but does not depend on the Python version or ABI.
EMBRAFT_SOURCE_DIR builds the library from another checkout.
"""

import os
from pathlib import Path

from setuptools import setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools_rust import Binding, RustExtension, build_rust

LIBRARY_FILE = "libembraft.so"


def cargo_manifest() -> str:
    root = Path(os.environ.get("EMBRAFT_SOURCE_DIR") or Path(__file__).parent / ".." / "..")
    manifest = root / "Cargo.toml"
    if not manifest.is_file() or not (root / "include" / "embraft.h").is_file():
        raise SystemExit(
            f"embraft: {root.resolve()} is not the embraft repository (no Cargo.toml and "
            "include/embraft.h); install from the repository (pip install ./bindings/python, "
            "with a pip that builds in place, 21.3 or later) or set EMBRAFT_SOURCE_DIR")
    return str(manifest)


class BuildLibrary(build_rust):
    def get_dylib_ext_path(self, ext: RustExtension, target_fname: str) -> str:
        path = super().get_dylib_ext_path(ext, target_fname)
        return os.path.join(os.path.dirname(path), LIBRARY_FILE)


class PlatformWheel(bdist_wheel):
    def get_tag(self) -> "tuple[str, str, str]":
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    rust_extensions=[RustExtension(
        "embraft.libembraft", path=cargo_manifest(), binding=Binding.NoBinding,
        # The crate types of Cargo.toml, so that this build and a plain
        # `cargo build --release` share target/ instead of rebuilding the
        # crate for each other (setuptools-rust asks for cdylib alone).
        args=["--crate-type", "rlib,cdylib,staticlib"])],
    cmdclass={"build_rust": BuildLibrary, "bdist_wheel": PlatformWheel},
)
