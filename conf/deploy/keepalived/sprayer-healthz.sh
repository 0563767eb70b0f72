#!/bin/sh
# keepalived vrrp_script for sprayer: exit 0 only when sprayer's /healthz answers 200.
# usage: sprayer-healthz.sh [URL] [MAX_SECONDS]
#   URL          default http://127.0.0.1:9100/healthz (admin.address of sprayer's config)
#   MAX_SECONDS  whole answer within this time, default 0.5: a hung sprayer must fail fast,
#                so that two failed checks (fall 2, one a second) stay under about 2.5 s.
# keepalived runs it as script_user; it must be owned by root and not writable by others.
url=${1:-http://127.0.0.1:9100/healthz}
max=${2:-0.5}
# --fail: a 503 (draining, stale snapshot, no usable server...) is a failure (exit 22).
exec curl --silent --fail --noproxy '*' --max-time "$max" --output /dev/null "$url"
