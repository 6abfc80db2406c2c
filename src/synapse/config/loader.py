"""Load a config file: YAML → environment references → schema → resolved `Config`.

Every problem is reported with the file, the key path and what was expected, all at once.
Messages never quote a secret: values at secret key paths and values read from the
environment are described, not shown (they reach logs on a failed hot reload).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ValidationError

from synapse.config.consumers import resolve_consumers
from synapse.config.model import Config, Deployment
from synapse.config.schema import ConfigFile, SynapseSettings
from synapse.config.spaces import space_problems

ENV_PREFIX = "os.environ/"
OLLAMA_DEFAULT_BASE = "http://localhost:11434"
OPENAI_DEFAULT_BASE = "https://api.openai.com/v1"
_ROUTING_STRATEGIES = {None, "least-busy", "simple-shuffle"}
SECRET_KEYS = frozenset({"master_key", "api_key", "key"})
# Shorter keys are placeholders or guessable; refusing them keeps a typo from opening the API.
MIN_MASTER_KEY_LENGTH = 16


class ConfigError(Exception):
    """A config that cannot be served; `problems` holds one line per problem."""

    def __init__(self, path: Path | str, problems: list[str]) -> None:
        self.path = str(path)
        self.problems = problems
        super().__init__("\n".join(f"{self.path}: {p}" for p in problems))


def load_config(path: str | Path, environ: dict[str, str] | None = None) -> Config:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, [f"cannot read file: {exc.strerror or exc}"]) from exc
    return parse_config(text, path, os.environ if environ is None else environ)


def parse_config(text: str, path: Path, environ: Any) -> Config:
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(path, [_yaml_problem(exc)]) from None
    if not isinstance(raw, dict):
        raise ConfigError(path, ["expected a mapping at the top level (with a model_list key)"])

    missing: list[str] = []
    from_env: set[str] = set()
    raw = _resolve_env(raw, "", environ, missing, from_env)
    if missing:
        raise ConfigError(path, missing)
    try:
        parsed = ConfigFile.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(path, [_describe(err, from_env) for err in exc.errors()]) from None
    return _resolve(parsed, path, from_env)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """PyYAML's own message quotes the offending line, which may hold a key: give its place."""
    problem = getattr(exc, "problem", None) or type(exc).__name__
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML{where}: {problem}"


def _resolve_env(
    node: Any, where: str, environ: Any, missing: list[str], from_env: set[str]
) -> Any:
    """Substitute `os.environ/NAME` values; `from_env` collects the key paths substituted."""
    if isinstance(node, dict):
        return {
            k: _resolve_env(v, _join(where, str(k)), environ, missing, from_env)
            for k, v in node.items()
        }
    if isinstance(node, list):
        return [
            _resolve_env(v, f"{where}[{i}]", environ, missing, from_env) for i, v in enumerate(node)
        ]
    if isinstance(node, str) and node.startswith(ENV_PREFIX):
        name = node.removeprefix(ENV_PREFIX)
        if name not in environ:
            missing.append(f"{where}: environment variable {name} is not set")
            return node
        from_env.add(where)
        return environ[name]
    return node


def shown(where: str, value: object, from_env: set[str]) -> str:
    """How a config value may appear in a message: secrets and environment values are hidden,
    URLs lose any `user:password@`."""
    if where in from_env:
        return "a value from the environment (not shown)"
    if where.rpartition(".")[2] in SECRET_KEYS:
        return "a secret value (not shown)"
    if isinstance(value, dict | list):  # may hold secrets at keys below this one
        return "a mapping" if isinstance(value, dict) else "a list"
    if isinstance(value, str) and "@" in value:
        try:
            parts = urlsplit(value)
        except ValueError:
            return "a URL with credentials (not shown)"
        if parts.username is not None or parts.password is not None:
            netloc = parts.netloc.rpartition("@")[2]
            return repr(parts._replace(netloc=f"***@{netloc}").geturl())
    return repr(value)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out = f"{out}[{part}]" if isinstance(part, int) else _join(out, str(part))
    return out or "(top level)"


# Keys a release removed: the operator is told what replaced them, not to check the spelling.
REMOVED = {
    "embedding_batching.max_wait_ms": "removed: embeddings are held only while the group's "
    "backend is busy, never for a time window (see embedding_batching.max_in_flight)",
}


def _describe(err: Any, from_env: set[str]) -> str:
    where = _location(tuple(p for p in err["loc"] if p not in ("str", "AliasTarget")))
    msg = err["msg"].removeprefix("Value error, ")
    removed = next((why for key, why in REMOVED.items() if where.endswith(key)), None)
    if err["type"] == "extra_forbidden" and removed:
        msg = removed
    elif err["type"] == "extra_forbidden":
        msg = "unknown key (synapse_settings is strict; check the spelling)"
    elif err["type"] == "missing":
        msg = "required key is missing"
    elif "input" in err:
        msg = f"{msg}; got {shown(where, err['input'], from_env)}"
    return f"{where}: {msg}"


def _unknown_keys(model: BaseModel, where: str) -> Iterator[str]:
    for key in model.model_extra or {}:
        yield _join(where, key)
    for name in type(model).model_fields:
        value = getattr(model, name)
        if isinstance(value, BaseModel):
            yield from _unknown_keys(value, _join(where, name))
        elif isinstance(value, list):
            for item in value:
                if isinstance(item, BaseModel):
                    yield from _unknown_keys(item, f"{_join(where, name)}[*]")


def _warnings(parsed: ConfigFile) -> list[str]:
    keys = dict.fromkeys(_unknown_keys(parsed, ""))  # ordered, one per key path
    keys.update(dict.fromkeys(f"litellm_settings.{k}" for k in parsed.litellm_settings))
    found = [f"{k}: not implemented by Synapse, ignored" for k in keys]
    strategy = parsed.router_settings.routing_strategy
    if strategy not in _ROUTING_STRATEGIES:
        found.append(
            f"router_settings.routing_strategy: {strategy!r} not implemented; "
            "Synapse balances by least in-flight requests"
        )
    return found


def _master_key_problems(parsed: ConfigFile) -> list[str]:
    """Fail closed: a key that is set but empty or short is an error, never "auth off"."""
    general = parsed.general_settings
    key_is_set = "master_key" in general.model_fields_set
    length = len((general.master_key or "").strip())
    problems = []
    if key_is_set and length < MIN_MASTER_KEY_LENGTH:
        problems.append(
            f"general_settings.master_key: expected a key of at least {MIN_MASTER_KEY_LENGTH} "
            f"characters; got {f'{length} characters' if length else 'an empty value'} "
            "(remove the key to serve without one)"
        )
    if parsed.synapse_settings.ollama_requires_key and not key_is_set:
        problems.append(
            "synapse_settings.ollama_requires_key: expected general_settings.master_key to be set"
        )
    return problems


def _without_consumer_keys(settings: SynapseSettings) -> SynapseSettings:
    """Consumers' keys live on only as digests (`Config.consumers`), never in plain text."""
    consumers = [c.model_copy(update={"key": None}) for c in settings.consumers]
    return settings.model_copy(update={"consumers": consumers})


def _resolve(parsed: ConfigFile, path: Path, from_env: set[str]) -> Config:
    problems = _master_key_problems(parsed)
    router = parsed.router_settings
    groups: dict[str, list[Deployment]] = {}
    ids: set[str] = set()
    for i, entry in enumerate(parsed.model_list):
        params = entry.litellm_params
        provider, _, backend_model = params.model.partition("/")
        default_base = OPENAI_DEFAULT_BASE if provider == "openai" else None
        if provider in ("ollama", "ollama_chat"):
            default_base = OLLAMA_DEFAULT_BASE
        api_base = (params.api_base or default_base or "").rstrip("/")
        if not api_base:
            problems.append(f"model_list[{i}].litellm_params.api_base: required for {provider}/")
        if provider in ("ollama", "ollama_chat") and api_base.endswith("/v1"):
            where = f"model_list[{i}].litellm_params.api_base"
            problems.append(
                f"{where}: the Ollama server's root URL is expected, without /v1; "
                f"got {shown(where, params.api_base, from_env)}"
            )
        group = groups.setdefault(entry.model_name, [])
        dep_id = entry.model_info.id or f"{entry.model_name}#{len(group)}"
        if dep_id in ids:
            problems.append(f"model_list[{i}].model_info.id: duplicate deployment id {dep_id!r}")
        ids.add(dep_id)
        timeout = params.timeout or router.timeout
        group.append(
            Deployment(
                id=dep_id,
                group=entry.model_name,
                provider=provider,
                backend_model=backend_model,
                api_base=api_base,
                api_key=params.api_key,
                timeout=timeout,
                stream_timeout=params.stream_timeout or router.stream_timeout or timeout,
                mode=entry.model_info.mode,
                max_parallel_requests=params.max_parallel_requests,
            )
        )

    aliases: dict[str, str] = {}
    hidden: set[str] = set()
    for alias, target in router.model_group_alias.items():
        name = target if isinstance(target, str) else target.model
        if not isinstance(target, str) and target.hidden:
            hidden.add(alias)
        if name not in groups:
            problems.append(
                f"router_settings.model_group_alias.{alias}: expected an existing model_name; "
                f"got {name!r} (known: {', '.join(sorted(groups))})"
            )
        aliases[alias] = name

    fallbacks: dict[str, tuple[str, ...]] = {}
    for i, item in enumerate(router.fallbacks):
        for source, targets in item.items():
            for name in (source, *targets):
                if name not in groups and name not in aliases:
                    problems.append(
                        f"router_settings.fallbacks[{i}].{source}: expected an existing "
                        f"model_name; got {name!r} (known: {', '.join(sorted(groups))})"
                    )
            fallbacks[aliases.get(source, source)] = tuple(aliases.get(t, t) for t in targets)

    problems += space_problems(parsed, aliases)
    consumers, ollama_consumer, found = resolve_consumers(
        parsed.synapse_settings, set(groups), aliases, parsed.general_settings.master_key
    )
    problems += found
    if problems:
        raise ConfigError(path, problems)
    return Config(
        path=path,
        groups={name: tuple(deps) for name, deps in groups.items()},
        aliases=aliases,
        hidden_aliases=frozenset(hidden),
        fallbacks=fallbacks,
        num_retries=router.num_retries,
        allowed_fails=router.allowed_fails,
        cooldown_time=router.cooldown_time,
        retry_after=router.retry_after,
        master_key=parsed.general_settings.master_key,
        settings=_without_consumer_keys(parsed.synapse_settings),
        warnings=tuple(_warnings(parsed)),
        consumers=consumers,
        ollama_consumer=ollama_consumer,
    )
