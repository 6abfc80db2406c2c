"""Embedding spaces: the vectors an embedding group returns must all come from one model.

Vectors of another model, quantization or normalization are not comparable, and a memory
system's index is silently corrupted the first time a load-balanced call or a fallback answers
from the other one. So an embedding group whose deployments differ in backend model (or API
kind: an Ollama GGUF and a vLLM checkpoint of one name differ in quantization) is refused, and
so is an embedding fallback to a group of another model, unless the operator declares them one
space with `model_info.embedding_space: <name>` on every deployment concerned, after checking
that their vectors agree (README "Embedding spaces").
"""

from __future__ import annotations

from synapse.config.schema import ConfigFile, ModelEntry

KEY = "model_info.embedding_space"
_HOW = (
    f"declare them one space with the same {KEY} on every deployment concerned, "
    'once their vectors are checked to agree (README "Embedding spaces")'
)


def _identity(entry: ModelEntry) -> str:
    """The model a deployment embeds with: API kind and backend model (`:latest` implied)."""
    provider, _, model = entry.litellm_params.model.partition("/")
    kind = "ollama" if provider.startswith("ollama") else "openai-compatible"
    return f"{model.removesuffix(':latest')} ({kind})"


def _space(entry: ModelEntry) -> str:
    declared = entry.model_info.embedding_space
    return f"space {declared!r}" if declared else _identity(entry)


def space_problems(parsed: ConfigFile, aliases: dict[str, str]) -> list[str]:
    """One line per group of mixed vectors and per embedding fallback to other vectors."""
    members: dict[str, list[tuple[int, ModelEntry]]] = {}
    for i, entry in enumerate(parsed.model_list):
        members.setdefault(entry.model_name, []).append((i, entry))
    embedding = {
        name
        for name, entries in members.items()
        if any(e.model_info.mode == "embedding" for _, e in entries)
    }
    problems = []
    spaces: dict[str, str] = {}
    for name in embedding:
        (first_i, first), *rest = members[name]
        spaces[name] = _space(first)
        for i, entry in rest:
            if _space(entry) != spaces[name]:
                problems.append(
                    f"model_list[{i}].{KEY}: embedding group {name!r} mixes vectors: "
                    f"{_space(entry)} here, {spaces[name]} at model_list[{first_i}]; expected "
                    f"one backend model per embedding group, or {_HOW}"
                )
    for n, item in enumerate(parsed.router_settings.fallbacks):
        for source, targets in item.items():
            group = aliases.get(source, source)
            if group not in spaces:
                continue
            for target in targets:
                other = aliases.get(target, target)
                if other in members and _space(members[other][0][1]) != spaces[group]:
                    problems.append(
                        f"router_settings.fallbacks[{n}].{source}: embedding group {group!r} "
                        f"({spaces[group]}) falls back to {other!r} "
                        f"({_space(members[other][0][1])}), whose vectors are not comparable; "
                        f"expected a fallback of the same backend model, or {_HOW}"
                    )
    return problems
