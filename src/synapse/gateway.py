"""The running gateway: current config and router, backend pool, readiness, reloads.

Handlers read `gateway.router` once at the start of a request, so a reload swaps the router
for new requests while in-flight ones finish on the config they started with.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

from synapse import metrics
from synapse.backends.upstream import connections_per_backend, new_pool
from synapse.config import Config, ConfigError, load_config
from synapse.embeddings.batcher import Batcher
from synapse.embeddings.cache import VectorCache
from synapse.http.client import Pool
from synapse.routing import Router
from synapse.routing.deployment import DeploymentState

log = logging.getLogger("synapse")
# Connections per backend host:port for health checks, and (apart) for model metadata
# (/api/tags, /api/ps, /api/show of OpenAI-compatible models): pools of their own, so a
# check never waits behind callers' requests, nor behind a flood of listings.
SIDE_CONNECTIONS = 4


class Gateway:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.router = Router(config, self._states(config, {}))
        self.started_at = time.time()
        self.ready = False
        self.draining = False
        self.session: Pool | None = None  # callers' requests
        self.check_pool: Pool | None = None  # health checks
        self.lookup_pool: Pool | None = None  # model metadata
        self.embedding_cache = VectorCache(config.settings.embedding_cache)
        self.embedding_batcher = Batcher(config.settings)

    @property
    def http(self) -> Pool:
        assert self.session is not None, "gateway not started"
        return self.session

    @property
    def checks(self) -> Pool:
        assert self.check_pool is not None, "gateway not started"
        return self.check_pool

    @property
    def lookups(self) -> Pool:
        assert self.lookup_pool is not None, "gateway not started"
        return self.lookup_pool

    async def start(self) -> None:
        settings = self.config.settings
        parallel = ((d.host_port, d.max_parallel_requests) for d in self.config.deployments)
        per_backend = connections_per_backend(parallel, settings.backend_connections)
        self.session = new_pool(settings.connect_timeout, per_backend)  # read at start
        self.check_pool = new_pool(settings.connect_timeout, SIDE_CONNECTIONS)
        self.lookup_pool = new_pool(settings.connect_timeout, SIDE_CONNECTIONS)
        self.ready = True

    async def stop(self) -> None:
        self.ready = False
        for pool in (self.session, self.check_pool, self.lookup_pool):
            if pool is not None:
                await pool.close()

    def reload(self, path: Path | None = None) -> bool:
        """Validate the file and swap the router atomically; keep serving the old one if bad."""
        path = path or self.config.path
        try:
            config = load_config(path)
        except ConfigError as exc:
            metrics.CONFIG_RELOADS.labels("failed").inc()
            log.error(
                "config reload failed; still serving the previous config",
                extra={
                    "fields": {"event": "config_reload", "errors": exc.problems, "path": str(path)}
                },
            )
            return False
        states = self._states(config, self.router.states)
        self._reconfigure_embeddings(self.config, config)
        self.config = config
        self.router = Router(config, states)
        metrics.CONFIG_RELOADS.labels("ok").inc()
        for warning in config.warnings:
            log.warning(warning, extra={"fields": {"event": "config_warning"}})
        log.info(
            "config reloaded",
            extra={
                "fields": {"event": "config_reload", "path": str(path), "deployments": len(states)}
            },
        )
        return True

    def _reconfigure_embeddings(self, old: Config, new: Config) -> None:
        """New limits; cached vectors of a group whose deployments changed may differ: drop."""
        self.embedding_batcher.configure(new.settings)
        self.embedding_batcher.tuner.forget({d.id for d in new.deployments})
        self.embedding_cache.configure(new.settings.embedding_cache)
        changed = {g for g in {*old.groups, *new.groups} if old.groups.get(g) != new.groups.get(g)}
        self.embedding_cache.drop_groups(changed)

    @staticmethod
    def _states(config: Config, previous: dict[str, DeploymentState]) -> dict[str, DeploymentState]:
        """States for the new config, reusing those of unchanged deployments."""
        settings = config.settings
        wanted = {dep.id: dep for dep in config.deployments}
        for dep_id, old in previous.items():
            if wanted.get(dep_id) != old.deployment:  # dropped or changed: forget its series
                for gauge in (metrics.IN_FLIGHT, metrics.QUEUED, metrics.BREAKER_STATE):
                    _remove(gauge, dep_id)
                _remove(
                    metrics.DEPLOYMENT_UP, old.deployment.group, dep_id, old.deployment.provider
                )
        states: dict[str, DeploymentState] = {}
        for dep_id, dep in wanted.items():
            old = previous.get(dep_id)
            if old is not None and old.deployment == dep:
                old.breaker.allowed_fails = config.allowed_fails
                old.breaker.cooldown = config.cooldown_time
                old.queue_size = settings.queue_size
                old.queue_timeout = settings.queue_timeout
                old.batch_aging = settings.batch_aging
                states[dep_id] = old
            else:
                states[dep_id] = DeploymentState(
                    dep,
                    allowed_fails=config.allowed_fails,
                    cooldown=config.cooldown_time,
                    queue_size=settings.queue_size,
                    queue_timeout=settings.queue_timeout,
                    batch_aging=settings.batch_aging,
                )
        return states


def _remove(gauge: object, *labels: str) -> None:
    with contextlib.suppress(KeyError):
        gauge.remove(*labels)  # type: ignore[attr-defined]
