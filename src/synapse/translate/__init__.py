"""Translation between Ollama's native API and OpenAI's, both directions; pure functions."""
