#!/usr/bin/env bash
# Build the selfheal container image from deploy/container/Containerfile, with no network at
# build time: the context is a temp dir holding the Containerfile, the image's config.toml and
# a wheelhouse (selfheal, its dependencies and dumb-init, from deploy/wheelhouse.sh).
#
#   deploy/container/build.sh [--base IMAGE] [--tag TAG] [--wheel-dir DIR] [--engine podman|docker]
#
#   --base IMAGE     the base image (default: the Containerfile's, a public slim Python 3.11
#                    image); localhost/selfheal-base:bookworm is the one rootfs.sh builds
#   --tag TAG        the image's name (default: localhost/selfheal:<version>)
#   --wheel-dir DIR  a wheelhouse made already (deploy/wheelhouse.sh --extra dumb-init DIR);
#                    without it one is built here, which needs PyPI (the image build does not)
#   --engine NAME    podman (default, through podman.sh) or docker
#
# The wheels are built for /usr/bin/python3 (3.11 on Debian 12): the base's python3 must match.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/../lib.sh"

BASE=""
TAG=""
WHEELS=""
ENGINE=podman
while [ $# -gt 0 ]; do
    case "$1" in
        --base) BASE="${2:?--base needs an image}"; shift ;;
        --tag) TAG="${2:?--tag needs a name}"; shift ;;
        --wheel-dir) WHEELS=$(cd "${2:?--wheel-dir needs a directory}" && pwd); shift ;;
        --engine) ENGINE="${2:?--engine needs podman or docker}"; shift ;;
        -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) DIE_CODE=2 die "unknown argument: $1" ;;
    esac
    shift
done
case "$ENGINE" in
    podman) engine=("$HERE/podman.sh") ;;
    docker) engine=(docker) ;;
    *) DIE_CODE=2 die "--engine must be podman or docker, got '$ENGINE'" ;;
esac
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$ROOT/pyproject.toml" | head -n 1)
[ -n "$TAG" ] || TAG="localhost/selfheal:$version"

CTX=$(mktemp -d)
trap 'rm -rf "$CTX"' EXIT
cp "$HERE/Containerfile" "$HERE/config.toml" "$CTX/"
if [ -n "$WHEELS" ]; then
    ls "$WHEELS"/selfheal-*.whl >/dev/null 2>&1 || die "$WHEELS has no selfheal wheel"
    ls "$WHEELS"/dumb_init-*.whl >/dev/null 2>&1 ||
        die "$WHEELS has no dumb-init wheel (deploy/wheelhouse.sh --extra dumb-init DIR)"
    cp -a "$WHEELS" "$CTX/wheelhouse"
else
    log "building the wheelhouse (from PyPI) ..."
    "$ROOT/deploy/wheelhouse.sh" --source "$ROOT" --extra dumb-init "$CTX/wheelhouse"
fi

# --network none: the build cannot reach anything, so it is known to need nothing but the context.
args=(build --network none --tag "$TAG" --build-arg "VERSION=$version" --file "$CTX/Containerfile")
[ -z "$BASE" ] || args+=(--build-arg "BASE=$BASE")
# HEALTHCHECK is a Docker-format instruction: OCI images drop it.
[ "$ENGINE" = docker ] || args+=(--format docker)
log "building $TAG${BASE:+ on $BASE} ..."
started=$SECONDS
"${engine[@]}" "${args[@]}" "$CTX"
size=$("${engine[@]}" image inspect --format '{{.Size}}' "$TAG")
log "built $TAG in $((SECONDS - started)) s: $((size / 1000000)) MB"
