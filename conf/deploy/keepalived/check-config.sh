#!/bin/sh
# Checks the pair's keepalived config before keepalived is (re)started: exit 0 = usable.
# usage: check-config.sh [CONFIG]      (default /etc/keepalived/keepalived.conf; run as root)
#
# keepalived drops a check script it will not run (not executable for script_user, writable by
# someone else than root, under a folder others can write) with a log line only, and the VIP
# then follows the process check alone. `keepalived -t` of 2.2.7 misses some of these, so this
# runs it and then checks the script named by the config's $CHECK_SCRIPT= and $SCRIPT_USER=.
set -u
conf=${1:-/etc/keepalived/keepalived.conf}
keepalived=${KEEPALIVED:-keepalived}

fail() {
  echo "check-config: $conf: $*" >&2
  exit 1
}

[ -r "$conf" ] || fail "cannot read the file"

out=$("$keepalived" -t -f "$conf" 2>&1)
rc=$?
# keepalived 2.2.7 ends `-t` by sending itself SIGTERM (status 143) after it has parsed a config
# whose scripts run as a non-root script_user; it has printed nothing then. Anything else that
# is not 0 is a rejected config.
if [ "$rc" -ne 0 ] && { [ "$rc" -ne 143 ] || [ -n "$out" ]; }; then
  printf '%s\n' "$out" >&2
  fail "keepalived -t rejects it (exit $rc)"
fi
[ -z "$out" ] || printf '%s\n' "$out" >&2

setting() { sed -n "s/^\\\$$1=//p" "$conf" | tail -n 1; }
script=$(setting CHECK_SCRIPT)
user=$(setting SCRIPT_USER)
[ -n "$script" ] || fail "no \$CHECK_SCRIPT= setting"
[ -n "$user" ] || fail "no \$SCRIPT_USER= setting"
id "$user" >/dev/null 2>&1 || fail "script_user $user does not exist (useradd -r -s /usr/sbin/nologin $user)"
[ -f "$script" ] || fail "check script $script: no such file"

# Owned by root and writable by root only: the script, then every folder above it.
path=$script
while :; do
  set -- $(stat -L -c '%u %A' "$path") || fail "cannot stat $path"
  [ "$1" = 0 ] || fail "$path is not owned by root"
  case "$2" in
    ?????w????|????????w?) fail "$path is writable by others than root" ;;
  esac
  [ "$path" = / ] && break
  path=$(dirname "$path")
done

setpriv --reuid="$user" --regid="$(id -g "$user")" --init-groups test -x "$script" ||
  fail "check script $script is not executable for $user"
echo "check-config: $conf: ok"
