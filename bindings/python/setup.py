"""Builds the Rust library with cargo during the package build and ships
libembraft.so inside the package (see pyproject.toml for the metadata).

The package lives in the embraft repository (bindings/python), so the
library is built from the repository root two levels up; set
EMBRAFT_SOURCE_DIR to build from another checkout. cargo reuses the
repository's target/ directory, so an install after a build recompiles
nothing.
"""

import json
import os
import shutil
import subprocess
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

LIBRARY_FILE = "libembraft.so"


def repository_root() -> Path:
    candidate = Path(os.environ.get("EMBRAFT_SOURCE_DIR")
                     or Path(__file__).resolve().parent.parent.parent)
    header = candidate / "include" / "embraft.h"
    if not (candidate / "Cargo.toml").is_file() or not header.is_file():
        raise SystemExit(
            f"embraft: {candidate} is not the embraft repository (no Cargo.toml and "
            "include/embraft.h); install from the repository (pip install ./bindings/python, "
            "with a pip that builds in place, 21.3 or later) or set EMBRAFT_SOURCE_DIR")
    return candidate


def find_cargo() -> str:
    cargo = os.environ.get("CARGO") or shutil.which("cargo")
    if cargo:
        return cargo
    rustup_default = Path.home() / ".cargo" / "bin" / "cargo"
    if rustup_default.is_file():
        return str(rustup_default)
    raise SystemExit("embraft: cargo was not found; install Rust (https://rustup.rs) "
                     "or set CARGO to the cargo executable")


def build_library() -> Path:
    """Runs cargo build --release and returns the path of the cdylib it
    reports (so a CARGO_TARGET_DIR elsewhere works too)."""
    root = repository_root()
    command = [find_cargo(), "build", "--release", "--lib",
               "--message-format=json-render-diagnostics"]
    print("embraft: building the library:", " ".join(command), "in", root, flush=True)
    result = subprocess.run(command, cwd=root, stdout=subprocess.PIPE, check=False)
    if result.returncode != 0:
        raise SystemExit(f"embraft: cargo build failed (exit status {result.returncode})")
    for line in result.stdout.decode().splitlines():
        message = json.loads(line) if line.startswith("{") else {}
        if message.get("reason") == "compiler-artifact" and "cdylib" in message["target"]["kind"]:
            for filename in message["filenames"]:
                if filename.endswith(LIBRARY_FILE):
                    return Path(filename)
    raise SystemExit("embraft: cargo did not report a libembraft.so")


class BuildWithLibrary(build_py):
    def run(self):
        super().run()
        destination = Path(self.build_lib) / "embraft" / LIBRARY_FILE
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_library(), destination)


class BinaryDistribution(Distribution):
    """The wheel carries a native library: tag it for this platform."""

    def has_ext_modules(self):
        return True


setup(cmdclass={"build_py": BuildWithLibrary}, distclass=BinaryDistribution)
