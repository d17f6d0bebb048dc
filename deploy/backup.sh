#!/usr/bin/env bash
# Back up selfheal's state directory to one tar.gz with a manifest of sha256 sums.
#
#   deploy/backup.sh                            -> /var/backups/selfheal/selfheal-state-<UTC>.tar.gz
#   deploy/backup.sh --stop                     stop the service for the copy, start it again after
#   deploy/backup.sh --prefix DIR --no-systemctl   the state dir of a throwaway root
#
# The archive holds BACKUP-INFO (format, time, aliases), MANIFEST.sha256 (every file under
# state/) and state/: the registry, audit/, data/, jobs/, model_state.json, notify.json and
# whatever else is there, except run/ (sockets, pid files and the control token: the daemon
# makes new ones). Beside it, ARCHIVE.sha256 lets restore.sh refuse a damaged copy at once.
#
# With the daemon running the copy is taken in an order that keeps it consistent:
#   1. registry/current and registry/last_good first, then every published version
#      (versions are immutable once published and never deleted, so both aliases name a version
#      that is in the copy; half-built .staging-* directories are left out);
#   2. audit/: rotated files first, then audit.jsonl, then any file rotated meanwhile (audit.jsonl
#      is append-only; a line being written at that instant may be torn, and the daemon cuts a
#      torn tail when it starts on the restored copy);
#   3. model_state.json and notify.json (replaced atomically), then data/ and jobs/ (a retrain
#      job removed while being copied is only a warning).
# --stop takes an exact copy instead, at the cost of the service being down meanwhile.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: backup.sh [--prefix DIR] [--state-dir PATH] [--output FILE | --output-dir DIR]
                 [--stop] [--no-systemctl]

  --state-dir PATH   the state directory (default: /var/lib/selfheal under the prefix)
  --output FILE      the archive to write (default: <output-dir>/selfheal-state-<UTC>.tar.gz)
  --output-dir DIR   where the archive goes (default: /var/backups/selfheal under the prefix)
  --stop             stop the service during the copy and start it again afterwards
  --no-systemctl     never call systemctl (a throwaway root)
EOF
}

STATE=""
OUTPUT=""
OUTDIR=""
STOP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) set_prefix "${2:?--prefix needs a directory}"; shift ;;
        --state-dir) STATE="${2:?--state-dir needs a path}"; shift ;;
        --output) OUTPUT="${2:?--output needs a file}"; shift ;;
        --output-dir) OUTDIR="${2:?--output-dir needs a directory}"; shift ;;
        --stop) STOP=1 ;;
        --no-systemctl) NO_SYSTEMCTL=1 ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; DIE_CODE=2 die "unknown argument: $1" ;;
    esac
    shift
done
[ -n "$PREFIX" ] && NO_SYSTEMCTL=1
STATE=${STATE:-$PREFIX$SELFHEAL_STATE}
[ -d "$STATE" ] || die "no state directory at $STATE"
STATE=$(cd "$STATE" && pwd)
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ -z "$OUTPUT" ]; then
    OUTDIR=${OUTDIR:-$PREFIX$SELFHEAL_BACKUPS}
    mkdir -p "$OUTDIR"
    chmod 0700 "$OUTDIR"
    OUTPUT="$OUTDIR/selfheal-state-$STAMP.tar.gz"
fi
OUTDIR=$(cd "$(dirname "$OUTPUT")" && pwd)
OUTPUT="$OUTDIR/$(basename "$OUTPUT")"
[ -e "$OUTPUT" ] && die "$OUTPUT exists"

umask 077
STAGE=$(mktemp -d "$OUTDIR/.backup-$STAMP-XXXXXX")
STOPPED=0
cleanup() {
    rm -rf "$STAGE" "$OUTPUT.tmp"
    if [ "$STOPPED" = 1 ]; then
        log "starting selfheal again"
        systemctl start "$SELFHEAL_SERVICE"
    fi
}
trap cleanup EXIT

ONLINE=no
if [ "$STOP" = 1 ]; then
    if service_active; then
        log "stopping selfheal for the copy"
        systemctl stop "$SELFHEAL_SERVICE"
        STOPPED=1
    fi
    pid=$(daemon_pid "$STATE" || true)
    [ -z "$pid" ] || die "a selfheal daemon (pid $pid) still runs on $STATE; stop it first"
elif service_active || daemon_pid "$STATE" >/dev/null; then
    ONLINE=yes
    log "the daemon is running: copying in the safe order (see the comment at the top)"
fi
S="$STAGE/state"
mkdir -p "$S"

# 1. the registry: aliases, then the published versions.
if [ -d "$STATE/registry" ]; then
    mkdir -p "$S/registry"
    for alias in current last_good; do
        if [ -f "$STATE/registry/$alias" ]; then cp -p "$STATE/registry/$alias" "$S/registry/"; fi
    done
    for version in "$STATE"/registry/v[0-9]*; do
        if [ -d "$version" ]; then cp -a "$version" "$S/registry/"; fi
    done
    # Anything else a person or a later version keeps there, but never a half-built version.
    for entry in "$STATE"/registry/* "$STATE"/registry/.[!.]*; do
        name=$(basename "$entry")
        if [ ! -e "$entry" ] || [ -e "$S/registry/$name" ]; then continue; fi
        case "$name" in
            .staging-*) continue ;;
        esac
        cp -a "$entry" "$S/registry/"
    done
fi

# 2. the audit trail: rotated files, then the live file, then whatever rotated meanwhile.
# copy_rotated: copy rotated files not copied yet; prints how many.
copy_rotated() {
    local file name n=0
    for file in "$STATE"/audit/*; do
        name=$(basename "$file")
        if [ ! -f "$file" ] || [ "$name" = audit.jsonl ] || [ -e "$S/audit/$name" ]; then continue; fi
        # A plain rotated file may be compressed and removed between the test and the copy.
        if cp -p "$file" "$S/audit/" 2>/dev/null; then n=$((n + 1)); fi
    done
    echo "$n"
}
if [ -d "$STATE/audit" ]; then
    mkdir -p "$S/audit"
    copy_rotated >/dev/null
    for _ in 1 2 3; do
        if [ -f "$STATE/audit/audit.jsonl" ]; then cp -p "$STATE/audit/audit.jsonl" "$S/audit/"; fi
        [ "$(copy_rotated)" = 0 ] && break
    done
fi

# 3. everything else but run/ (runtime only) and what was copied above.
for entry in "$STATE"/* "$STATE"/.[!.]*; do
    [ -e "$entry" ] || continue
    name=$(basename "$entry")
    case "$name" in
        run | registry | audit) continue ;;
    esac
    if ! cp -a "$entry" "$S/" 2>"$STAGE/cp.err"; then
        if [ "$ONLINE" = yes ]; then
            warn "copying $name while the daemon runs: $(tr '\n' ' ' <"$STAGE/cp.err")"
        else
            die "cannot copy $entry: $(cat "$STAGE/cp.err")"
        fi
    fi
done
rm -f "$STAGE/cp.err"

odd=$(find "$S" ! -type f ! -type d | head -n 5)
[ -z "$odd" ] || die "unexpected non-regular files in the state directory: $odd"

(cd "$S" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -r sha256sum) >"$STAGE/MANIFEST.sha256"
files=$(wc -l <"$STAGE/MANIFEST.sha256")
version=""
if [ -x "$PREFIX$SELFHEAL_OPT/current/bin/selfheal" ] && [ -f "$PREFIX$SELFHEAL_OPT/current/INSTALL-INFO" ]; then
    version=$(sed -n 's/^version=//p' "$PREFIX$SELFHEAL_OPT/current/INSTALL-INFO")
fi
{
    echo "format=selfheal-backup 1"
    echo "created=$STAMP"
    echo "state_dir=$STATE"
    echo "host=$(hostname 2>/dev/null || echo unknown)"
    echo "selfheal_version=${version:-unknown}"
    echo "online=$ONLINE"
    echo "current=$(cat "$S/registry/current" 2>/dev/null || true)"
    echo "last_good=$(cat "$S/registry/last_good" 2>/dev/null || true)"
    echo "files=$files"
} >"$STAGE/BACKUP-INFO"

tar -C "$STAGE" -czf "$OUTPUT.tmp" BACKUP-INFO MANIFEST.sha256 state
mv "$OUTPUT.tmp" "$OUTPUT"
(cd "$OUTDIR" && sha256sum "$(basename "$OUTPUT")" >"$(basename "$OUTPUT").sha256")
log "wrote $OUTPUT ($files files, $(du -h "$OUTPUT" | cut -f1); sha256 in $(basename "$OUTPUT").sha256)"
