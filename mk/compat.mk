# The compatibility tier (issue 14): the client libraries people use (langchain-openai,
# langchain-ollama, llama-index, the litellm SDK, openai, ollama), pinned in
# requirements/compat.txt, drive a real Synapse with stub backends on loopback, offline.
# Their pins clash with the gateway's, so they live in .venv-compat; the gateway and the stubs
# run on .venv's Python (SYNAPSE_TEST_PYTHON).
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_REQS := requirements/compat.txt

.PHONY: compat-tools test-compat

test: test-compat

$(COMPAT_STAMP): $(COMPAT_REQS)
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(COMPAT_REQS)
	touch $@

compat-tools: $(COMPAT_STAMP) ## install the real clients into .venv-compat (~3 min once)

test-compat: $(STAMP) $(COMPAT_STAMP) ## the real clients against a real Synapse (tests/compat)
	SYNAPSE_TEST_PYTHON=$(abspath $(BIN))/python \
	  $(COMPAT_VENV)/bin/pytest -q tests/compat $(COMPAT_ARGS)
