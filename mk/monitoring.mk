# Monitoring: PrometheusRule, ServiceMonitors and the Grafana dashboard in monitoring/.
KUBECTL ?= kubectl
ALERT_RULES := monitoring/alerts/synapse-alerts.yaml

.PHONY: deploy-monitoring test-alerts test-monitoring

deploy-monitoring: ## apply monitoring/ (alerts, ServiceMonitors, Probe, Grafana dashboard) to llm-infra
	@$(KUBECTL) get crd servicemonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com \
	  probes.monitoring.coreos.com >/dev/null || \
	  { echo "Prometheus Operator CRDs are missing: install kube-prometheus-stack first" >&2; exit 1; }
	$(KUBECTL) apply -k monitoring

# promtool reads plain rules files: the PrometheusRule's spec is one, extracted into a temp dir
# next to copies of the unit tests (their rule_files name it synapse-alerts.rules.yaml).
test-alerts: $(STAMP) system-deps ## promtool check + unit tests of the alert rules
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	$(BIN)/python -c 'import sys, yaml; spec = yaml.safe_load(open(sys.argv[1]))["spec"]; \
	  yaml.safe_dump(spec, open(sys.argv[2], "w"), sort_keys=False)' \
	  $(ALERT_RULES) "$$tmp/synapse-alerts.rules.yaml" && \
	cp monitoring/alerts/tests/*.test.yaml "$$tmp/" && \
	promtool check rules "$$tmp/synapse-alerts.rules.yaml" && \
	cd "$$tmp" && promtool test rules *.test.yaml

test-monitoring: $(STAMP) system-deps ## alerts, dashboard and monitors checks (pytest tests/monitoring)
	$(BIN)/pytest -q tests/monitoring
