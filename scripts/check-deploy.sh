#!/usr/bin/env bash
# Static checks of the deployment artifacts, run by `make test`:
#   - every YAML and JSON file under deploy/ (and the Compose file) parses;
#   - promtool checks the alerting rules, the PrometheusRule's rules and the
#     Prometheus config (promtool is taken from Debian's prometheus package,
#     unpacked into .tools/ without installing or starting the server);
#   - `docker compose config` (or docker-compose) validates the Compose file
#     when a Compose client exists;
#   - the kustomize base builds (`kubectl kustomize`, from Debian's kubectl
#     package) and every object has the fields a deployment relies on.
# The metric names the rules and the dashboard use are checked against a
# running service by tests/it/deploy.rs.
set -euo pipefail
cd "$(dirname "$0")/.."

TOOLS=.tools
passed=0
failed=0
say() { echo "[check-deploy] $*" >&2; }
ok() { passed=$((passed + 1)); say "ok: $*"; }
ko() { failed=$((failed + 1)); say "FAILED: $*"; }
can_apt() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }

python=python3
if ! "$python" -c 'import yaml' 2>/dev/null; then
  if [[ -x .venv-fuzz/bin/python ]] && .venv-fuzz/bin/python -c 'import yaml' 2>/dev/null; then
    python=.venv-fuzz/bin/python
  else
    python3 -m venv "$TOOLS/venv" && "$TOOLS/venv/bin/pip" install -q pyyaml
    python="$TOOLS/venv/bin/python"
  fi
fi

# 1. Everything parses.
if "$python" - <<'PY'
import json, pathlib, sys, yaml
bad = 0
files = [pathlib.Path("docker-compose.yml"), *pathlib.Path("deploy").rglob("*")]
for f in files:
    if f.suffix in (".yml", ".yaml"):
        try:
            list(yaml.safe_load_all(f.read_text()))
        except Exception as e:
            print(f"{f}: {e}", file=sys.stderr); bad += 1
    elif f.suffix == ".json":
        try:
            json.loads(f.read_text())
        except Exception as e:
            print(f"{f}: {e}", file=sys.stderr); bad += 1
sys.exit(bad)
PY
then ok "YAML and JSON files parse"; else ko "YAML or JSON does not parse"; fi

# 2. promtool.
promtool=$(command -v promtool || true)
if [[ -z $promtool && -x $TOOLS/prometheus/usr/bin/promtool ]]; then promtool=$TOOLS/prometheus/usr/bin/promtool; fi
if [[ -z $promtool ]] && can_apt; then
  say "fetching promtool from Debian's prometheus package"
  mkdir -p "$TOOLS/deb"
  (cd "$TOOLS/deb" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  dpkg-deb -x "$TOOLS"/deb/prometheus_*.deb "$TOOLS/prometheus"
  promtool=$TOOLS/prometheus/usr/bin/promtool
fi
if [[ -z $promtool ]]; then
  ko "promtool not found and cannot be installed (install Debian's prometheus package)"
else
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  if "$promtool" check rules deploy/prometheus/alerts.yml >/dev/null; then ok "promtool check rules alerts.yml"; else ko "promtool check rules alerts.yml"; fi
  "$python" -c 'import sys, yaml; d = yaml.safe_load(open("deploy/kubernetes/prometheusrule.yaml")); yaml.safe_dump({"groups": d["spec"]["groups"]}, open(sys.argv[1], "w"))' "$work/rule.yml"
  if "$promtool" check rules "$work/rule.yml" >/dev/null; then ok "promtool check rules PrometheusRule"; else ko "promtool check rules PrometheusRule"; fi
  # The config names the rule file by its path in the container.
  sed "s#/etc/prometheus/alerts.yml#$PWD/deploy/prometheus/alerts.yml#" deploy/prometheus/prometheus.yml >"$work/prometheus.yml"
  if "$promtool" check config --syntax-only "$work/prometheus.yml" >/dev/null 2>&1 \
     || "$promtool" check config "$work/prometheus.yml" >/dev/null; then
    ok "promtool check config prometheus.yml"
  else ko "promtool check config prometheus.yml"; fi
fi

# 3. Compose.
if command -v docker >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
  if docker compose --profile full config -q; then ok "docker compose config"; else ko "docker compose config"; fi
elif command -v docker-compose >/dev/null 2>&1; then
  if docker-compose --profile full config -q; then ok "docker-compose config"; else ko "docker-compose config"; fi
else
  say "skipped: no Docker Compose client to validate docker-compose.yml (it parses, see above)"
fi

# 4. Kustomize.
if ! command -v kubectl >/dev/null 2>&1 && can_apt; then
  say "installing kubectl (Debian package)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null 2>&1 \
    || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq kubectl >/dev/null; } || true
fi
if command -v kubectl >/dev/null 2>&1; then
  built=$(mktemp)
  if kubectl kustomize deploy/kubernetes >"$built"; then
    ok "kubectl kustomize builds"
    if "$python" - "$built" <<'PY'
import sys, yaml
docs = [d for d in yaml.safe_load_all(open(sys.argv[1])) if d]
problems = []
kinds = {}
for d in docs:
    for field in ("apiVersion", "kind"):
        if field not in d: problems.append(f"object without {field}: {d}")
    name = d.get("metadata", {}).get("name")
    if not name: problems.append(f"{d.get('kind')} without metadata.name")
    kinds.setdefault(d.get("kind"), {})[name] = d
deployments = kinds.get("Deployment", {})
if len(deployments) != 3: problems.append(f"expected 3 Deployments, got {sorted(deployments)}")
def seconds(v):
    v = str(v).strip()
    for unit, f in (("ms", 0.001), ("s", 1), ("m", 60), ("h", 3600)):
        if v.endswith(unit) and v[:-len(unit)].isdigit(): return int(v[:-len(unit)]) * f
    raise ValueError(v)
config = {}
for cm in kinds.get("ConfigMap", {}).values(): config.update(cm.get("data") or {})
# The service's whole shutdown fits in WF_SHUTDOWN_TIMEOUT + 5 s (its margin,
# SHUTDOWN_MARGIN in src/app.rs); a preStop sleep comes before it.
shutdown = seconds(config.get("WF_SHUTDOWN_TIMEOUT", "25s")) + 5
for name, d in deployments.items():
    spec = d["spec"]["template"]["spec"]
    c = spec["containers"][0]
    pre = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
    pre_s = int(pre[1]) if len(pre) == 2 and pre[0] == "sleep" else 0
    need = pre_s + shutdown
    if spec.get("terminationGracePeriodSeconds", 30) < need: problems.append(f"{name}: grace period below preStop {pre_s} s + WF_SHUTDOWN_TIMEOUT + 5 s = {need} s")
    if c.get("livenessProbe", {}).get("httpGet", {}).get("path") != "/healthz": problems.append(f"{name}: liveness is not /healthz")
    if c.get("readinessProbe", {}).get("httpGet", {}).get("path") != "/readyz": problems.append(f"{name}: readiness is not /readyz")
    roles = [e.get("value") for e in c.get("env", []) if e.get("name") == "WF_ROLES"]
    if not roles: problems.append(f"{name}: no WF_ROLES")
    labels = d["spec"]["template"]["metadata"]["labels"]
    if any(v != labels.get(k) for k, v in d["spec"]["selector"]["matchLabels"].items()): problems.append(f"{name}: selector does not match its pods")
for name, h in kinds.get("HorizontalPodAutoscaler", {}).items():
    if h["spec"]["scaleTargetRef"]["name"] not in deployments: problems.append(f"HPA {name} targets a missing Deployment")
for kind in ("Service", "PodDisruptionBudget", "ConfigMap", "ServiceMonitor", "PrometheusRule"):
    if not kinds.get(kind): problems.append(f"no {kind}")
for p in problems: print(p, file=sys.stderr)
sys.exit(1 if problems else 0)
PY
    then ok "kustomize objects are complete"; else ko "kustomize objects are incomplete"; fi
  else ko "kubectl kustomize"; fi
  rm -f "$built"
else
  ko "kubectl not found and cannot be installed (install Debian's kubectl package)"
fi

echo "check-deploy: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
