#!/usr/bin/env bash
# The Python SDK's CI: a fresh virtual environment in a temporary directory,
# `pip install ./clients/python[dev]`, `mypy --strict`, then pytest against real servers.
#
# Environment:
#   PLEDGER_NATS_SERVER  nats-server (>= 2.11) binary the tests start
#                        (default: <repo>/.tools/bin/nats-server when it exists)
#   PLEDGER_BIN          pledger binary of the acceptance test
#                        (default: <repo>/target/debug/pledger)
#   PYTHON               the interpreter to build the venv with (default: python3)
# Extra arguments go to pytest (e.g. `clients/python/ci.sh -k vectors`).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
python="${PYTHON:-python3}"

export PLEDGER_BIN="${PLEDGER_BIN:-$repo/target/debug/pledger}"
case "$PLEDGER_BIN" in /*) ;; *) PLEDGER_BIN="$repo/$PLEDGER_BIN" ;; esac
if [[ -z "${PLEDGER_NATS_SERVER:-}" && -x "$repo/.tools/bin/nats-server" ]]; then
    export PLEDGER_NATS_SERVER="$repo/.tools/bin/nats-server"
fi
if [[ -z "${PLEDGER_NATS_SERVER:-}" || ! -x "$PLEDGER_NATS_SERVER" ]]; then
    echo "ci.sh: PLEDGER_NATS_SERVER must name a nats-server (>= 2.11) binary" >&2
    exit 2
fi
if [[ ! -x "$PLEDGER_BIN" ]]; then
    echo "ci.sh: no pledger binary at $PLEDGER_BIN (set PLEDGER_BIN or run cargo build first)" >&2
    exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/pledger-python-ci.XXXXXX")"
trap 'rm -rf "$work"' EXIT

echo "ci.sh: $("$python" --version) in a fresh venv at $work/venv"
if ! "$python" -m venv "$work/venv" 2>"$work/venv.err"; then
    # Some distributions ship Python without ensurepip: fall back to virtualenv from PyPI.
    cat "$work/venv.err" >&2
    "$python" -m pip install --quiet --user virtualenv
    "$python" -m virtualenv --quiet "$work/venv"
fi
venv_python="$work/venv/bin/python"
"$venv_python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv_python" -m pip install --quiet --disable-pip-version-check "$here[dev]"

cd "$here"
# The package promises types (py.typed): hold it to them.
"$venv_python" -m mypy
# HOME points into the temp dir: nothing the tests (or pledger) do touches the real one.
HOME="$work/home" "$venv_python" -m pytest -p no:cacheprovider -q --durations=5 "$@"
