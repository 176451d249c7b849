# Jejaring: `make run` starts everything, `make test` runs the whole suite.
# Both set up what is missing first (uv, the Python environment, Kafka's jars).

SHELL := /bin/bash
PYTHON ?= python3
UV_VERSION := 0.13.9
UV := .tools/bin/uv
VENV := .venv
PY := $(VENV)/bin/python
PYTEST := $(VENV)/bin/pytest -p no:cacheprovider

.PHONY: setup setup-run system-deps run-deps run stop status test test-unit test-integration test-e2e test-browser \
        lint format bench demo docs clean

# --- set-up -------------------------------------------------------------------------------
$(UV):
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	$(PYTHON) -m venv .tools
	.tools/bin/pip install -q "uv==$(UV_VERSION)"

$(VENV)/.synced: $(UV) uv.lock pyproject.toml $(wildcard libs/*/pyproject.toml services/*/pyproject.toml gateway/pyproject.toml)
	$(UV) sync --frozen --all-packages
	@touch $@

system-deps:
	@deploy/install-system-deps.sh

# What running the stack needs (on SQLite): no PostgreSQL server, no browser.
run-deps:
	@deploy/install-system-deps.sh --run

setup-run: run-deps $(VENV)/.synced
	@$(VENV)/bin/jejaring-dev kafka fetch >/dev/null

setup: system-deps setup-run

# --- run ----------------------------------------------------------------------------------
run: setup-run
	$(VENV)/bin/jejaring-dev run

stop:  # nothing to stop where the environment was never set up
	@if [ -x $(VENV)/bin/jejaring-dev ]; then $(VENV)/bin/jejaring-dev stop; fi

status:
	@$(VENV)/bin/jejaring-dev status

# --- tests --------------------------------------------------------------------------------
test: setup
	$(PYTEST) tests

test-unit: setup
	$(PYTEST) tests/unit

test-integration: setup
	$(PYTEST) tests/integration

test-e2e: setup
	$(PYTEST) tests/e2e

test-browser: setup
	$(PYTEST) tests/browser

# --- quality ------------------------------------------------------------------------------
lint: $(VENV)/.synced
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: $(VENV)/.synced
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

bench: setup
	$(PY) -m bench.run

demo: setup-run
	$(PY) -m demo run

docs: $(VENV)/.synced
	$(PY) -m jejaring_shared.asyncapi docs/asyncapi.json

clean: stop
	rm -rf .data
