#!/usr/bin/env bash
# Build a Debian 12 root filesystem from Debian's package mirror (mmdebstrap; no container
# registry needed) and import it as a podman image: the base of the selfheal image when no
# registry is reachable, and a machine that boots systemd as PID 1 for the unit's tests.
#
#   deploy/container/rootfs.sh [--tag IMAGE] [--keep-tar FILE]
#
# It holds systemd (PID 1 for the unit's tests), dbus, python3 with venv (3.11, the version the
# wheelhouse is built for), and procps. About 30 s and 240 MB.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/../lib.sh"

TAG=localhost/selfheal-base:bookworm
KEEP=""
while [ $# -gt 0 ]; do
    case "$1" in
        --tag) TAG="${2:?--tag needs an image name}"; shift ;;
        --keep-tar) KEEP="${2:?--keep-tar needs a file}"; shift ;;
        -h | --help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) DIE_CODE=2 die "unknown argument: $1" ;;
    esac
    shift
done
command -v mmdebstrap >/dev/null || die "mmdebstrap is not installed (apt-get install mmdebstrap)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
tar="$TMP/rootfs.tar"   # mmdebstrap picks the format from the name: it must end in .tar
log "building a Debian bookworm root filesystem with mmdebstrap ..."
started=$SECONDS
mmdebstrap --quiet --variant=apt \
    --include=systemd,systemd-sysv,dbus,python3,python3-venv,procps \
    bookworm "$tar"
log "root filesystem: $(du -h "$tar" | cut -f1) in $((SECONDS - started)) s; importing it as $TAG ..."
"$HERE/podman.sh" import --quiet \
    --change 'CMD ["/sbin/init"]' --change 'ENV container=podman' \
    "$tar" "$TAG" >/dev/null
[ -z "$KEEP" ] || cp "$tar" "$KEEP"
log "imported $TAG"
