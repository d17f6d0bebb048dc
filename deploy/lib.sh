# Shared by the deploy scripts (sourced, never run): paths, messages, small helpers.
# shellcheck shell=bash disable=SC2034  # the variables are used by the scripts that source this
#
# Every path a script touches is "$PREFIX" + a target path, so `--prefix DIR` installs into a
# throwaway root (tests) and an empty prefix into the real system. Files written there refer to
# the target paths (/opt/selfheal, /etc/selfheal, /var/lib/selfheal), as on the real system;
# only the virtualenv is not relocatable (pip writes its own absolute path into it).

SELFHEAL_OPT=/opt/selfheal
SELFHEAL_ETC=/etc/selfheal
SELFHEAL_STATE=/var/lib/selfheal
SELFHEAL_BACKUPS=/var/backups/selfheal
SELFHEAL_UNIT=/etc/systemd/system/selfheal.service
SELFHEAL_WRAPPER=/usr/local/bin/selfheal
SELFHEAL_SERVICE=selfheal.service

PREFIX=""
SERVICE_USER=selfheal
NO_USER=0
NO_SYSTEMCTL=0

log() { printf '%s: %s\n' "${0##*/}" "$*"; }
warn() { printf '%s: warning: %s\n' "${0##*/}" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "${0##*/}" "$*" >&2
    exit "${DIE_CODE:-1}"
}

# set_prefix DIR: an absolute directory without a trailing slash ("" for the real root).
set_prefix() {
    case "$1" in
        /) PREFIX="" ;;
        /*) PREFIX="${1%/}" ;;
        *) die "--prefix needs an absolute path (got '$1')" ;;
    esac
}

# Outside the real root, users and systemctl would act on this machine, not on the prefix.
check_prefix_flags() {
    if [ -n "$PREFIX" ]; then
        [ "$NO_USER" = 1 ] || die "--prefix needs --no-user (users live in this machine's /etc/passwd)"
        [ "$NO_SYSTEMCTL" = 1 ] || die "--prefix needs --no-systemctl (systemctl acts on this machine)"
    fi
}

need_root() {
    if [ "$(id -u)" -ne 0 ] && { [ "$NO_USER" = 0 ] || [ "$NO_SYSTEMCTL" = 0 ]; }; then
        die "run as root (or pass --prefix DIR --no-user --no-systemctl for a throwaway root)"
    fi
}

# chown_to OWNER PATH...: only when the service user is managed here.
chown_to() {
    local owner=$1
    shift
    if [ "$NO_USER" = 0 ]; then
        chown "$owner" "$@"
    fi
}

systemctl_do() {
    if [ "$NO_SYSTEMCTL" = 1 ]; then
        log "skipped (--no-systemctl): systemctl $*"
        return 0
    fi
    systemctl "$@"
}

service_active() {
    [ "$NO_SYSTEMCTL" = 0 ] && systemctl is-active --quiet "$SELFHEAL_SERVICE"
}

# daemon_pid STATE_DIR: the pid in run/daemon.pid if that process is alive and is selfheal.
daemon_pid() {
    local file="$1/run/daemon.pid" pid
    [ -f "$file" ] || return 1
    pid=$(sed -n 's/.*"pid": *\([0-9][0-9]*\).*/\1/p' "$file")
    [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q selfheal || return 1
    printf '%s\n' "$pid"
}

# sha256_of FILE: the hex digest alone.
sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}
