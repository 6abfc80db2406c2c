# Deployment to forge (K3s): manifests/, the gateway image, offline validation (docs/DEPLOYMENT.md).
# KUBECTL="sudo k3s kubectl" when run on forge itself; PHASE=N for render/diff/budget (render and
# diff also take PHASE=final: phase 5 + the NetworkPolicies).
KUBECTL ?= kubectl
PHASE ?= 5
NS := llm-infra
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
IMAGE ?= synapse:$(VERSION)
IMAGE_TAR ?= dist/synapse-$(VERSION).tar
CHECKOV_VENV := .venv-checkov
CHECKOV_STAMP := $(CHECKOV_VENV)/.installed
CHECKOV_REQS := tests/deploy/checkov-requirements.txt
CONFIG_SRC := config/litellm-config.yaml
CONFIG_MIRROR := manifests/apps/synapse/litellm-config.yaml

.PHONY: deploy-tools sync-config render diff budget test-deploy image secret-master-key \
	secret-hf-token deploy-infra deploy-ollama deploy-phase1 gpu-preflight deploy-phase2 \
	deploy-phase3 deploy-phase4 deploy-phase5 deploy-networkpolicies deploy-litellm

# `make test` also needs checkov, in a virtualenv of its own (installed once, ~2 minutes).
test: deploy-tools

$(CHECKOV_STAMP): $(CHECKOV_REQS)
	test -x $(CHECKOV_VENV)/bin/python || $(PYTHON) -m venv $(CHECKOV_VENV)
	$(CHECKOV_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(CHECKOV_REQS)
	touch $@

deploy-tools: $(CHECKOV_STAMP) ## install checkov into .venv-checkov (policy lint of the manifests)

# kustomize reads no file outside a kustomization, so the gateway's ConfigMap is generated from a
# mirror of config/litellm-config.yaml; tests/deploy fails while the two differ.
sync-config: ## copy config/litellm-config.yaml into manifests/ (the ConfigMap's source)
	@cmp -s $(CONFIG_SRC) $(CONFIG_MIRROR) || { cp $(CONFIG_SRC) $(CONFIG_MIRROR) && \
	  echo "updated $(CONFIG_MIRROR) from $(CONFIG_SRC)"; }

render: sync-config ## print what phase PHASE (default 5) deploys: kubectl kustomize
	@$(KUBECTL) kustomize manifests/phases/phase$(PHASE)

diff: sync-config ## kubectl diff of phase PHASE against the cluster
	$(KUBECTL) diff -k manifests/phases/phase$(PHASE) || [ $$? -eq 1 ]

budget: $(STAMP) sync-config ## requests/limits of phase PHASE against forge's budget
	$(BIN)/synapse budget --phase $(PHASE)

test-deploy: $(STAMP) deploy-tools ## offline checks of manifests/ and the Dockerfile (pytest tests/deploy)
	$(BIN)/pytest -q tests/deploy

# --- the gateway image -------------------------------------------------------------------------
# Builds with the first working engine, saves a tarball, and prints how K3s imports it.
image: ## build synapse:VERSION (docker, nerdctl, podman or buildah) and save it for K3s
	@mkdir -p $(dir $(IMAGE_TAR)); \
	if command -v docker >/dev/null && docker info >/dev/null 2>&1; then \
	  docker build -t $(IMAGE) . && docker save -o $(IMAGE_TAR) $(IMAGE); \
	elif command -v nerdctl >/dev/null && nerdctl info >/dev/null 2>&1; then \
	  nerdctl build -t $(IMAGE) . && nerdctl save -o $(IMAGE_TAR) $(IMAGE); \
	elif command -v podman >/dev/null && podman info >/dev/null 2>&1; then \
	  podman build -t $(IMAGE) . && podman save --format docker-archive -o $(IMAGE_TAR) $(IMAGE); \
	elif command -v buildah >/dev/null; then \
	  buildah bud -t $(IMAGE) . && buildah push $(IMAGE) docker-archive:$(IMAGE_TAR):$(IMAGE); \
	else \
	  echo "no working image builder (docker with a running engine, nerdctl, podman, buildah)" >&2; \
	  exit 1; \
	fi && \
	echo "saved $(IMAGE_TAR). Import it into K3s's containerd on forge:" && \
	echo "  scp $(IMAGE_TAR) forge: && ssh forge sudo k3s ctr images import $(notdir $(IMAGE_TAR))"

# --- secrets (never committed) -----------------------------------------------------------------
secret-master-key: ## create Secret synapse-master-key with a random sk- key (ROTATE=1 replaces it)
	@if $(KUBECTL) -n $(NS) get secret synapse-master-key >/dev/null 2>&1 && [ "$(ROTATE)" != 1 ]; then \
	  echo "secret synapse-master-key exists (ROTATE=1 to replace it; then restart the gateway)"; \
	else \
	  key="sk-$$($(PYTHON) -c 'import secrets; print(secrets.token_urlsafe(32))')"; \
	  $(KUBECTL) -n $(NS) create secret generic synapse-master-key \
	    --from-literal=master-key="$$key" --dry-run=client -o yaml | $(KUBECTL) apply -f - && \
	  echo "read it with: $(KUBECTL) -n $(NS) get secret synapse-master-key -o jsonpath='{.data.master-key}' | base64 -d"; \
	fi

secret-hf-token: ## create Secret hf-token from the HF_TOKEN variable (gated Llama weights for vLLM)
	@test -n "$$HF_TOKEN" || { echo "set HF_TOKEN=hf_… first" >&2; exit 1; }
	@$(KUBECTL) -n $(NS) create secret generic hf-token --from-literal=token="$$HF_TOKEN" \
	  --dry-run=client -o yaml | $(KUBECTL) apply -f -

# --- phases (docs/DEPLOYMENT.md: order, checks, rollback) ------------------------------------
deploy-infra: ## namespace llm-infra and Ollama's 200Gi PVC
	$(KUBECTL) apply -k manifests/infra/base

deploy-ollama: deploy-infra ## the CPU Ollama (phase 1's workload)
	$(KUBECTL) apply -k manifests/apps/ollama
	$(KUBECTL) -n $(NS) rollout status deployment/ollama --timeout=300s

deploy-phase1: ## phase 1: namespace, PVC, Ollama
	$(KUBECTL) apply -k manifests/phases/phase1
	$(KUBECTL) -n $(NS) rollout status deployment/ollama --timeout=300s

gpu-preflight: $(STAMP) ## before phase 2 (risk R2): a free nvidia.com/gpu and RuntimeClass nvidia
	$(BIN)/synapse verify --phase 2 --preflight $(OPS_KUBE) $(OPS_ARGS)

deploy-phase2: gpu-preflight ## phase 2: + vLLM on the GPU (first start may take 30 min)
	$(KUBECTL) apply -k manifests/phases/phase2
	$(KUBECTL) -n $(NS) rollout status deployment/vllm-inference --timeout=1800s

deploy-phase3: sync-config ## phase 3: + the Synapse gateway (needs the image and secret-master-key)
	@$(KUBECTL) -n $(NS) get secret synapse-master-key >/dev/null || \
	  { echo "run 'make secret-master-key' first" >&2; exit 1; }
	$(KUBECTL) apply -k manifests/phases/phase3
	$(KUBECTL) -n $(NS) rollout status deployment/synapse --timeout=300s

deploy-phase4: sync-config ## phase 4: + Speaches STT and Piper TTS
	$(KUBECTL) apply -k manifests/phases/phase4
	$(KUBECTL) -n $(NS) rollout status deployment/piper-tts --timeout=600s
	$(KUBECTL) -n $(NS) rollout status deployment/speaches-stt --timeout=1200s

deploy-phase5: sync-config ## phase 5: + ingress, monitoring; then the NetworkPolicies (gated, LAST)
	@$(KUBECTL) -n $(NS) get secret llm-tls-cert >/dev/null || \
	  { echo "create Secret llm-tls-cert first (docs/DEPLOYMENT.md, phase 5)" >&2; exit 1; }
	@$(KUBECTL) get crd servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com \
	  probes.monitoring.coreos.com >/dev/null || \
	  { echo "Prometheus Operator CRDs are missing: install kube-prometheus-stack first" >&2; exit 1; }
	$(KUBECTL) apply -k manifests/phases/phase5
	$(KUBECTL) -n $(NS) rollout status deployment/synapse --timeout=300s
	$(MAKE) --no-print-directory deploy-networkpolicies

# Risk R8: a default deny cuts every consumer still talking to an Ollama directly. The gate is
# `synapse migrate-consumer verify --phase 3`: it fails unless the consumer's ConfigMap points at
# the gateway and an embedding through it works from the consumer's namespace.
deploy-networkpolicies: $(STAMP) ## NetworkPolicies, only once every consumer uses the gateway
	@$(BIN)/synapse migrate-consumer verify --phase 3 $(OPS_KUBE) $(OPS_ARGS) || \
	  { echo "refusing to apply NetworkPolicies: a consumer does not use the gateway yet" \
	    "(synapse migrate-consumer apply --phase 3)" >&2; exit 1; }
	$(KUBECTL) apply -k manifests/infra/networkpolicies
	@if $(KUBECTL) -n $(NS) get deployment litellm-proxy >/dev/null 2>&1; then \
	  $(KUBECTL) apply -k manifests/infra/networkpolicies/litellm; fi

# Only LiteLLM's objects (and the ConfigMap they mount), on top of a deployed phase >= 3; its
# NetworkPolicies only where the default deny already is (else they would isolate the backends).
deploy-litellm: sync-config ## the LiteLLM proxy beside the gateway (phase >= 3 deployed)
	@$(KUBECTL) -n $(NS) get deployment synapse >/dev/null || \
	  { echo "deploy phase 3 first (make deploy-phase3)" >&2; exit 1; }
	$(KUBECTL) apply -k manifests/variants/litellm -l synapse.arunlabs.com/variant=litellm
	@if $(KUBECTL) -n $(NS) get networkpolicy default-deny-ingress >/dev/null 2>&1; then \
	  $(KUBECTL) apply -k manifests/infra/networkpolicies/litellm; fi
	$(KUBECTL) -n $(NS) rollout status deployment/litellm-proxy --timeout=300s
