"""Embedding requests from both APIs: one cache, then micro-batches to the backends."""
