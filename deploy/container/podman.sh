#!/usr/bin/env bash
# podman with the settings this kind of host needs (containers.conf beside this file), and, with
# SELFHEAL_PODMAN_ROOT set, a storage of its own under that directory (the tests use one each).
#
#   deploy/container/podman.sh ARGS...       as `podman ARGS...`
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export CONTAINERS_CONF="${CONTAINERS_CONF:-$HERE/containers.conf}"
command -v podman >/dev/null || {
    echo "podman.sh: podman is not installed (apt-get install podman runc)" >&2
    exit 127
}
if [ -n "${SELFHEAL_PODMAN_ROOT:-}" ]; then
    exec podman --root "$SELFHEAL_PODMAN_ROOT/storage" --runroot "$SELFHEAL_PODMAN_ROOT/run" \
        --storage-driver overlay "$@"
fi
exec podman "$@"
