#!/usr/bin/env bash
# Remove selfheal. Keeps the config (/etc/selfheal), the state (/var/lib/selfheal: registry,
# audit, data) and the backups unless --purge; --purge also removes the service user.
#
#   deploy/uninstall.sh                   stop, disable, remove the unit, the venvs, the CLI
#   deploy/uninstall.sh --purge           ... and the config, the state, the backups, the user
#   deploy/uninstall.sh --prefix DIR --no-user --no-systemctl   a throwaway root
#
# Idempotent: what is already gone is skipped.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: uninstall.sh [--purge] [--prefix DIR] [--no-user] [--no-systemctl] [--user NAME]
EOF
}

PURGE=0
while [ $# -gt 0 ]; do
    case "$1" in
        --purge) PURGE=1 ;;
        --prefix) set_prefix "${2:?--prefix needs a directory}"; shift ;;
        --no-user) NO_USER=1 ;;
        --no-systemctl) NO_SYSTEMCTL=1 ;;
        --user) SERVICE_USER="${2:?--user needs a name}"; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; DIE_CODE=2 die "unknown argument: $1" ;;
    esac
    shift
done
check_prefix_flags
need_root

if [ "$NO_SYSTEMCTL" = 0 ]; then
    if systemctl is-enabled --quiet "$SELFHEAL_SERVICE" 2>/dev/null || service_active; then
        systemctl disable --now "$SELFHEAL_SERVICE"
        log "stopped and disabled selfheal"
    fi
else
    log "skipped (--no-systemctl): systemctl disable --now $SELFHEAL_SERVICE"
fi
pid=$(daemon_pid "$PREFIX$SELFHEAL_STATE" || true)
[ -z "$pid" ] || die "a selfheal daemon (pid $pid) still runs on $PREFIX$SELFHEAL_STATE; stop it first"

remove() {
    local path
    for path in "$@"; do
        if [ -e "$path" ] || [ -L "$path" ]; then
            rm -rf "$path"
            log "removed $path"
        fi
    done
}

remove "$PREFIX$SELFHEAL_UNIT" "$PREFIX$SELFHEAL_WRAPPER" "$PREFIX$SELFHEAL_OPT"
if [ -d "$PREFIX/etc/systemd/system/selfheal.service.d" ]; then
    if [ "$PURGE" = 1 ]; then
        remove "$PREFIX/etc/systemd/system/selfheal.service.d"
    else
        log "kept drop-ins in /etc/systemd/system/selfheal.service.d"
    fi
fi
if [ "$NO_SYSTEMCTL" = 0 ]; then
    systemctl daemon-reload
fi

if [ "$PURGE" = 1 ]; then
    remove "$PREFIX$SELFHEAL_ETC" "$PREFIX$SELFHEAL_STATE" "$PREFIX$SELFHEAL_BACKUPS"
    for leftover in "$PREFIX$SELFHEAL_STATE".pre-restore-*; do
        remove "$leftover"
    done
    if [ "$NO_USER" = 0 ] && getent passwd "$SERVICE_USER" >/dev/null; then
        userdel "$SERVICE_USER"
        log "removed user $SERVICE_USER"
    fi
else
    for kept in "$PREFIX$SELFHEAL_ETC" "$PREFIX$SELFHEAL_STATE" "$PREFIX$SELFHEAL_BACKUPS"; do
        if [ -e "$kept" ]; then log "kept $kept (--purge removes it)"; fi
    done
fi
log "done"
