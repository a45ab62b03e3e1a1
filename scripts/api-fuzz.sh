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
# Knobs: FUZZ_MAX_EXAMPLES (50 per operation), FUZZ_SEED,
# FUZZ_VENV (.venv-fuzz), FUZZ_CASSETTE (a file to record every request and
# response in), WF_AMQP_URL, WF_REDIS_URL.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD
BIN=${BIN:-target/debug/webhook-fanout}
SPEC=$ROOT/docs/openapi.yaml
VENV=${FUZZ_VENV:-$ROOT/.venv-fuzz}
MAX_EXAMPLES=${FUZZ_MAX_EXAMPLES:-50}
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

# --- namespace, port, tokens; cleanup on exit ---------------------------------
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
NS=fuzz-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
OPERATOR=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
BASE=http://127.0.0.1:$PORT
WORK=$(mktemp -d "${TMPDIR:-/tmp}/api-fuzz.XXXXXX")
PID=

stop_service() {
  if [[ -n $PID ]] && kill -0 "$PID" 2>/dev/null; then
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  PID=
}

cleanup() {
  local rc=$?
  set +e
  stop_service
  if command -v redis-cli >/dev/null 2>&1; then
    redis-cli --scan --pattern "$NS:*" | xargs -r redis-cli del >/dev/null
  fi
  if command -v rabbitmqctl >/dev/null 2>&1; then
    # One `rabbitmqctl eval` deletes the namespace's queues (ingest, deliver,
    # rejected, the dead-letter stream, every retry tier) and its three
    # exchanges; rabbitmqadmin needs the management plugin, which may be off.
    # Should eval fail (another RabbitMQ version), delete the queues one by
    # one and leave the three (empty) exchanges `$NS.events`,
    # `$NS.deliveries` and `$NS.operational` behind.
    if ! rabbitmqctl eval "
        P = <<\"$NS.\">>, N = byte_size(P),
        [rabbit_amqqueue:delete(Q, false, false, <<\"api-fuzz\">>)
          || Q <- rabbit_amqqueue:list(<<\"/\">>),
             binary:longest_common_prefix([element(4, amqqueue:get_name(Q)), P]) =:= N],
        [rabbit_exchange:delete(rabbit_misc:r(<<\"/\">>, exchange, <<P/binary, X/binary>>), false, <<\"api-fuzz\">>)
          || X <- [<<\"events\">>, <<\"deliveries\">>, <<\"operational\">>]],
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
# loopback.
# - The test call (POST .../test) delivers to the webhook's URL, which fuzzing
#   can set to any host: it is excluded from fuzzing below.
# - The service under fuzzing runs with WF_ROLES=api: no ingest or delivery
#   consumer, so nothing else delivers (a dead-letter replay only publishes
#   to RabbitMQ, and the job stays queued until cleanup). Only the seeding
#   service below delivers, before any fuzzing, to loopback webhooks only.
# - Creating or updating a webhook validates its URL, which resolves a host
#   name (DNS, no connection); when we may (root, util-linux unshare), the
#   service runs in a private mount namespace whose /etc/resolv.conf points
#   at 127.0.0.1, so even those lookups stay on this machine (and fail fast:
#   nothing answers DNS there).
printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"$WORK/resolv.conf"
launch=()
if [[ $(id -u) == 0 ]] && command -v unshare >/dev/null 2>&1 &&
   unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf' "$WORK/resolv.conf" 2>/dev/null; then
  launch=(unshare -m sh -c 'mount --bind "$0" /etc/resolv.conf && exec "$@"' "$WORK/resolv.conf")
else
  say "cannot isolate DNS (needs root and unshare): URL host names will be resolved by the system resolver"
fi

start_service() { # roles log [VAR=value...]: starts `serve`, waits for /readyz
  local roles=$1 log=$2
  shift 2
  env WF_NAMESPACE="$NS" WF_HTTP_ADDR="127.0.0.1:$PORT" WF_ADMIN_TOKEN="$OPERATOR" \
    WF_ALLOW_HTTP=true WF_ALLOW_PRIVATE_TARGETS=true WF_ROLES="$roles" \
    WF_SHUTDOWN_TIMEOUT=3s RUST_LOG=warn "$@" \
    "${launch[@]}" "$BIN" serve >"$log" 2>&1 &
  PID=$!
  local deadline=$((SECONDS + 30))
  until [[ $(curl -s -o /dev/null -w '%{http_code}' "$BASE/readyz" || true) == 200 ]]; do
    if ! kill -0 "$PID" 2>/dev/null || ((SECONDS >= deadline)); then
      say "the service ($roles) did not become ready within 30 s; its log:"
      cat "$log" >&2
      exit 1
    fi
    sleep 0.2
  done
}

api() { # method path [json]: prints the body, fails on a non-2xx status
  curl -sS --fail-with-body -X "$1" "$BASE$2" \
    -H "Authorization: Bearer $OPERATOR" -H 'Content-Type: application/json' \
    ${3:+--data "$3"}
}
field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# --- seeding: dead letters, made by a service that delivers -----------------------
# Two loopback webhooks of application fuzz-dead on port 9 (nothing listens:
# connection refused), three events, a max event age of 1 ms: every job fails
# once and is dead-lettered (6 dead letters with a one-attempt history). Then
# one webhook is deleted, so replaying its dead letters is 409
# webhook_deleted, and this service stops before any fuzzing.
say "seeding dead letters in namespace $NS"
start_service ingest,deliver,api "$WORK/seed.log" WF_MAX_EVENT_AGE=1ms WF_DELIVERY_TIMEOUT=2s
DEAD_APP=fuzz-dead
DEAD_HOOK='{"url": "http://127.0.0.1:9/dead", "events": ["item.created"]}'
DEAD_KEPT=$(api POST "/v1/applications/$DEAD_APP/webhooks" "$DEAD_HOOK" | field id)
DEAD_GONE=$(api POST "/v1/applications/$DEAD_APP/webhooks" "$DEAD_HOOK" | field id)
for i in 1 2 3; do
  WF_NAMESPACE=$NS RUST_LOG=warn "$BIN" publish --app "$DEAD_APP" --type item.created \
    --content "{\"item_id\": $i}" >/dev/null
done
deadline=$((SECONDS + 30))
until dead=$(api GET "/v1/dead-letters?limit=500" | python3 -c '
import json, sys
items = json.load(sys.stdin)["items"]
if len(items) < 6:
    sys.exit(1)
kept = [d["id"] for d in items if d["webhook_id"] == sys.argv[1]]
gone = [d["id"] for d in items if d["webhook_id"] != sys.argv[1]]
print(" ".join(kept[:3] + gone[:1]))' "$DEAD_KEPT"); do
  if ((SECONDS >= deadline)); then
    say "no 6 dead letters within 30 s; the seeding service's log:"
    cat "$WORK/seed.log" >&2
    exit 1
  fi
  sleep 0.5
done
read -r DL_SHOWN DL_REPLAYED DL_DISCARDED DL_ORPHAN <<<"$dead"
api DELETE "/v1/applications/$DEAD_APP/webhooks/$DEAD_GONE" >/dev/null
stop_service

# --- the service under fuzzing: API only ----------------------------------------
say "starting $BIN (api only) on $BASE, namespace $NS"
start_service api "$WORK/service.log"

# Fixtures: an application token, and two webhooks.
APP=fuzz-app
APP_TOKEN=$(api POST "/v1/applications/$APP/tokens" '{"role": "admin"}' | field token)
# Port 9 on loopback: never delivered to (no delivery consumer runs, and the
# test call is excluded), but a valid URL with WF_ALLOW_PRIVATE_TARGETS.
HOOK='{"url": "http://127.0.0.1:9/hook", "name": "fuzz", "events": ["item.created", "transfer.updated"]}'
WEBHOOK_ID=$(api POST "/v1/applications/$APP/webhooks" "$HOOK" | field id)
DOOMED_ID=$(api POST "/v1/applications/$APP/webhooks" "$HOOK" | field id)
# The application token works (and lists both webhooks).
curl -sS --fail-with-body "$BASE/v1/applications/$APP/webhooks" \
  -H "Authorization: Bearer $APP_TOKEN" | python3 -c 'import json, sys; assert len(json.load(sys.stdin)) == 2'

# Hooks (schemathesis 3 API):
# - Half of the valid generated {app}/{id} path parameters (chosen from the
#   generated values, so runs stay reproducible) become the fixtures, so the
#   operations on one webhook or dead letter also reach an existing one;
#   DELETE gets its own webhook and dead letter so that the others keep
#   theirs, and a dead-letter replay gets one whose webhook exists or one
#   whose webhook was deleted. Invalid (negative) values are left alone: they
#   must be refused.
# - Likewise half of the valid `url`s of create and update bodies become a
#   loopback URL, so that successful creates and updates get fuzzed too (a
#   random string is never a URL that resolves).
# - An absent optional body is dropped from generation: schemathesis 3 counts
#   it as negative data, but an empty body is a valid `{}` here.
# - So are query parameters generated as null, arrays or objects: they are sent
#   as empty or repeated parameters, which are valid strings to the server.
# - If-Match values keep only their visible ASCII characters: hyper refuses a
#   request with others before the service sees it.
cat >"$WORK/fuzz_hooks.py" <<'PY'
import os
import re
import zlib

import schemathesis
from schemathesis.constants import NOT_SET

APP = os.environ["FUZZ_APP"]
WEBHOOK_ID = os.environ["FUZZ_WEBHOOK_ID"]
DOOMED_ID = os.environ["FUZZ_DOOMED_ID"]
DEAD = {
    "GET": os.environ["FUZZ_DL_SHOWN"],
    "DELETE": os.environ["FUZZ_DL_DISCARDED"],
    "POST": (os.environ["FUZZ_DL_REPLAYED"], os.environ["FUZZ_DL_ORPHAN"]),
}
APP_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")
WEBHOOK_RE = re.compile(r"wh_[0-9a-f]{32}")
DEAD_RE = re.compile(r"dl_[0-9]+")


def draw(value, n=2):
    """A reproducible choice among n, made from a generated value."""
    return zlib.crc32(repr(value).encode()) % n


def valid(value, pattern):
    return isinstance(value, str) and pattern.fullmatch(value) is not None


@schemathesis.hook
def map_path_parameters(context, path_parameters):
    if not path_parameters:
        return path_parameters
    key = sorted(path_parameters.items(), key=str)
    if draw(key):
        return path_parameters
    method = context.operation.method.upper()
    new = dict(path_parameters)
    if context.operation.path.startswith("/v1/dead-letters/"):
        if not valid(new.get("id"), DEAD_RE):
            return path_parameters
        target = DEAD[method]
        new["id"] = target[draw(key, 3) % 2] if isinstance(target, tuple) else target
        return new
    if not valid(new.get("app"), APP_RE) or ("id" in new and not valid(new["id"], WEBHOOK_RE)):
        return path_parameters
    new["app"] = APP
    if "id" in new:
        new["id"] = DOOMED_ID if method == "DELETE" else WEBHOOK_ID
    return new


@schemathesis.hook
def map_body(context, body):
    if "/webhooks" not in context.operation.path or not isinstance(body, dict):
        return body
    url = body.get("url")
    if isinstance(url, str) and len(url) <= 2048 and draw(sorted(body.items(), key=str)) == 0:
        body = dict(body, url=f"http://127.0.0.1:9/{zlib.crc32(url.encode())}")
    return body


@schemathesis.hook
def filter_body(context, body):
    return body is not NOT_SET


@schemathesis.hook
def map_headers(context, headers):
    # An If-Match value with bytes outside visible ASCII never reaches the
    # service: hyper refuses such a request at the HTTP layer (a bare 400).
    # Keep the visible characters, which still make arbitrary tags.
    value = (headers or {}).get("If-Match")
    if value is None or not isinstance(value, str):
        return headers
    return dict(headers, **{"If-Match": "".join(c for c in value if " " <= c <= "~").strip()})


@schemathesis.hook
def filter_query(context, query):
    return not query or all(isinstance(v, (str, int, float)) for v in query.values())
PY

# --- fuzz ----------------------------------------------------------------------
say "schemathesis $ST_VERSION: $MAX_EXAMPLES examples per operation, seed $SEED"
set +e
(
  cd "$WORK" &&
  PYTHONPATH=$WORK SCHEMATHESIS_HOOKS=fuzz_hooks SCHEMATHESIS_TELEMETRY=false \
  FUZZ_APP=$APP FUZZ_WEBHOOK_ID=$WEBHOOK_ID FUZZ_DOOMED_ID=$DOOMED_ID \
  FUZZ_DL_SHOWN=$DL_SHOWN FUZZ_DL_REPLAYED=$DL_REPLAYED \
  FUZZ_DL_DISCARDED=$DL_DISCARDED FUZZ_DL_ORPHAN=$DL_ORPHAN \
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
    ${FUZZ_CASSETTE:+--cassette-path "$FUZZ_CASSETTE"} \
    --no-color 2>&1 | tee "$WORK/schemathesis.log"
  exit "${PIPESTATUS[0]}"
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
cases=$(awk '$1 == "not_a_server_error" {print $4; exit}' "$WORK/schemathesis.log")
say "schemathesis $ST_VERSION exited $status: $((passed + failed)) operations, ${cases:-?} test cases, seed $SEED"
echo "api-fuzz: $passed passed, $failed failed"
exit $((status != 0 ? 1 : 0))
