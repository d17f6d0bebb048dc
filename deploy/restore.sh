#!/usr/bin/env bash
# Restore selfheal's state directory from an archive made by deploy/backup.sh.
#
#   systemctl stop selfheal
#   deploy/restore.sh /var/backups/selfheal/selfheal-state-<UTC>.tar.gz
#   systemctl start selfheal
#
# Refuses, changing nothing, when: the archive's sha256 differs from ARCHIVE.sha256 beside it,
# gzip or tar finds it damaged, it holds anything but regular files and directories under
# state/ (or a path with ".."), a file's sha256 differs from MANIFEST.sha256 or a file is not
# listed there, an alias names a version that is not in it, the installed selfheal finds a
# model artifact that fails its checksum (`selfheal models verify`), or the daemon is running.
# The state directory it replaces is kept beside it as <state>.pre-restore-<UTC>.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=deploy/lib.sh
. "$HERE/lib.sh"

usage() {
    cat <<'EOF'
usage: restore.sh [--prefix DIR] [--state-dir PATH] [--user NAME] [--no-user]
                  [--no-systemctl] ARCHIVE

  --state-dir PATH   the state directory to replace (default: /var/lib/selfheal under the prefix)
  --user NAME        owner of the restored files (default: selfheal)
  --no-user          leave ownership as extracted (a throwaway root)
  --no-systemctl     do not ask systemctl whether the service runs (a throwaway root)
EOF
}

STATE=""
ARCHIVE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --prefix) set_prefix "${2:?--prefix needs a directory}"; shift ;;
        --state-dir) STATE="${2:?--state-dir needs a path}"; shift ;;
        --user) SERVICE_USER="${2:?--user needs a name}"; shift ;;
        --no-user) NO_USER=1 ;;
        --no-systemctl) NO_SYSTEMCTL=1 ;;
        -h | --help) usage; exit 0 ;;
        -*) usage >&2; DIE_CODE=2 die "unknown argument: $1" ;;
        *) [ -z "$ARCHIVE" ] || DIE_CODE=2 die "one archive only"; ARCHIVE=$1 ;;
    esac
    shift
done
[ -n "$ARCHIVE" ] || { usage >&2; DIE_CODE=2 die "which archive?"; }
[ -f "$ARCHIVE" ] || die "no archive at $ARCHIVE"
check_prefix_flags
STATE=${STATE:-$PREFIX$SELFHEAL_STATE}
STATE=${STATE%/}
PARENT=$(dirname "$STATE")
[ -d "$PARENT" ] || die "$PARENT does not exist"

# Exit code 3 for every way the archive can be damaged, so scripts can tell it from misuse.
damaged() { DIE_CODE=3 die "refusing $ARCHIVE: $*"; }

# 1. The archive as a whole.
if [ -f "$ARCHIVE.sha256" ]; then
    expected=$(cut -d' ' -f1 <"$ARCHIVE.sha256")
    [ "$(sha256_of "$ARCHIVE")" = "$expected" ] || damaged "its sha256 differs from $ARCHIVE.sha256"
else
    warn "no $ARCHIVE.sha256 beside the archive: relying on gzip and the manifest alone"
fi
listing=$(tar -tvzf "$ARCHIVE" 2>&1) || damaged "tar cannot read it: $(printf '%s' "$listing" | tail -n 2)"
names=$(tar -tzf "$ARCHIVE" 2>&1) || damaged "tar cannot list it"
if printf '%s\n' "$listing" | cut -c1 | grep -qv '^[-d]$'; then
    damaged "it holds something other than regular files and directories"
fi
while IFS= read -r name; do
    case "/$name/" in
        */../*) damaged "it holds a path with '..': $name" ;;
    esac
    case "${name#./}" in
        BACKUP-INFO | MANIFEST.sha256 | state | state/ | state/*) ;;
        *) damaged "unexpected member $name" ;;
    esac
done <<<"$names"

# 2. Nothing may run on the state directory we are about to replace.
if service_active; then
    die "selfheal is running: systemctl stop selfheal first"
fi
if pid=$(daemon_pid "$STATE"); then
    die "a selfheal daemon (pid $pid) runs on $STATE: stop it first"
fi

# 3. Extract beside the state dir (same filesystem: the swap below is two renames) and check.
WORK=$(mktemp -d "$PARENT/.selfheal-restore-XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar -xzf "$ARCHIVE" -C "$WORK" --no-same-owner || damaged "tar could not extract it"
grep -qsx 'format=selfheal-backup 1' "$WORK/BACKUP-INFO" || damaged "no BACKUP-INFO of format 1"
if [ ! -f "$WORK/MANIFEST.sha256" ] || [ ! -d "$WORK/state" ]; then damaged "no manifest or no state/"; fi
(cd "$WORK/state" && sha256sum --check --strict --quiet ../MANIFEST.sha256) >"$WORK/check.out" 2>&1 ||
    damaged "files differ from the manifest: $(head -n 5 "$WORK/check.out" | tr '\n' ' ')"
listed=$(sed 's/^[0-9a-f]\{64\}  //' "$WORK/MANIFEST.sha256" | LC_ALL=C sort)
present=$(cd "$WORK/state" && find . -type f | LC_ALL=C sort)
[ "$listed" = "$present" ] || damaged "files in it are missing from the manifest, or the other way round"
for alias in current last_good; do
    file="$WORK/state/registry/$alias"
    [ -f "$file" ] || continue
    version=$(tr -d '[:space:]' <"$file")
    case "$version" in
        v[0-9]*) ;;
        *) damaged "registry/$alias names '$version'" ;;
    esac
    [ -f "$WORK/state/registry/$version/meta.json" ] ||
        damaged "registry/$alias names $version, which is not in the archive"
done
CLI="$PREFIX$SELFHEAL_OPT/current/bin/selfheal"
if [ -x "$CLI" ] && [ -d "$WORK/state/registry" ]; then
    # Only the versions the aliases name must pass: a corrupt-artifact drill leaves a damaged
    # version in the registry on purpose, and a faithful backup carries it.
    printf 'state_dir = "%s"\n' "$WORK/state" >"$WORK/verify.toml"
    "$CLI" models verify --config "$WORK/verify.toml" >"$WORK/verify.out" 2>&1 || true
    for alias in current last_good; do
        [ -f "$WORK/state/registry/$alias" ] || continue
        version=$(tr -d '[:space:]' <"$WORK/state/registry/$alias")
        grep -qx "$version: OK" "$WORK/verify.out" ||
            damaged "registry/$alias names $version, which fails selfheal models verify:" \
                "$(grep "^$version:" "$WORK/verify.out" || tail -n 3 "$WORK/verify.out")"
    done
    if grep -q FAILED "$WORK/verify.out"; then
        warn "versions no alias names fail their checksum (drills leave such): $(grep FAILED "$WORK/verify.out" | tr '\n' ' ')"
    fi
    log "registry verified: $(tail -n 1 "$WORK/verify.out")"
fi

# 4. Swap: the old state dir stays beside the new one until someone removes it.
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
if [ -e "$STATE" ]; then
    aside="$STATE.pre-restore-$STAMP"
    n=1
    while [ -e "$aside" ]; do
        n=$((n + 1))
        aside="$STATE.pre-restore-$STAMP-$n"
    done
    mv "$STATE" "$aside"
    log "kept the state it replaces as $aside"
fi
mv "$WORK/state" "$STATE"
chmod 0700 "$STATE"
if [ "$NO_USER" = 0 ]; then chown -R "$SERVICE_USER:$SERVICE_USER" "$STATE"; fi
log "restored $STATE from $ARCHIVE ($(sed -n 's/^files=//p' "$WORK/BACKUP-INFO") files," \
    "current $(sed -n 's/^current=//p' "$WORK/BACKUP-INFO"), taken $(sed -n 's/^created=//p' "$WORK/BACKUP-INFO"))"
if [ "$NO_SYSTEMCTL" = 0 ]; then
    log "start it: systemctl start selfheal"
fi
