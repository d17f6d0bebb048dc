#!/usr/bin/env bash
# Build a wheelhouse for offline installs: selfheal's wheel, every dependency's wheel and the
# build requirements, for the Python that will run the service.
#
#   deploy/wheelhouse.sh DIR                   on a machine that reaches PyPI
#   deploy/install.sh --wheel-dir DIR          then on the VM, with no index at all
#   deploy/wheelhouse.sh --extra dumb-init DIR  with more packages (the container image's init)
#
# The wheels match the interpreter given with --python (default /usr/bin/python3): build the
# wheelhouse with the same Python version and platform as the VM's.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/lib.sh"

usage() {
    echo "usage: wheelhouse.sh [--python PATH] [--source DIR] [--extra REQUIREMENT]... DIR"
}

PYTHON=""
SRC=$(cd "$HERE/.." && pwd)
OUT=""
EXTRA=()
while [ $# -gt 0 ]; do
    case "$1" in
        --python) PYTHON="${2:?--python needs a path}"; shift ;;
        --source) SRC=$(cd "${2:?--source needs a directory}" && pwd); shift ;;
        --extra) EXTRA+=("${2:?--extra needs a requirement, e.g. dumb-init}"); shift ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; DIE_CODE=2 die "unknown argument: $1" ;;
        *) OUT=$1 ;;
    esac
    shift
done
[ -n "$OUT" ] || { usage >&2; DIE_CODE=2 die "which directory?"; }
if [ -z "$PYTHON" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3); fi
fi
[ -f "$SRC/pyproject.toml" ] || die "$SRC is not the selfheal source tree"
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
mkdir "$TMP/src"
# Only what the build needs, so pip never writes build/ or *.egg-info into the tree.
cp -a "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/selfheal_daemon" "$SRC/service" "$TMP/src/"
find "$TMP/src" -name __pycache__ -prune -exec rm -rf {} +
"$PYTHON" -m venv "$TMP/venv"
pip=("$TMP/venv/bin/python" -m pip --disable-pip-version-check --no-input)
"${pip[@]}" wheel --quiet --wheel-dir "$OUT" "$TMP/src" "${EXTRA[@]}"
# pip builds selfheal from source on the VM in an isolated environment: it needs these there.
requires=$(sed -n 's/^requires = \[\(.*\)\]$/\1/p' "$SRC/pyproject.toml" | tr -d '"' | tr ',' '\n')
mapfile -t build_requires < <(printf '%s\n' "$requires" | sed 's/^ *//; s/ *$//' | grep .)
"${pip[@]}" download --quiet --dest "$OUT" "${build_requires[@]}"
log "wrote $(find "$OUT" -name '*.whl' | wc -l) wheels to $OUT"
