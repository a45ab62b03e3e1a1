# The two commands of the README, and their parts.
.PHONY: run test services browser build lint unit integration

CARGO ?= cargo

run: services build
	@scripts/dev-run.sh

test: services browser lint
	@rm -f target/tmp/test-namespaces.txt
	$(CARGO) test --all-targets --locked
	@# Tests that disturb the shared broker or start a RabbitMQ cluster of
	@# their own: after the others, one at a time.
	$(CARGO) test --locked --test it -- --ignored --test-threads=1
	scripts/api-fuzz.sh
	scripts/check-deploy.sh
	scripts/check-leftovers.sh

services:
	@scripts/ensure-services.sh

# Chromium and playwright-core for the dashboard's browser tests.
browser:
	@scripts/ensure-browser.sh >/dev/null

build:
	$(CARGO) build --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
