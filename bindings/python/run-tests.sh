#!/usr/bin/env bash
# Tests the Python binding the way a user installs it: a virtualenv, then
# `pip install ./bindings/python[metrics]` (setuptools-rust builds the Rust
# library with cargo and puts libembraft.so in the package; the extra brings
# prometheus_client, which the raftd's /metrics and its tests use), then
# ruff and mypy on the package, then pytest. Any of them failing fails the script.
#
# Environment:
#   EMBRAFT_PY_VENV   where to keep the virtualenv (default target/python-venv)
#   PYTHON            the interpreter to build it from (default python3)
set -euo pipefail
cd "$(dirname "$0")/../.."

python=${PYTHON:-python3}
venv=${EMBRAFT_PY_VENV:-target/python-venv}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/embraft-py-tests.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
# The installed package must be the one under test, not another copy.
unset EMBRAFT_LIBRARY

pip_install() {
    if [ -x "$venv/bin/pip" ]; then
        "$venv/bin/pip" install --quiet --disable-pip-version-check "$@"
    else
        # No pip inside the venv: drive the interpreter's own pip at it.
        "$python" -m pip --python "$venv/bin/python" install --quiet \
            --disable-pip-version-check "$@"
    fi
}

if [ ! -x "$venv/bin/python" ]; then
    mkdir -p "$(dirname "$venv")"
    if ! "$python" -m venv "$venv" 2>"$scratch/venv.err"; then
        rm -rf "$venv"
        if "$python" -m pip --version >/dev/null 2>&1; then
            echo "note: '$python -m venv' failed (ensurepip missing?):" \
                "$(tail -1 "$scratch/venv.err")"
            echo "note: creating the venv without pip and installing with $python's own pip"
            "$python" -m venv --without-pip "$venv"
        else
            cat "$scratch/venv.err" >&2
            echo "error: cannot create a virtualenv with pip: install python3-venv" \
                "(Debian/Ubuntu) or python3-pip, then run again" >&2
            exit 1
        fi
    fi
fi

# Absolute from here on: the checks run in bindings/python.
venv=$(cd "$venv" && pwd)

# setuptools copies the package into build/ and never prunes it: a module
# moved or deleted since the last build would still land in the wheel.
rm -rf bindings/python/build
echo "installing ./bindings/python[metrics] (cargo build --release), pytest, ruff and mypy into $venv"
pip_install "./bindings/python[metrics]" pytest pytest-timeout ruff mypy

start=$SECONDS
set +e
# The checks read bindings/python/pyproject.toml; mypy checks the sources
# (not the installed copy) and keeps its cache with the venv.
(cd bindings/python && "$venv/bin/ruff" check --no-cache .)
ruff_status=$?
(cd bindings/python && "$venv/bin/mypy" --cache-dir "$venv/mypy-cache")
mypy_status=$?
echo "ruff: $([ $ruff_status -eq 0 ] && echo clean || echo FAILED)," \
    "mypy: $([ $mypy_status -eq 0 ] && echo clean || echo FAILED)"
"$venv/bin/python" -m pytest bindings/python/tests -p no:cacheprovider \
    --basetemp="$scratch/pytest" --timeout=300 -q -rfE "$@"
pytest_status=$?
set -e
status=$pytest_status
if [ $status -eq 0 ] && { [ $ruff_status -ne 0 ] || [ $mypy_status -ne 0 ]; }; then
    status=1
fi
echo "python binding tests: $([ $status -eq 0 ] && echo passed || echo FAILED)" \
    "in $((SECONDS - start)) s (pytest exit status $pytest_status," \
    "ruff $ruff_status, mypy $mypy_status)"
exit $status
