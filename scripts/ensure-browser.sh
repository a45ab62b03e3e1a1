#!/usr/bin/env bash
# Makes sure the dashboard's browser tests can run: a headless Chromium
# (Debian's `chromium` package) and Node.js with `playwright-core` (pinned in
# tests/browser/package-lock.json, installed into tests/browser/node_modules).
# Installs what is missing with apt-get / npm when it can, else says what to
# install. Prints the Chromium path on its last line.
set -euo pipefail
cd "$(dirname "$0")/.."
# Tests run in parallel and may call this at once: one installs, the others
# wait for it (apt-get refuses a second caller outright).
if command -v flock >/dev/null 2>&1; then
  exec 9>"${TMPDIR:-/tmp}/webhook-fanout-ensure-browser.lock"
  flock 9
fi

say() { echo "[ensure-browser] $*" >&2; }
can_install() { [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; }
apt_updated=0
install() { # package...
  if ((apt_updated == 0)); then
    apt-get update -qq
    apt_updated=1
  fi
  say "installing $* with apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null
}

find_chromium() {
  for c in "${CHROMIUM_PATH:-}" chromium chromium-browser google-chrome; do
    [[ -n $c ]] && command -v "$c" 2>/dev/null && return 0
  done
  return 1
}

chromium=$(find_chromium || true)
if [[ -z $chromium ]]; then
  if can_install; then
    install chromium
    chromium=$(find_chromium || true)
  fi
fi
if [[ -z $chromium ]]; then
  say "no Chromium found: install Debian's 'chromium' package (or set CHROMIUM_PATH)"
  exit 1
fi

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if can_install; then
    command -v node >/dev/null 2>&1 || install nodejs
    command -v npm >/dev/null 2>&1 || install npm
  fi
fi
if ! command -v npm >/dev/null 2>&1; then
  say "Node.js and npm are needed for the browser tests: install 'nodejs' and 'npm'"
  exit 1
fi

if [[ ! -f tests/browser/node_modules/playwright-core/package.json ]]; then
  say "installing playwright-core into tests/browser/node_modules"
  (cd tests/browser && npm ci --no-audit --no-fund --loglevel=error >&2)
fi
echo "$chromium"
