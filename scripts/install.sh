#!/bin/sh
# Install roadnode on Raspberry Pi OS Bookworm (Python 3.11): `sudo make install`, or run this
# script as root. Idempotent: running it again upgrades the code and changes nothing else; the
# config is never overwritten and the state dir is never touched. docs/operations.md, "Install".
#
#   system user    roadnode (systemd-sysusers, /etc/sysusers.d/roadnode.conf)
#   directories    /etc/roadnode, /var/lib/roadnode (systemd-tmpfiles, /etc/tmpfiles.d/roadnode.conf)
#   code           /opt/roadnode/venv (python3 -m venv --system-site-packages: sees picamera2)
#   config         /etc/roadnode/node.toml, only when absent
#   units          /etc/systemd/system/roadnode*.service, roadnode-retry.timer; enabled
#   polkit         /etc/polkit-1/rules.d/50-roadnode.rules, where polkit is installed
#
# Environment:
#   ROADNODE_ROOT  install into this directory instead of / (tests, image builds). systemd is
#                  then driven offline (systemctl --root, systemd-sysusers --root, ...) and no
#                  service is started. The venv's scripts point into ROADNODE_ROOT.
#   PYTHON         the interpreter for the venv (default /usr/bin/python3, 3.11 or newer)
#   PIP_ARGS       extra pip arguments, e.g. "--no-index --find-links /media/usb/wheels" offline
#   NODE_ID        node.id for a new config (default: the hostname)
#   CONSOLE_PORTS  serial consoles to enable (default "serial0"; "" for none), e.g. "serial0 ttyGS0"
#   ENABLE_AGENT, ENABLE_CONSOLE   auto (default: when the command exists), yes or no
#   START          1 (default on a real system): (re)start the node after installing
#   SMOKE          1 (default): run `roadnode --version` and `check-config` from the new venv
#   SYSTEMCTL, SYSUSERS, TMPFILES  the commands to use (tests may set them to `true`)
set -eu

ROOT=${ROADNODE_ROOT:-}
ROOT=${ROOT%/}
PYTHON=${PYTHON:-/usr/bin/python3}
PIP_ARGS=${PIP_ARGS:-}
CONSOLE_PORTS=${CONSOLE_PORTS-serial0}
ENABLE_AGENT=${ENABLE_AGENT:-auto}
ENABLE_CONSOLE=${ENABLE_CONSOLE:-auto}
SMOKE=${SMOKE:-1}
SYSTEMCTL=${SYSTEMCTL:-systemctl}
SYSUSERS=${SYSUSERS:-systemd-sysusers}
TMPFILES=${TMPFILES:-systemd-tmpfiles}
if [ -n "$ROOT" ]; then START=${START:-0}; else START=${START:-1}; fi

SRC=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=$ROOT/opt/roadnode
VENV=$PREFIX/venv
ETC=$ROOT/etc/roadnode
CONF=$ETC/node.toml
UNITDIR=$ROOT/etc/systemd/system
UNITS="roadnode.service roadnode-console@.service roadnode-agent.service roadnode-recover.service roadnode-retry.timer"

say() { echo "roadnode install: $*"; }
die() { echo "roadnode install: error: $*" >&2; exit 1; }
# systemd tools act on ROADNODE_ROOT when it is set
rooted() { if [ -n "$ROOT" ]; then "$@" --root="$ROOT"; else "$@"; fi; }

[ -n "$ROOT" ] || [ "$(id -u)" = 0 ] || die "run as root (sudo make install)"
if [ ! -f "$SRC/setup.cfg" ] || [ ! -d "$SRC/node" ]; then die "$SRC: not a roadnode source tree"; fi
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$PYTHON: Python 3.11 or newer is needed"
"$PYTHON" -c 'import venv, ensurepip' 2>/dev/null \
    || die "$PYTHON: the venv module is missing (apt install python3-venv)"

# --- user and directories --------------------------------------------------------------------
install -d -m 0755 "$ROOT/etc/sysusers.d" "$ROOT/etc/tmpfiles.d"
install -m 0644 "$SRC/systemd/sysusers.d/roadnode.conf" "$ROOT/etc/sysusers.d/roadnode.conf"
install -m 0644 "$SRC/systemd/tmpfiles.d/roadnode.conf" "$ROOT/etc/tmpfiles.d/roadnode.conf"
rooted "$SYSUSERS" roadnode.conf
rooted "$TMPFILES" --create roadnode.conf

# --- code ------------------------------------------------------------------------------------
install -d -m 0755 "$PREFIX" "$PREFIX/libexec" "$PREFIX/docs"
if ! "$VENV/bin/python" -c "" 2>/dev/null; then
    say "creating $VENV (with system site packages: picamera2 comes from apt)"
    "$PYTHON" -m venv --clear --system-site-packages "$VENV"
fi
# Build from a clean copy of the sources: never write build files into the checkout.
BUILD=$(mktemp -d "${TMPDIR:-/tmp}/roadnode-build.XXXXXX")
trap 'rm -rf "$BUILD"' EXIT
cp -R "$SRC/node" "$SRC/setup.cfg" "$SRC/pyproject.toml" "$SRC/README.md" "$BUILD/"
find "$BUILD" -name __pycache__ -prune -exec rm -rf {} +
say "installing roadnode into $VENV"
# A local directory is always reinstalled (same version or not); the pinned dependencies are
# installed only where missing or different (--upgrade's only-if-needed strategy).
# shellcheck disable=SC2086 # PIP_ARGS is a list of words on purpose
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --no-cache-dir \
    --upgrade $PIP_ARGS "$BUILD"
install -m 0755 "$SRC/scripts/recover.sh" "$PREFIX/libexec/roadnode-recover"
install -m 0644 "$SRC"/docs/*.md "$PREFIX/docs/"

# --- the release the node runs: fleet updates switch releases/current (docs/fleet-updates.md)
REL=$ROOT/var/lib/roadnode/fleet/releases
version=$(cd / && "$VENV/bin/python" -c 'import node; print(node.__version__)')
install -d -m 0750 "$REL"
if [ ! -e "$REL/$version" ] && [ ! -L "$REL/$version" ]; then
    ln -s /opt/roadnode "$REL/$version"
fi
if [ ! -e "$REL/current" ] && [ ! -L "$REL/current" ]; then
    ln -s "$version" "$REL/current"
    say "release $version is current"
fi
rooted "$TMPFILES" --create roadnode.conf # owner of the fleet folders

# --- config (never overwritten) --------------------------------------------------------------
if [ ! -e "$CONF" ]; then
    id=${NODE_ID:-$(hostname 2>/dev/null || echo roadnode)}
    id=$(printf '%s' "$id" | tr -c 'A-Za-z0-9._-' '-' | sed 's/^[^A-Za-z0-9]*//' | cut -c1-64)
    [ -n "$id" ] || id=roadnode
    sed "s/@NODE_ID@/$id/" "$SRC/scripts/node.toml.in" > "$CONF.new"
    chmod 0660 "$CONF.new"
    mv "$CONF.new" "$CONF"
    say "wrote $CONF (node.id = $id): provision it, see docs/operations.md"
else
    say "keeping $CONF"
fi
rooted "$TMPFILES" --create roadnode.conf # owner and mode of node.toml

# --- units -----------------------------------------------------------------------------------
install -d -m 0755 "$UNITDIR"
for unit in $UNITS; do
    install -m 0644 "$SRC/systemd/$unit" "$UNITDIR/$unit"
done
if [ -d "$ROOT/etc/polkit-1/rules.d" ] || [ -d "$ROOT/usr/share/polkit-1" ]; then
    install -d -m 0755 "$ROOT/etc/polkit-1/rules.d"
    install -m 0644 "$SRC/systemd/polkit/50-roadnode.rules" "$ROOT/etc/polkit-1/rules.d/"
else
    say "polkit not installed: the console and the agent cannot restart the node or reboot" \
        "(apt install polkitd)"
fi
[ -n "$ROOT" ] || "$SYSTEMCTL" daemon-reload

has_command() { # has_command NAME: `roadnode NAME --help` works in the new venv
    "$VENV/bin/roadnode" "$1" --help >/dev/null 2>&1
}
wanted() { # wanted SETTING NAME
    case $1 in
        yes) return 0 ;;
        no) return 1 ;;
        *) has_command "$2" ;;
    esac
}

rooted "$SYSTEMCTL" enable --quiet roadnode.service
if wanted "$ENABLE_AGENT" agent; then
    rooted "$SYSTEMCTL" enable --quiet roadnode-agent.service
else
    say "roadnode-agent.service not enabled (no 'roadnode agent' command in this version)"
fi
for port in $CONSOLE_PORTS; do
    if wanted "$ENABLE_CONSOLE" console; then
        rooted "$SYSTEMCTL" enable --quiet "roadnode-console@$port.service"
    else
        say "roadnode-console@$port.service not enabled (no 'roadnode console' command)"
    fi
done

if [ "$SMOKE" = 1 ]; then
    "$VENV/bin/roadnode" --version
    "$VENV/bin/roadnode" check-config "$CONF"
fi
if [ "$START" = 1 ]; then
    "$SYSTEMCTL" restart roadnode.service
    say "roadnode.service restarted: systemctl status roadnode"
fi
say "done"
