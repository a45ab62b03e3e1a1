# The two commands of the README, and their parts.
.PHONY: run test services build lint unit integration

CARGO ?= cargo

run: services build
	@scripts/dev-run.sh

test: services lint
	$(CARGO) test --all-targets --locked
	scripts/api-fuzz.sh
	scripts/check-deploy.sh

services:
	@scripts/ensure-services.sh

build:
	$(CARGO) build --locked

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets --locked -- -D warnings
