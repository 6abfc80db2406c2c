# Operations against a live cluster (issue 8): the build plan's scripts as `synapse` commands.
# They use $KUBECONFIG / ~/.kube/config; KUBE_CONTEXT=NAME picks a context, OPS_ARGS adds flags
# (e.g. OPS_ARGS=--json). Consumer migration: MIGRATE_ACTION=plan|apply|verify|rollback|decommission
# and MIGRATE_PHASE=1 (onto the shared Ollama) or 3 (onto the gateway).
KUBE_CONTEXT ?=
OPS_ARGS ?=
MIGRATE_ACTION ?= plan
MIGRATE_PHASE ?=
OPS_KUBE := $(if $(KUBE_CONTEXT),--context $(KUBE_CONTEXT))
OPS_CONFIG := $(if $(wildcard config/litellm-config.yaml),--config config/litellm-config.yaml)

.PHONY: health pull-models migrate-consumer verify-phase1 verify-phase2 verify-phase3 \
	verify-phase4 verify-phase5

health: $(STAMP) ## pods, PVCs, backends and the gateway (PHASE=N: phases 1..N)
	$(BIN)/synapse health --phase $(or $(PHASE),5) $(OPS_CONFIG) $(OPS_KUBE) $(OPS_ARGS)

pull-models: $(STAMP) ## pull the config's Ollama models (MODELS="a b" for others)
	$(BIN)/synapse pull-models $(MODELS) $(OPS_CONFIG) $(OPS_KUBE) $(OPS_ARGS)

migrate-consumer: $(STAMP) ## move ai-memory-system: MIGRATE_PHASE=1|3 MIGRATE_ACTION=plan|apply|...
	$(BIN)/synapse migrate-consumer $(MIGRATE_ACTION) $(if $(MIGRATE_PHASE),--phase $(MIGRATE_PHASE)) \
	  $(OPS_KUBE) $(OPS_ARGS)

VERIFY = $(BIN)/synapse verify $(OPS_CONFIG) $(OPS_KUBE) $(OPS_ARGS) --phase

verify-phase1: $(STAMP) ## phase 1: Ollama, PVCs vs disk, models, embedding < 100 ms
	$(VERIFY) 1
verify-phase2: $(STAMP) ## phase 2: GPU, vLLM, tool call, tokens/s, VRAM (OPS_ARGS=--disruptive)
	$(VERIFY) 2
verify-phase3: $(STAMP) ## phase 3: gateway, routing, overhead (OPS_ARGS=--disruptive: fallback)
	$(VERIFY) 3
verify-phase4: $(STAMP) ## phase 4: speech pods, TTS -> STT round trip, memory budget
	$(VERIFY) 4
verify-phase5: $(STAMP) ## phase 5: policies (probe pods), ingress, rules loaded, targets scraped
	$(VERIFY) 5
