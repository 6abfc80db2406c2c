"""Model names: Ollama's implicit `:latest` tag, and the few facts ops needs from the routing
config (which names Synapse serves, which models live on which Ollama).

The routing config is read here minimally (names, providers, api_base) rather than through
the gateway's validating loader, which also resolves secrets such as `os.environ/...` that an
operator's laptop does not have.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from synapse.ops.output import OpsError

DEFAULT_CONFIG = Path("config/litellm-config.yaml")
DEFAULT_OLLAMA_URL = "http://ollama.llm-infra.svc.cluster.local:11434"
DEFAULT_PULL_MODELS = ("mxbai-embed-large", "llama3.1:8b")
OLLAMA_PROVIDERS = ("ollama", "ollama_chat")


def ollama_name(name: str) -> str:
    """Canonical Ollama model name: `x` and `x:latest` are the same model."""
    name = name.strip()
    last = name.rsplit("/", 1)[-1]
    return name if ":" in last else f"{name}:latest"


def same_model(a: str, b: str) -> bool:
    return ollama_name(a) == ollama_name(b)


def missing(wanted: Iterable[str], have: Iterable[str]) -> list[str]:
    """Names in `wanted` that `have` lacks, under Ollama's `:latest` rule; order kept."""
    present = {ollama_name(h) for h in have}
    return [w for w in wanted if ollama_name(w) not in present]


def tag_names(tags_doc: Any) -> list[str]:
    """Model names from an Ollama `/api/tags` answer."""
    if not isinstance(tags_doc, dict) or not isinstance(tags_doc.get("models"), list):
        raise OpsError(f"unexpected /api/tags answer: {str(tags_doc)[:200]}")
    names = []
    for m in tags_doc["models"]:
        if isinstance(m, dict):
            name = m.get("name") or m.get("model")
            if name:
                names.append(str(name))
    return names


@dataclass(frozen=True)
class RouteEntry:
    group: str
    provider: str
    backend_model: str
    api_base: str
    mode: str
    id: str


@dataclass
class RoutingConfig:
    entries: list[RouteEntry] = field(default_factory=list)
    aliases: dict[str, str] = field(default_factory=dict)
    fallbacks: dict[str, list[str]] = field(default_factory=dict)

    @property
    def groups(self) -> list[str]:
        return list(dict.fromkeys(e.group for e in self.entries))

    def served_names(self) -> list[str]:
        return self.groups + [a for a in self.aliases if a not in self.groups]

    def ollama_models(self) -> dict[str, list[str]]:
        """Backend model names per Ollama api_base (what `pull-models` pulls where)."""
        out: dict[str, list[str]] = {}
        for e in self.entries:
            if e.provider in OLLAMA_PROVIDERS and e.api_base:
                models = out.setdefault(e.api_base.rstrip("/").removesuffix("/v1"), [])
                if e.backend_model not in models:
                    models.append(e.backend_model)
        return out

    def first(self, *, provider: Iterable[str] = (), mode: str | None = None) -> RouteEntry | None:
        providers = set(provider)
        for e in self.entries:
            if (not providers or e.provider in providers) and (mode is None or e.mode == mode):
                return e
        return None

    def group(self, name: str) -> list[RouteEntry]:
        return [e for e in self.entries if e.group == name]


def read_routing(path: str | Path) -> RoutingConfig:
    """The names-and-addresses view of a LiteLLM-format config file."""
    p = Path(path)
    try:
        doc = yaml.safe_load(p.read_text()) or {}
    except OSError as exc:
        raise OpsError(f"cannot read config {p}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise OpsError(f"config {p} is not valid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("model_list"), list):
        raise OpsError(f"config {p}: no model_list")
    cfg = RoutingConfig()
    for i, item in enumerate(doc["model_list"]):
        params = (item or {}).get("litellm_params") or {}
        model = str(params.get("model") or "")
        provider, _, backend = model.partition("/")
        if not backend:
            provider, backend = "openai", model
        info = (item or {}).get("model_info") or {}
        cfg.entries.append(
            RouteEntry(
                group=str(item.get("model_name", "")),
                provider=provider,
                backend_model=backend,
                api_base=str(params.get("api_base") or ""),
                mode=str(info.get("mode") or "chat"),
                id=str(info.get("id") or f"{item.get('model_name')}-{i}"),
            )
        )
    router = doc.get("router_settings") or {}
    aliases = router.get("model_group_alias") or {}
    for alias, target in aliases.items():
        cfg.aliases[str(alias)] = str(target["model"] if isinstance(target, dict) else target)
    for entry in router.get("fallbacks") or []:
        for name, targets in (entry or {}).items():
            cfg.fallbacks[str(name)] = [str(t) for t in targets or []]
    return cfg


def routing_or_none(path: str | Path | None) -> RoutingConfig | None:
    """The routing config when given or present at the default path; None otherwise."""
    if path is not None:
        return read_routing(path)
    return read_routing(DEFAULT_CONFIG) if DEFAULT_CONFIG.is_file() else None
