"""The compatibility tier runs in .venv-compat (`make test-compat`), offline."""

from __future__ import annotations

import os
from pathlib import Path

# tiktoken's cl100k_base as the litellm wheel ships it: LangChain's OpenAIEmbeddings tokenizes
# with it, and tiktoken would otherwise download it at first use.
import litellm
import pytest

os.environ.setdefault(
    "TIKTOKEN_CACHE_DIR", str(Path(litellm.__file__).parent / "litellm_core_utils" / "tokenizers")
)
# Client telemetry stays off: the tier talks to loopback only.
os.environ.setdefault("LANGSMITH_TRACING", "false")


@pytest.fixture(autouse=True)
def _offline_litellm() -> None:
    litellm.telemetry = False
