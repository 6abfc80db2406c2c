"""Synapse: one OpenAI- and Ollama-compatible endpoint for every model in the cluster."""

__version__ = "0.1.0"
