#!/usr/bin/env bash
# Install (or upgrade) selfheal on this machine, or into a throwaway root with --prefix.
#
#   deploy/install.sh                      install: user, venv, config, unit, enable and start
#   deploy/install.sh --upgrade            new venv beside the old one, switch, restart; rolled back
#                                          if the new one fails its checks or does not start
#   deploy/install.sh --prefix DIR --no-user --no-systemctl   everything under DIR (tests)
#
# Idempotent: a second run changes nothing that is already right. It keeps an existing config
# and state, keeps the venv (only --upgrade builds a new one), replaces the unit only if the
# packaged one differs, and starts the service only if it is not running. It never writes in
# the state directory beyond creating it, so an upgrade leaves the registry and audit alone.
#
# Layout (target paths; with --prefix each is under DIR):
#   /opt/selfheal/venvs/selfheal-<version>-<UTC time>/  one virtualenv per install or upgrade
#   /opt/selfheal/current, previous                     symlinks to the serving and the last venv
#   /opt/selfheal/deploy/                               backup.sh, restore.sh, uninstall.sh
#   /opt/selfheal/share/doc/OPERATIONS.md
#   /etc/selfheal/config.toml (kept), config.toml.dist (the packaged defaults, always current)
#   /etc/systemd/system/selfheal.service
#   /usr/local/bin/selfheal                             the CLI, run as the service user
#   /var/lib/selfheal                                   state_dir (registry, audit, run, data)
#   /var/backups/selfheal                               backups (an upgrade makes one first)
#
# pip installs the project from the source tree (copied to a temp dir first, so the tree stays
# clean) with its dependencies from PyPI, or offline from a wheelhouse made by
# deploy/wheelhouse.sh (--wheel-dir DIR).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: install.sh [--upgrade] [--prefix DIR] [--no-user] [--no-systemctl] [--user NAME]
                  [--python PATH] [--wheel-dir DIR] [--source DIR] [--no-backup] [--no-compile]

  --upgrade        build a new venv from --source, check it, switch to it and restart;
                   the old venv is kept as /opt/selfheal/previous and used again on failure
  --prefix DIR     install under DIR instead of / (needs --no-user and --no-systemctl)
  --no-user        do not create the service user or change ownership
  --no-systemctl   do not run systemctl (daemon-reload, enable, start, restart)
  --user NAME      service user and group (default: selfheal)
  --python PATH    interpreter for the venv, 3.11 or newer (default: /usr/bin/python3); it
                   must not live under /root or /home, which the unit hides (ProtectHome=yes)
  --wheel-dir DIR  install offline from this wheelhouse (see deploy/wheelhouse.sh)
  --source DIR     the project's source tree (default: the tree this script is in)
  --no-backup      skip the backup of the state directory an upgrade takes first
  --no-compile     do not byte-compile the venv (saves half the install time; the service then
                   compiles in memory at every start, /opt being read-only to it: tests only)
EOF
}

UPGRADE=0
NO_BACKUP=0
COMPILE=1
PYTHON=""
WHEEL_DIR=""
SRC=$(cd "$HERE/.." && pwd)
while [ $# -gt 0 ]; do
    case "$1" in
        --upgrade) UPGRADE=1 ;;
        --prefix) set_prefix "${2:?--prefix needs a directory}"; shift ;;
        --no-user) NO_USER=1 ;;
        --no-systemctl) NO_SYSTEMCTL=1 ;;
        --no-backup) NO_BACKUP=1 ;;
        --no-compile) COMPILE=0 ;;
        --user) SERVICE_USER="${2:?--user needs a name}"; shift ;;
        --python) PYTHON="${2:?--python needs a path}"; shift ;;
        --wheel-dir) WHEEL_DIR=$(cd "${2:?--wheel-dir needs a directory}" && pwd); shift ;;
        --source) SRC=$(cd "${2:?--source needs a directory}" && pwd); shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; DIE_CODE=2 die "unknown argument: $1" ;;
    esac
    shift
done
check_prefix_flags
need_root

OPT=$PREFIX$SELFHEAL_OPT
ETC=$PREFIX$SELFHEAL_ETC
STATE=$PREFIX$SELFHEAL_STATE
CONFIG=$ETC/config.toml

# ----- checks before anything is written ---------------------------------------------------
if ! grep -qs '^name = "selfheal"' "$SRC/pyproject.toml"; then
    die "$SRC is not the selfheal source tree (no pyproject.toml naming selfheal)"
fi
for needed in config.toml systemd/selfheal.service docs/OPERATIONS.md; do
    [ -f "$SRC/$needed" ] || die "$SRC/$needed is missing"
done
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$SRC/pyproject.toml")
[ -n "$VERSION" ] || die "no version in $SRC/pyproject.toml"

if [ -z "$PYTHON" ]; then
    if [ -x /usr/bin/python3 ]; then PYTHON=/usr/bin/python3; else PYTHON=$(command -v python3 || true); fi
fi
if [ -z "$PYTHON" ] || [ ! -x "$PYTHON" ]; then die "no python3 found; pass --python PATH"; fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
    die "$PYTHON is older than Python 3.11"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null ||
    die "$PYTHON cannot create virtualenvs (on Debian: apt-get install python3-venv)"
BASE_PREFIX=$("$PYTHON" -c 'import os, sys; print(os.path.realpath(sys.base_prefix))')
case "$BASE_PREFIX/" in
    /root/* | /home/*) die "$PYTHON lives in $BASE_PREFIX, which the unit hides (ProtectHome=yes); pass --python /usr/bin/python3" ;;
esac

mkdir -p "$OPT"
exec 9>>"$OPT/.lock"
flock -n 9 || die "another install or upgrade is running (lock $OPT/.lock)"

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# install_file SOURCE DEST MODE: replace DEST only if it differs; prints "changed" if it did.
install_file() {
    local src=$1 dest=$2 mode=$3
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        if [ "$(stat -c %a "$dest")" != "${mode#0}" ]; then chmod "$mode" "$dest"; fi
        return 0
    fi
    mkdir -p "$(dirname "$dest")"
    install -m "$mode" "$src" "$dest.new.$$"
    mv -f "$dest.new.$$" "$dest"
    echo changed
}

# ----- the service user ---------------------------------------------------------------------
if [ "$NO_USER" = 0 ]; then
    if getent passwd "$SERVICE_USER" >/dev/null; then
        log "user $SERVICE_USER exists"
    else
        useradd --system --user-group --home-dir "$SELFHEAL_STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "selfheal model service" "$SERVICE_USER"
        log "created system user $SERVICE_USER"
    fi
fi

# ----- directories --------------------------------------------------------------------------
mkdir -p "$OPT/venvs" "$OPT/deploy" "$OPT/share/doc" "$ETC" "$STATE" "$PREFIX$SELFHEAL_BACKUPS"
chmod 0755 "$OPT" "$OPT/venvs" "$OPT/deploy"
chmod 0750 "$ETC"
chmod 0700 "$STATE" "$PREFIX$SELFHEAL_BACKUPS"
chown_to "root:$SERVICE_USER" "$ETC"
chown_to "$SERVICE_USER:$SERVICE_USER" "$STATE"

# ----- config: the packaged defaults with the state dir of a system install -----------------
sed 's|^state_dir = "[^"]*"|state_dir = "/var/lib/selfheal"|' "$SRC/config.toml" >"$TMP/config.toml"
grep -q '^state_dir = "/var/lib/selfheal"' "$TMP/config.toml" ||
    die "could not set state_dir in $SRC/config.toml"
if [ -f "$CONFIG" ]; then
    log "kept $CONFIG"
else
    install -m 0640 "$TMP/config.toml" "$CONFIG"
    chown_to "root:$SERVICE_USER" "$CONFIG"
    log "wrote $CONFIG (state_dir /var/lib/selfheal)"
fi

# ----- the virtualenv -----------------------------------------------------------------------
# build_venv: a new venv with the project installed; prints its path.
build_venv() {
    local stamp name dir n=1
    stamp=$(date -u +%Y%m%dT%H%M%SZ)
    name="selfheal-$VERSION-$stamp"
    while [ -e "$OPT/venvs/$name" ]; do
        n=$((n + 1))
        name="selfheal-$VERSION-$stamp-$n"
    done
    dir="$OPT/venvs/$name"
    mkdir -p "$TMP/src"
    # Only what the build needs, so pip never writes build/ or *.egg-info into the tree.
    cp -a "$SRC/pyproject.toml" "$SRC/README.md" "$SRC/selfheal_daemon" "$SRC/service" "$TMP/src/"
    find "$TMP/src" -name __pycache__ -prune -exec rm -rf {} +
    log "creating $dir" >&2
    "$PYTHON" -m venv "$dir" >&2
    local pip=("$dir/bin/python" -m pip install --quiet --no-input --disable-pip-version-check)
    if [ -n "$WHEEL_DIR" ]; then
        pip+=(--no-index --find-links "$WHEEL_DIR")
    fi
    if [ "$COMPILE" = 0 ]; then
        pip+=(--no-compile)
    fi
    if ! "${pip[@]}" "$TMP/src" >&2; then
        rm -rf "$dir"
        die "pip could not install selfheal $VERSION into $dir (removed)"
    fi
    printf 'version=%s\ninstalled=%s\nsource=%s\nwheel_dir=%s\npython=%s\ncompiled=%s\n' \
        "$VERSION" "$stamp" "$SRC" "${WHEEL_DIR:-PyPI}" "$PYTHON" "$COMPILE" >"$dir/INSTALL-INFO"
    printf '%s\n' "$dir"
}

# check_venv DIR: the new venv validates the installed config and imports everything it runs.
check_venv() {
    local dir=$1 out
    if ! out=$("$dir/bin/selfheal" check-config "$CONFIG" 2>&1); then
        printf '%s\n' "$out" >&2
        return 1
    fi
    "$dir/bin/python" -c 'import selfheal_daemon.daemon.runner, selfheal_daemon.model.retrain, service.app, service.template' ||
        return 1
    log "$dir: $out"
}

# point LINK TARGET: replace a symlink atomically (a relative target, so the tree can be moved).
point() {
    ln -sfn "venvs/$(basename "$2")" "$OPT/.$1.new"
    mv -Tf "$OPT/.$1.new" "$OPT/$1"
}

OLD=""
if [ -L "$OPT/current" ] && [ -x "$OPT/current/bin/selfheal" ]; then
    OLD=$(readlink -f "$OPT/current")
fi
PREVIOUS_BEFORE=$(readlink -f "$OPT/previous" 2>/dev/null || true)

RESTART=0
if [ -n "$OLD" ] && [ "$UPGRADE" = 0 ]; then
    log "kept venv $(basename "$OLD") (--upgrade builds a new one)"
else
    if [ "$UPGRADE" = 1 ] && [ -z "$OLD" ]; then
        log "nothing installed yet: --upgrade installs"
    fi
    NEW=$(build_venv)
    if ! check_venv "$NEW"; then
        rm -rf "$NEW"
        if [ -n "$OLD" ]; then
            die "the new venv failed its checks and was removed; still on $(basename "$OLD")"
        fi
        die "the new venv failed its checks and was removed"
    fi
    if [ -n "$OLD" ]; then
        if [ "$NO_BACKUP" = 0 ]; then
            backup=("$HERE/backup.sh" --output-dir "$PREFIX$SELFHEAL_BACKUPS")
            if [ -n "$PREFIX" ]; then backup+=(--prefix "$PREFIX"); fi
            if [ "$NO_SYSTEMCTL" = 1 ]; then backup+=(--no-systemctl); fi
            "${backup[@]}" ||
                { rm -rf "$NEW"; die "the backup before the upgrade failed; nothing changed"; }
        fi
        point previous "$OLD"
        RESTART=1
    fi
    point current "$NEW"
    log "current -> $(basename "$NEW")"
fi

# ----- the unit, the CLI wrapper, docs, scripts: only once the venv is known good -----------
install_file "$TMP/config.toml" "$ETC/config.toml.dist" 0644 >/dev/null
if [ -f "$PREFIX$SELFHEAL_UNIT" ]; then cp -p "$PREFIX$SELFHEAL_UNIT" "$TMP/unit.before"; fi
sed -e "s/^User=selfheal\$/User=$SERVICE_USER/" -e "s/^Group=selfheal\$/Group=$SERVICE_USER/" \
    "$SRC/systemd/selfheal.service" >"$TMP/selfheal.service"
UNIT_CHANGED=$(install_file "$TMP/selfheal.service" "$PREFIX$SELFHEAL_UNIT" 0644)
if [ -n "$UNIT_CHANGED" ]; then log "installed $SELFHEAL_UNIT"; else log "unit unchanged"; fi

cat >"$TMP/wrapper" <<EOF
#!/bin/sh
# The selfheal CLI for operators (installed by deploy/install.sh). It runs as the service user,
# so whatever it writes in the state directory stays the daemon's, and reads the installed config.
SELFHEAL_CONFIG=\${SELFHEAL_CONFIG:-$SELFHEAL_ETC/config.toml}
export SELFHEAL_CONFIG
bin=$SELFHEAL_OPT/current/bin/selfheal
if [ "\$(id -un)" = "$SERVICE_USER" ]; then
    exec "\$bin" "\$@"
elif [ "\$(id -u)" -eq 0 ]; then
    exec runuser -u "$SERVICE_USER" -- env SELFHEAL_CONFIG="\$SELFHEAL_CONFIG" "\$bin" "\$@"
fi
echo "selfheal: run this as root (sudo selfheal ...) or as $SERVICE_USER" >&2
exit 2
EOF
install_file "$TMP/wrapper" "$PREFIX$SELFHEAL_WRAPPER" 0755 >/dev/null
install_file "$SRC/docs/OPERATIONS.md" "$OPT/share/doc/OPERATIONS.md" 0644 >/dev/null
for script in lib.sh backup.sh restore.sh uninstall.sh; do
    mode=0755
    [ "$script" = lib.sh ] && mode=0644
    install_file "$SRC/deploy/$script" "$OPT/deploy/$script" "$mode" >/dev/null
done

# ----- systemd ------------------------------------------------------------------------------
if [ "$NO_SYSTEMCTL" = 0 ] && command -v systemd-analyze >/dev/null; then
    if ! out=$(systemd-analyze verify "$PREFIX$SELFHEAL_UNIT" 2>&1) || [ -n "$out" ]; then
        warn "systemd-analyze verify: $out"
    fi
fi
if [ -n "$UNIT_CHANGED" ]; then
    systemctl_do daemon-reload
fi
systemctl_do enable "$SELFHEAL_SERVICE"
if [ "$RESTART" = 1 ]; then
    log "restarting on the new venv (waits for READY)"
    if ! systemctl_do restart "$SELFHEAL_SERVICE"; then
        warn "the service did not start on $(basename "$NEW"): rolling back to $(basename "$OLD")"
        point current "$OLD"
        if [ -n "$UNIT_CHANGED" ] && [ -f "$TMP/unit.before" ]; then
            install -m 0644 "$TMP/unit.before" "$PREFIX$SELFHEAL_UNIT"
            systemctl_do daemon-reload
        fi
        if [ -n "$PREVIOUS_BEFORE" ] && [ -d "$PREVIOUS_BEFORE" ]; then
            point previous "$PREVIOUS_BEFORE"
        else
            rm -f "$OPT/previous"
        fi
        rm -rf "$NEW"
        systemctl_do restart "$SELFHEAL_SERVICE" || warn "the old venv did not start either"
        die "upgrade rolled back to $(basename "$OLD"); see journalctl -u selfheal"
    fi
elif service_active; then
    log "selfheal is running"
else
    log "starting selfheal (the first start trains a model: minutes; journalctl -fu selfheal)"
    systemctl_do start "$SELFHEAL_SERVICE"
fi

# Keep the serving venv and the one before it; older ones are no longer needed.
keep_current=$(readlink -f "$OPT/current")
keep_previous=$(readlink -f "$OPT/previous" 2>/dev/null || true)
for dir in "$OPT/venvs"/*; do
    [ -d "$dir" ] || continue
    real=$(readlink -f "$dir")
    if [ "$real" != "$keep_current" ] && [ "$real" != "$keep_previous" ]; then
        rm -rf "$dir"
        log "removed old venv $(basename "$dir")"
    fi
done
log "done: selfheal $(sed -n 's/^version=//p' "$OPT/current/INSTALL-INFO") in $OPT/current"
