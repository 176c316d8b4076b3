# actioncage developer tasks (GNU make). `make test` works from a fresh clone on a fresh
# machine: it makes the venv, starts (or installs) the Docker engine and builds the image.
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

PY ?= python3
VENV = .venv
BIN = $(VENV)/bin
PYTEST_ARGS ?=

.PHONY: help venv engine gvisor image browser packages editor serve test lint clean bench screenshots

help:
	@echo "make venv    create .venv and install actioncage[test] (when pyproject.toml changed)"
	@echo "make engine  make sure a Docker engine answers (start or install it)"
	@echo "make browser  install Debian's chromium for the dashboard tests (when missing)"
	@echo "make gvisor  install runsc and register it with the engine (the gvisor tier; SIGHUP,"
	@echo "             never a restart; says what it does, a no-op when in place)"
	@echo "make image   build the sandbox image actioncage-sandbox:latest (skipped when current)"
	@echo "make serve   run the control plane (ACTIONCAGE_HOST, ACTIONCAGE_PORT)"
	@echo "make editor  rebuild the dashboard's code editor bundle (CodeMirror 6, npm + esbuild)"
	@echo "make screenshots  every dashboard page at 1440 and 390 px, into var/screenshots/"
	@echo "make packages  install the servers the tests start (redis-server, postgresql-15) when missing"
	@echo "make test    run pytest against the real engine and image, on SQLite then on"
	@echo "             PostgreSQL 15 (PYTEST_ARGS=...)"
	@echo "make lint    ruff check, ruff format --check and mypy"
	@echo "make bench   latency and throughput over HTTP vs its peers, the isolation tiers side"
	@echo "             by side and a jail run's cost per step (BENCH_ARGS=--quick; only some:"
	@echo "             --tiers jail,container,gvisor, --jail-steps)"
	@echo "make clean   remove .venv, var/ and build artefacts (not Docker images)"

venv: $(VENV)/.installed

$(BIN)/python:
	$(PY) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

engine:
	bash scripts/ensure-docker.sh

# The gvisor isolation tier: Debian's runsc registered as the engine's runtime "runsc".
gvisor: engine
	bash scripts/ensure-gvisor.sh

image: engine venv
	PYTHON=$(abspath $(BIN)/python) bash sandbox-image/build.sh

# The dashboard tests drive Debian's chromium through Playwright (its own browser download
# cannot work here). Skipped when /usr/bin/chromium exists; needs root for apt.
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		echo "make browser: installing chromium" >&2; \
		DEBIAN_FRONTEND=noninteractive apt-get update -q; \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
			chromium fonts-liberation; \
	fi

# Servers the tests start themselves (redis-server); needs root for apt when one is missing.
packages:
	bash scripts/ensure-packages.sh

# The dashboard's code editor: CodeMirror 6 from the npm registry, bundled by esbuild into
# web/static/editor.js. The bundle is committed, so serving and testing need no npm; this
# rebuilds it when editor.js or the pinned versions change (npm ci: the lock file's versions).
EDITOR_DIR = src/actioncage/web/editor
EDITOR_BUNDLE = src/actioncage/web/static/editor.js

editor: $(EDITOR_BUNDLE)

$(EDITOR_BUNDLE): $(EDITOR_DIR)/editor.js $(EDITOR_DIR)/package.json $(EDITOR_DIR)/package-lock.json
	cd $(EDITOR_DIR) && npm ci --no-audit --no-fund && npm run build
	touch $@

serve: venv engine gvisor image
	mkdir -p var
	exec $(BIN)/actioncage serve

test: export TESTCONTAINERS_RYUK_DISABLED = true
test: venv engine gvisor image browser packages
	ACTIONCAGE_TEST_DB=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)
	ACTIONCAGE_TEST_DB=postgresql $(BIN)/python -m pytest $(PYTEST_ARGS)

BENCH_ARGS ?=

# The bench's peers (epicbox, rasa-sdk) live in their own venv, never in the project's.
bench/.venv/.installed: bench/requirements.txt
	$(PY) -m venv bench/.venv
	bench/.venv/bin/python -m pip install --disable-pip-version-check -q -r bench/requirements.txt
	touch $@

bench: venv engine gvisor image packages bench/.venv/.installed
	$(BIN)/python bench/run.py $(BENCH_ARGS)

# Screenshots of every dashboard page at 1440 and 390 px (the browser tests write them).
screenshots: export ACTIONCAGE_SCREENSHOTS = $(abspath var/screenshots)
screenshots: venv engine image browser
	mkdir -p var/screenshots
	$(BIN)/python -m pytest -q tests/web/test_dashboard_browser.py $(PYTEST_ARGS)
	@echo "screenshots in var/screenshots/"

lint: venv
	$(BIN)/ruff check src runtime tests
	$(BIN)/ruff format --check src runtime tests
	$(BIN)/mypy

clean:
	rm -rf $(VENV) bench/.venv bench/.tmp var sandbox-image/wheels sandbox-image/build build dist \
		.pytest_cache .mypy_cache .ruff_cache
	find . -path ./.git -prune -o \( -name __pycache__ -o -name '*.egg-info' \) -type d \
		-prune -exec rm -rf {} +
