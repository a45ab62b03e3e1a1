#!/usr/bin/env bash
# After `make test`: no queue, exchange or Redis key of a namespace that this
# run's tests created may remain. Every test deletes its namespace when it
# ends, also when it fails; this checks that promise. The tests write each
# namespace they create to target/tmp/test-namespaces.txt (make test empties
# it first).
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "[leftovers] $*" >&2; }

list=${CARGO_TARGET_DIR:-target}/tmp/test-namespaces.txt
if [[ ! -s $list ]]; then
  say "no test namespaces recorded in $list"
  echo "check-leftovers: 0 passed, 1 failed"
  exit 1
fi
ctl=$(command -v rabbitmqctl || true)
if [[ -z $ctl ]]; then
  say "skipped: no rabbitmqctl on this machine to list queues and exchanges"
  exit 0
fi
names=$(
  {
    "$ctl" list_queues -q --no-table-headers name 2>/dev/null
    "$ctl" list_exchanges -q --no-table-headers name 2>/dev/null
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'wft-*' 2>/dev/null
  } | sort -u
)
# A name belongs to a namespace when it is the namespace plus '.' or ':'.
left=$(awk 'NR==FNR { ns[$1]; next } { n = $0; sub(/[.:].*/, "", n); if (n in ns) print }' \
  "$list" <(printf '%s\n' "$names"))
count=$(awk '{ print $1 }' "$list" | sort -u | wc -l)
if [[ -n $left ]]; then
  say "of $count test namespaces, these queues, exchanges or keys were left behind:"
  head -20 <<<"$left" >&2
  say "left by these tests:"
  awk 'NR==FNR { sub(/[.:].*/, ""); ns[$0]; next } ($1 in ns) { print "  " $0 }' \
    <(printf '%s\n' "$left") "$list" | sort -u | head -20 >&2
  echo "check-leftovers: 0 passed, 1 failed"
  exit 1
fi
say "all $count test namespaces of this run are gone"
echo "check-leftovers: 1 passed, 0 failed"
