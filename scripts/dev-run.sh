#!/usr/bin/env bash
# `make run`: the service with a development setup (http and loopback
# callbacks allowed), a fresh operator token, and a copy-paste walkthrough.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${BIN:-target/debug/webhook-fanout}
export WF_ALLOW_HTTP=true WF_ALLOW_PRIVATE_TARGETS=true
export WF_ADMIN_TOKEN=${WF_ADMIN_TOKEN:-dev-$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')}
export WF_HTTP_ADDR=${WF_HTTP_ADDR:-127.0.0.1:8080}
API="http://$WF_HTTP_ADDR"

cat <<MSG

  webhook-fanout (development) on $API, namespace ${WF_NAMESPACE:-webhooks}
  operator token: $WF_ADMIN_TOKEN

  Try it from another terminal:

    export TOKEN=$WF_ADMIN_TOKEN
    # 1. a receiver that prints what it gets
    python3 -c 'import http.server as h
class R(h.BaseHTTPRequestHandler):
    def do_POST(s):
        b=s.rfile.read(int(s.headers["Content-Length"])); print(dict(s.headers)); print(b.decode(), flush=True)
        s.send_response(200); s.end_headers()
h.HTTPServer(("127.0.0.1", 9000), R).serve_forever()' &
    # 2. a webhook for application app_42
    curl -s -X POST $API/v1/applications/app_42/webhooks -H "Authorization: Bearer \$TOKEN" \\
      -d '{"url": "http://127.0.0.1:9000/hook", "name": "local", "events": ["item.refreshed"]}'
    # 3. an event, as a banking service would publish it
    $BIN publish --app app_42 --type item.refreshed --content '{"item_id": 1234567890, "status": 0}'
    # 4. what happened
    curl -s $API/metrics | grep '^webhooks_deliveries_total'

  Or in a browser: $API/dashboard/ (sign in with the operator token and
  application id app_42; "Send a test" on the webhook, dead letters, ...)

MSG
exec "$BIN" serve
