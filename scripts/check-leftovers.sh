#!/usr/bin/env bash
# After `make test`: no queue, exchange or Redis key of a test namespace
# (`wft-…`, made by tests/it/common) may remain. Every test deletes its
# namespace when it ends, also when it fails; this checks that promise.
set -uo pipefail
cd "$(dirname "$0")/.."

say() { echo "[leftovers] $*" >&2; }

ctl=$(command -v rabbitmqctl || true)
if [[ -z $ctl ]]; then
  say "skipped: no rabbitmqctl on this machine to list queues and exchanges"
  exit 0
fi
left=$(
  {
    "$ctl" list_queues -q --no-table-headers name 2>/dev/null
    "$ctl" list_exchanges -q --no-table-headers name 2>/dev/null
    redis-cli -h 127.0.0.1 -p 6379 --scan --pattern 'wft-*' 2>/dev/null
  } | grep '^wft-' | sort -u
)
if [[ -n $left ]]; then
  say "test namespaces left behind ($(wc -l <<<"$left") queues, exchanges or keys):"
  head -20 <<<"$left" >&2
  echo "check-leftovers: 0 passed, 1 failed"
  exit 1
fi
echo "check-leftovers: 1 passed, 0 failed"
