"""The compatibility tier runs in .venv-compat (`make test-compat`), offline: set up before
any client is imported."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

# litellm fetches its model price map at import unless told to use the copy it ships.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
# tiktoken's cl100k_base as the litellm wheel ships it: LangChain's OpenAIEmbeddings tokenizes
# with it, and tiktoken would otherwise download it at first use.
_litellm = importlib.util.find_spec("litellm")
assert _litellm is not None and _litellm.submodule_search_locations, "run via make test-compat"
os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR",
    str(Path(_litellm.submodule_search_locations[0]) / "litellm_core_utils" / "tokenizers"),
)
os.environ.setdefault("LANGSMITH_TRACING", "false")
