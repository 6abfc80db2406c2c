# Synapse — `make test` and `make run` work on a fresh machine; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml
STAMP := $(VENV)/.installed

.PHONY: help install system-deps serve test lint clean

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | sort | awk -F':.*## ' '{printf "  %-22s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP) ## create .venv and install Synapse with its test tools

# Debian packages the tests call (promtool). Installed only when missing.
system-deps: ## install the Debian tools the tests need
	@command -v promtool >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

serve: install ## the gateway alone on $(CONFIG) (an Ollama at localhost:11434), loopback only
	$(BIN)/synapse serve --config $(CONFIG) --host 127.0.0.1 --port 8000

lint: install ## ruff
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

test: install system-deps ## lint, then the whole test suite
	$(BIN)/ruff check src tests
	$(BIN)/pytest $(PYTEST_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Areas add their own targets (deploy-*, bench, run, test-engines, ...).
-include mk/*.mk
