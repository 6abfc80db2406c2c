"""Routing: model name or alias → group → deployment, with retries, fallbacks and breakers."""

from synapse.routing.router import Router, Trace

__all__ = ["Router", "Trace"]
