# rmflow: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export PREFECT_SERVER_ANALYTICS_ENABLED ?= false
export MLFLOW_DISABLE_TELEMETRY ?= true
export HF_HUB_OFFLINE ?= 1

.PHONY: setup test test-fast demo up down lint

setup:
	bash scripts/setup.sh

# All tests, slow ones included (what CI runs).
test: setup
	bash scripts/setup_browser.sh || echo "make test: no Chromium; the browser test will skip" >&2
	$(PY) -m pytest -q -p no:cacheprovider tests

# Fast tests only (slow-marked ones skipped), for the edit loop.
test-fast: setup
	$(PY) -m pytest -q -m "not slow" tests

# Offline demo: the whole pipeline on the small PyPI model (DATA_DIR=<hub mirror> to use real data).
demo: setup
	bash scripts/demo.sh $(if $(DATA_DIR),--data-dir $(DATA_DIR))

up: setup
	$(VENV)/bin/rmflow up

down:
	$(VENV)/bin/rmflow down

lint: setup
	$(VENV)/bin/ruff check .
