"""The effective local config: config/local-engines.yaml with real ports and any local Ollama.

The checked-in profile names each engine's default port. At start the stack knows the ports it
really got and whether an Ollama answers on 127.0.0.1:11434, and writes the config the
gateway then serves.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from copy import deepcopy
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

OLLAMA_URL = "http://127.0.0.1:11434"
_LOOPBACK = {"127.0.0.1", "localhost"}


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or not isinstance(data.get("model_list"), list):
        raise ValueError(f"{path}: not a LiteLLM config (no model_list)")
    return data


def _repoint(url: str, ports: dict[int, int]) -> str:
    parts = urlsplit(url)
    if parts.hostname not in _LOOPBACK or parts.port not in ports:
        return url
    return urlunsplit(parts._replace(netloc=f"127.0.0.1:{ports[parts.port]}"))


def detect_ollama(base_url: str = OLLAMA_URL, timeout: float = 1.0) -> list[dict[str, Any]] | None:
    """The models of an Ollama answering at `base_url`, or None when nothing Ollama-like does."""
    try:
        with urllib.request.urlopen(f"{base_url}/api/tags", timeout=timeout) as resp:
            body = json.load(resp)
    except (OSError, ValueError, urllib.error.URLError):
        return None
    models = body.get("models") if isinstance(body, dict) else None
    return models if isinstance(models, list) else None


def _is_embedding(model: dict[str, Any]) -> bool:
    details = model.get("details") or {}
    families = [details.get("family") or "", *(details.get("families") or [])]
    name = str(model.get("name", ""))
    return "embed" in name or any("bert" in f for f in families)


def ollama_groups(models: list[dict[str, Any]], base_url: str) -> list[dict[str, Any]]:
    """One model group per Ollama model, named as Ollama names it (e.g. `llama3.2:1b`)."""
    groups = []
    for m in models:
        name = m.get("name") or m.get("model")
        if not name:
            continue
        embedding = _is_embedding(m)
        groups.append(
            {
                "model_name": name,
                "litellm_params": {
                    "model": f"{'ollama' if embedding else 'ollama_chat'}/{name}",
                    "api_base": base_url,
                },
                "model_info": {"mode": "embedding" if embedding else "chat"},
            }
        )
    return groups


def effective(
    base: dict[str, Any],
    ports: dict[int, int],
    ollama_models: list[dict[str, Any]] | None = None,
    ollama_url: str = OLLAMA_URL,
) -> dict[str, Any]:
    """`base` with loopback api_bases moved from default to actual ports, plus Ollama groups.

    `ports` maps a default port to the port the engine really listens on.
    """
    cfg = deepcopy(base)
    for entry in cfg["model_list"]:
        params = entry.get("litellm_params") or {}
        if isinstance(params.get("api_base"), str):
            params["api_base"] = _repoint(params["api_base"], ports)
    if ollama_models:
        taken = {e.get("model_name") for e in cfg["model_list"]}
        extra = [
            g for g in ollama_groups(ollama_models, ollama_url) if g["model_name"] not in taken
        ]
        cfg["model_list"].extend(extra)
    return cfg


def write(cfg: dict[str, Any], path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `synapse local-stack` from config/local-engines.yaml; edits are lost.\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    tmp.replace(path)
    return path


def model_names(cfg: dict[str, Any]) -> list[str]:
    return [e["model_name"] for e in cfg["model_list"] if "model_name" in e]
