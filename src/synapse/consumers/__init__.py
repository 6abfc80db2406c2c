"""Consumers at request time: who is calling (by key or by listener), what they may use, how
much of it at once. Their configuration lives in synapse.config.consumers."""
