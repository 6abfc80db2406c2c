# The compatibility tier (issue 14): the client libraries people use (langchain-openai,
# langchain-ollama, llama-index, the litellm SDK, openai, ollama), pinned in
# requirements/compat.txt, drive a real Synapse with stub backends on loopback, offline.
# Their pins clash with the gateway's, so they live in .venv-compat; the gateway and the stubs
# run on .venv's Python (SYNAPSE_TEST_PYTHON). The Node clients (the Vercel AI SDK, which needs
# node >= 22: the npm package `node` brings it) are pinned by tests/compat/node/package-lock.json
# and installed there with `npm ci` (needs npm on the PATH).
COMPAT_VENV := .venv-compat
COMPAT_STAMP := $(COMPAT_VENV)/.installed
COMPAT_REQS := requirements/compat.txt
COMPAT_NODE := tests/compat/node
COMPAT_NODE_STAMP := $(COMPAT_NODE)/node_modules/.installed

.PHONY: compat-tools test-compat

test: test-compat

$(COMPAT_STAMP): $(COMPAT_REQS)
	test -x $(COMPAT_VENV)/bin/python || $(PYTHON) -m venv $(COMPAT_VENV)
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(COMPAT_VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r $(COMPAT_REQS)
	touch $@

$(COMPAT_NODE_STAMP): $(COMPAT_NODE)/package.json $(COMPAT_NODE)/package-lock.json
	cd $(COMPAT_NODE) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

compat-tools: $(COMPAT_STAMP) $(COMPAT_NODE_STAMP) ## install the real clients: .venv-compat, tests/compat/node (~3.5 min once)

# Warnings the tier used to print (~60 lines), each handled at its source:
# - pytest-asyncio comes with llama-index-embeddings-ollama (a runtime dependency of it) and
#   warns that its loop scope is unset; no test here is async, so the plugin is not loaded.
# - pydantic warns, once per class, that litellm's own TypedDicts use `ReadOnly` (litellm's
#   code, not ours): ignored for exactly that message, category and module (an ini-style
#   filter: its message is a regular expression, where `-W` takes a literal prefix).
COMPAT_PYTEST_FLAGS := -p no:asyncio -o 'filterwarnings=ignore:Items? .* on TypedDict class .* \
	the .ReadOnly. qualifier:UserWarning:pydantic._internal._generate_schema'

test-compat: $(STAMP) $(COMPAT_STAMP) $(COMPAT_NODE_STAMP) ## the real clients against a real Synapse (tests/compat)
	SYNAPSE_TEST_PYTHON=$(abspath $(BIN))/python \
	  $(COMPAT_VENV)/bin/pytest -q $(COMPAT_PYTEST_FLAGS) tests/compat $(COMPAT_ARGS)
