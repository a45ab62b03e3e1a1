#!/usr/bin/env bash
# Property-tests the running admin API against docs/openapi.yaml with
# schemathesis: every documented operation but the test call, positive and
# negative data, all checks (no 5xx, documented status codes, content types
# and response schemas, negative data rejected, auth not ignored).
#
# Needs RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379), as `make
# services` provides, and a built binary: BIN (default target/debug/webhook-fanout).
# Runs in its own random namespace `fuzz-<hex>` and removes its Redis keys and
# RabbitMQ queues and exchanges on exit. Exits non-zero when schemathesis finds
# a failure; the last line is `api-fuzz: N passed, M failed`.
#
# Knobs: FUZZ_MAX_EXAMPLES (30 per operation and data kind), FUZZ_SEED,
# FUZZ_VENV (.venv-fuzz), WF_AMQP_URL, WF_REDIS_URL.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-target/debug/webhook-fanout}
SPEC=$ROOT/docs/openapi.yaml
VENV=${FUZZ_VENV:-$ROOT/.venv-fuzz}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-30}
SEED=${FUZZ_SEED:-20251126}
SCHEMATHESIS_REQ='schemathesis>=3.30,<4'
# hypothesis-jsonschema 0.23 (what schemathesis 3 uses) calls the internal
# `many.more()`, which hypothesis 6.170.10 removed.
HYPOTHESIS_REQ='hypothesis<6.170.10'

say() { echo "[api-fuzz] $*" >&2; }

[[ -x $BIN ]] || { say "no executable at $BIN (build it, or set BIN)"; exit 2; }
BIN=$(cd "$(dirname "$BIN")" && pwd)/$(basename "$BIN")

# --- schemathesis, in a project-local virtualenv, installed once -----------
installed() {
  "$VENV/bin/schemathesis" --version >/dev/null 2>&1 &&
    "$VENV/bin/python" -c 'from hypothesis.internal.conjecture.utils import many; many.more' 2>/dev/null
}
if ! installed; then
  say "installing $SCHEMATHESIS_REQ $HYPOTHESIS_REQ into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "$SCHEMATHESIS_REQ" "$HYPOTHESIS_REQ"
  installed || { say "schemathesis does not work in $VENV"; exit 2; }
fi
ST_VERSION=$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))')

# --- the service under test -------------------------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NS=fuzz-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
OPERATOR=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
BASE=http://127.0.0.1:$PORT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/api-fuzz.XXXXXX")
PID=

cleanup() {
  local rc=$?
  set +e
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null
    wait "$PID" 2>/dev/null
  fi
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli --scan --pattern "$NS:*" | xargs -r redis-cli del >/dev/null
  fi
  if command -v rabbitmqctl >/dev/null 2>&1; then
    # One `rabbitmqctl eval` deletes the namespace's queues (ingest, deliver,
    # rejected, the dead-letter stream, every retry tier) and its two
    # exchanges; rabbitmqadmin needs the management plugin, which may be off.
    # Should eval fail (another RabbitMQ version), delete the queues one by
    # one and leave the two (empty, unbound) exchanges `$NS.events` and
    # `$NS.deliveries` behind.
    if ! rabbitmqctl eval "
        P = <<\"$NS.\">>, N = byte_size(P),
        [rabbit_amqqueue:delete(Q, false, false, <<\"api-fuzz\">>)
          || Q <- rabbit_amqqueue:list(<<\"/\">>),
             binary:longest_common_prefix([element(4, amqqueue:get_name(Q)), P]) =:= N],
        [rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<P/binary, X/binary>>), false, <<\"api-fuzz\">>)
          || X <- [<<\"events\">>, <<\"deliveries\">>]],
        ok." >/dev/null 2>&1; then
      rabbitmqctl list_queues -q --no-table-headers name 2>/dev/null |
        awk -v p="$NS." 'index($1, p) == 1 {print $1}' |
        while read -r q; do rabbitmqctl delete_queue "$q" >/dev/null 2>&1; done
    fi
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Outbound safety: nothing fuzzed may make the service connect anywhere but
# loopback. The test call (POST .../test) delivers to the webhook's URL, which
# fuzzing can set to any host, so it is excluded below. WF_ROLES=api runs no
# ingest or delivery consumer, so nothing else delivers (and a dead-letter
# replay only publishes to RabbitMQ). Creating or updating a webhook validates
# its URL, which resolves a host name (DNS, no connection); when we may
# (root, util-linux unshare), the service runs in a private mount namespace
# whose /etc/resolv.conf points at 127.0.0.1, so even those lookups stay on
# this machine (and fail fast: nothing answers DNS there).
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$WORK/resolv.conf"
launch=()
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null 2>&1 &&
   unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf' "$WORK/resolv.conf" 2>/dev/null; then
  launch=(unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$WORK/resolv.conf")
else
  say "cannot isolate DNS (needs root and unshare): URL host names will be resolved by the system resolver"
fi

say "starting $BIN on $BASE, namespace $NS"
WF_NAMESPACE=$NS \
WF_HTTP_ADDR=127.0.0.1:$PORT \
WF_ADMIN_TOKEN=$OPERATOR \
WF_ALLOW_HTTP=true \
WF_ALLOW_PRIVATE_TARGETS=true \
WF_ROLES=api \
WF_SHUTDOWN_TIMEOUT=3s \
RUST_LOG=warn \
  "${launch[@]}" "$BIN" serve >"$WORK/service.log" 2>&1 &
PID=$!

deadline=$((SECONDS + 30))
until [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz" || true) == 200 ]]; do
  if ! kill -0 "$PID" 2>/dev/null || ((SECONDS >= deadline)); then
    say "the service did not become ready within 30 s; its log:"
    cat "$WORK/service.log" >&2
    exit 1
  fi
  sleep 0.2
done

# --- fixtures: one application token, two webhooks ---------------------------
APP=fuzz-app
api() { # method path [json]: prints the body, fails on a non-2xx status
  curl -sS --fail-with-body -X "$1" "$BASE$2" \
    -H "Authorization: Bearer $OPERATOR" -H 'Content-Type: application/json' \
    ${3:+--data "$3"}
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

APP_TOKEN=$(api POST "/v1/applications/$APP/tokens" '{"role": "admin"}' | field token)
# Port 9 (discard) on loopback: never delivered to (no delivery consumer runs,
# and the test call is excluded), but a valid URL with WF_ALLOW_PRIVATE_TARGETS.
HOOK='{"url": "http://127.0.0.1:9/hook", "name": "fuzz", "events": ["item.created", "transfer.updated"]}'
WEBHOOK_ID=$(api POST "/v1/applications/$APP/webhooks" "$HOOK" | field id)
DOOMED_ID=$(api POST "/v1/applications/$APP/webhooks" "$HOOK" | field id)
# The application token works (and lists both webhooks).
curl -sS --fail-with-body "$BASE/v1/applications/$APP/webhooks" \
  -H "Authorization: Bearer $APP_TOKEN" | python3 -c 'import json, sys; assert len(json.load(sys.stdin)) == 2'

# Half of the generated {app}/{id} path parameters (chosen from the generated
# values, so runs stay reproducible) are replaced by the fixtures, so the
# operations on one webhook also reach an existing one; DELETE gets its own
# webhook so that the others keep theirs.
cat >"$WORK/fuzz_hooks.py" <<'PY'
import os
import zlib

import schemathesis

APP = os.environ["FUZZ_APP"]
WEBHOOK_ID = os.environ["FUZZ_WEBHOOK_ID"]
DOOMED_ID = os.environ["FUZZ_DOOMED_ID"]


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if not path_parameters or "app" not in path_parameters:
        return path_parameters
    if zlib.crc32(repr(sorted(path_parameters.items())).encode()) % 2:
        return path_parameters
    path_parameters = dict(path_parameters, app=APP)
    if "id" in path_parameters:
        doomed = context.operation.method.upper() == "DELETE"
        path_parameters["id"] = DOOMED_ID if doomed else WEBHOOK_ID
    return path_parameters
PY

# --- fuzz ----------------------------------------------------------------------
say "schemathesis $ST_VERSION: $MAX_EXAMPLES examples per operation, seed $SEED"
set +e
(
  cd "$WORK" &&
  PYTHONPATH=$WORK SCHEMATHESIS_HOOKS=fuzz_hooks SCHEMATHESIS_TELEMETRY=false \
  FUZZ_APP=$APP FUZZ_WEBHOOK_ID=$WEBHOOK_ID FUZZ_DOOMED_ID=$DOOMED_ID \
  timeout 170 "$VENV/bin/schemathesis" run "$SPEC" \
    --base-url "$BASE" \
    --header "Authorization: Bearer $OPERATOR" \
    --exclude-path '/v1/applications/{app}/webhooks/{id}/test' \
    --checks all \
    --data-generation-method all \
    --hypothesis-max-examples "$MAX_EXAMPLES" \
    --hypothesis-seed "$SEED" \
    --hypothesis-database none \
    --request-timeout 10000 \
    --junit-xml "$WORK/junit.xml" \
    --code-sample-style curl \
    --no-color
)
status=$?
set -e

summary=$("$VENV/bin/python" - "$WORK/junit.xml" <<'PY' || echo "0 0"
import sys
import xml.etree.ElementTree as ET

cases = list(ET.parse(sys.argv[1]).getroot().iter("testcase"))
bad = sum(1 for c in cases if c.find("failure") is not None or c.find("error") is not None)
skipped = sum(1 for c in cases if c.find("skipped") is not None)
print(len(cases) - bad - skipped, bad)
PY
)
read -r passed failed <<<"$summary"
if ((status != 0)) && grep -qE 'WARN|ERROR' "$WORK/service.log"; then
  say "service warnings and errors:"
  grep -E 'WARN|ERROR' "$WORK/service.log" | tail -n 40 >&2
fi
if ((status != 0 && failed == 0)); then
  failed=1 # schemathesis itself failed (timeout, crash, no report)
fi
say "schemathesis $ST_VERSION exited $status; service log: $(grep -c . "$WORK/service.log" || true) lines"
echo "api-fuzz: $passed passed, $failed failed"
exit $((status != 0 ? 1 : 0))
