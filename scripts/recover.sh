#!/bin/sh
# roadnode-recover: run by roadnode-recover.service when roadnode.service has failed for good
# (its start limit was hit, or it exited with a status that forbids restarts). Installed to
# /opt/roadnode/libexec/roadnode-recover. Decides, and says in the journal what it decided:
#   - invalid config (exit status 2): nothing; restarting or rebooting cannot fix a config.
#   - fewer than MAX_REBOOTS reboots in the last 24 h: reboot (a wedged camera, a driver, a
#     full /run: a reboot is what a technician would try first).
#   - otherwise: (re)start roadnode-retry.timer, which starts the node again in 30 minutes.
# Environment (for tests): SYSTEMCTL, RECOVER_STATE, MAX_REBOOTS, NOW (epoch seconds).
set -eu

SYSTEMCTL=${SYSTEMCTL:-systemctl}
STATE=${RECOVER_STATE:-/var/lib/roadnode-recover}
MAX_REBOOTS=${MAX_REBOOTS:-3}
NOW=${NOW:-$(date +%s)}
UNIT=roadnode.service
LOG="$STATE/reboots"

say() { echo "<$1>roadnode-recover: $2"; }

result=$($SYSTEMCTL show -p Result --value "$UNIT" 2>/dev/null || echo unknown)
code=$($SYSTEMCTL show -p ExecMainStatus --value "$UNIT" 2>/dev/null || echo "")

if [ "$result" = exit-code ] && [ "$code" = 2 ]; then
    say 3 "$UNIT stopped on an invalid config (exit 2): not restarting; fix /etc/roadnode/node.toml (console 'config' or a fleet config bundle)"
    exit 0
fi

mkdir -p "$STATE"
touch "$LOG"
# Keep reboots of the last 24 h. The board has no RTC: before NTP the clock may run behind or
# ahead by hours (fake-hwclock), so entries from the "future" are dropped too.
recent=$(awk -v now="$NOW" '$1 ~ /^[0-9]+$/ && $1 > now - 86400 && $1 <= now + 3600' "$LOG")
count=$(printf '%s' "$recent" | grep -c . || true)

if [ "$count" -lt "$MAX_REBOOTS" ]; then
    { [ -n "$recent" ] && printf '%s\n' "$recent"; echo "$NOW"; } > "$LOG.tmp"
    sync "$LOG.tmp" 2>/dev/null || sync
    mv -f "$LOG.tmp" "$LOG"
    say 2 "$UNIT failed ($result, status ${code:-none}): rebooting ($((count + 1)) of $MAX_REBOOTS in 24 h)"
    exec $SYSTEMCTL --no-block reboot
fi
say 2 "$UNIT failed ($result, status ${code:-none}): $count reboots in 24 h already, not rebooting; retrying in 30 minutes (roadnode-retry.timer)"
exec $SYSTEMCTL --no-block restart roadnode-retry.timer
