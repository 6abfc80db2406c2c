"""HTTP surfaces: OpenAI (/v1 and unprefixed), Ollama (/api), audio, health and metrics."""
