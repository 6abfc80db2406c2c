# Synapse — `make test` and `make run` work on a fresh machine; see README.md.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
CONFIG ?= config/local.yaml
STAMP := $(VENV)/.installed
# Sub-makes (`make run` starts several) would print "make[1]: Entering directory …" lines.
MAKEFLAGS += --no-print-directory
# A line every HEARTBEAT_EVERY seconds while a long, quiet step runs (pip unpacking torch, a
# compile, a wait), in a terminal and in CI's log alike. Put it first on the step's own recipe
# line: $(call heartbeat,WHAT); long-command. It ends with that line's shell (its trap, or,
# should the shell be killed outright, its next look at whether that shell is alive: $$$$).
HEARTBEAT_EVERY ?= 30
heartbeat = { s=0; while sleep $(HEARTBEAT_EVERY) && kill -0 $$$$ 2>/dev/null; do \
	s=$$((s + $(HEARTBEAT_EVERY))); echo "  … $(1): $${s} s"; done & } ; beat=$$!; \
	trap 'kill $$beat 2>/dev/null' EXIT

.PHONY: help install system-deps serve test lint clean

# `make help` groups targets by what a person came to do; a target's group follows its name.
# The $(VARIABLES) its lines name are shown with their values (CONFIG, WHEEL_CACHE, ...).
HELP_VARS = $(shell sed -n 's/.*\#\# //p' $(MAKEFILE_LIST) | grep -oE '\$$\([A-Z_]+\)' | sort -u | tr -d '$$()')
help: ## list targets, grouped
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '\
	  function group(t) { \
	    if (t ~ /^(run|test|serve|help)$$/) return 1; \
	    if (t ~ /^test-/) return 2; \
	    if (t ~ /^(deploy|image|secret|sync-config|render|diff|budget)/) return 3; \
	    if (t ~ /^(health|pull-models|migrate|verify|preflight|usage)/) return 4; \
	    if (t ~ /^bench/) return 5; \
	    return 2 } \
	  { line = sprintf("  %-22s %s\n", $$1, $$2); g = group($$1); \
	    if (g == 1) first[$$1] = line; else n[g] = n[g] line } \
	  END { split("run test serve help", s1, " "); for (i = 1; i <= 4; i++) n[1] = n[1] first[s1[i]]; \
	        split("Start here|Develop and test|Deploy (kustomize, in the plan'"'"'s phase order)|Operate the cluster|Benchmark", h, "|"); \
	        for (i = 1; i <= 5; i++) if (n[i] != "") printf "%s:\n%s\n", h[i], n[i] }' \
	  | sed $(foreach v,$(HELP_VARS),-e 's|$$($(v))|$($(v))|g')

$(STAMP): pyproject.toml
	@echo "==> the gateway's $(VENV): Synapse and its test tools (~1-2 min once)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	@$(call heartbeat,installing $(VENV)); \
	  $(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(STAMP) ## create .venv and install Synapse with its test tools

# $(call apt_install,COMMANDS,PACKAGES): the Debian PACKAGES, unless every one of COMMANDS is
# on the PATH already (as root, else through sudo; `env` because sudo drops the environment).
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)
apt_install = missing=; for c in $(1); do command -v $$c >/dev/null || missing=1; done; \
  [ -z "$$missing" ] || { echo "==> installing $(2) (Debian packages)"; \
    $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends $(2) >/dev/null; }

# Debian packages the tests call: promtool, and npm for the Node compatibility tier.
system-deps: ## install the Debian tools the tests need
	@$(call apt_install,promtool,prometheus)
	@$(call apt_install,npm,npm)

serve: install ## the gateway alone on $(CONFIG) (an Ollama at localhost:11434), loopback only
	$(BIN)/synapse serve --config $(CONFIG) --host 127.0.0.1 --port 8000

lint: install ## ruff
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

# Prerequisites run in order, this rule's first: lint fails fast, before the compatibility tier
# (mk/compat.mk) and checkov's venv (mk/deploy.mk) add theirs.
test: install lint system-deps ## ruff (check, format), the compatibility tier, then the whole suite
	$(BIN)/pytest $(PYTEST_ARGS)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .ruff_cache

# Areas add their own targets (deploy-*, bench, run, test-engines, ...).
-include mk/*.mk
