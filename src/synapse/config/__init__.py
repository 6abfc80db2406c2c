"""Configuration: LiteLLM's proxy format, validated at load with precise messages."""

from synapse.config.loader import ConfigError, load_config
from synapse.config.model import Config, Deployment

__all__ = ["Config", "ConfigError", "Deployment", "load_config"]
