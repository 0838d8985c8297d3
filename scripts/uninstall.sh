#!/bin/sh
# Remove what scripts/install.sh installed: `sudo make uninstall`, or run this as root.
# Kept unless PURGE=1: the evidence and keys in /var/lib/roadnode, the config in /etc/roadnode
# and the roadnode user (files may still belong to it). PURGE=1 removes those too.
# Environment: ROADNODE_ROOT, SYSTEMCTL as for install.sh; USERDEL (default userdel).
set -eu

ROOT=${ROADNODE_ROOT:-}
ROOT=${ROOT%/}
PURGE=${PURGE:-0}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
USERDEL=${USERDEL:-userdel}
UNITDIR=$ROOT/etc/systemd/system
UNITS="roadnode.service roadnode-agent.service roadnode-recover.service roadnode-retry.timer"

say() { echo "roadnode uninstall: $*"; }
die() { echo "roadnode uninstall: error: $*" >&2; exit 1; }
rooted() { if [ -n "$ROOT" ]; then "$@" --root="$ROOT"; else "$@"; fi; }

[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo make uninstall)"

# Enabled console instances: their links live in dev-*.device.wants/.
consoles=""
for link in "$UNITDIR"/*.wants/roadnode-console@*.service; do
    [ -e "$link" ] || [ -L "$link" ] || continue
    consoles="$consoles ${link##*/}"
done

if [ -z "$ROOT" ]; then
    # shellcheck disable=SC2086 # lists of unit names
    "$SYSTEMCTL" stop $UNITS $consoles 2>/dev/null || true
fi
for unit in $UNITS $consoles; do
    if [ -e "$UNITDIR/${unit%%@*}@.service" ] || [ -e "$UNITDIR/$unit" ]; then
        rooted "$SYSTEMCTL" disable --quiet "$unit" 2>/dev/null || true
    fi
done
for unit in $UNITS roadnode-console@.service; do
    rm -f "$UNITDIR/$unit"
done
rm -f "$ROOT/etc/polkit-1/rules.d/50-roadnode.rules"
rm -rf "$ROOT/opt/roadnode"
rm -f "$ROOT/etc/tmpfiles.d/roadnode.conf"
[ -n "$ROOT" ] || "$SYSTEMCTL" daemon-reload
[ -n "$ROOT" ] || "$SYSTEMCTL" reset-failed 2>/dev/null || true

if [ "$PURGE" = 1 ]; then
    rm -rf "$ROOT/var/lib/roadnode" "$ROOT/var/lib/roadnode-recover" "$ROOT/etc/roadnode"
    if grep -q '^roadnode:' "$ROOT/etc/passwd" 2>/dev/null; then
        if [ -n "$ROOT" ]; then "$USERDEL" --root "$ROOT" roadnode; else "$USERDEL" roadnode; fi
    fi
    # the group goes with the user (USERGROUPS_ENAB); remove it if it stayed
    if grep -q '^roadnode:' "$ROOT/etc/group" 2>/dev/null; then
        if [ -n "$ROOT" ]; then groupdel --root "$ROOT" roadnode; else groupdel roadnode; fi
    fi
    rm -f "$ROOT/etc/sysusers.d/roadnode.conf"
    say "purged: evidence, keys, config and the roadnode user are gone"
else
    # sysusers.d stays with the user it describes
    say "kept /var/lib/roadnode (evidence, keys), /etc/roadnode (config) and the roadnode user;" \
        "PURGE=1 removes them"
fi
say "done"
