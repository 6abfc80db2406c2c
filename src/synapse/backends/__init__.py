"""Talking to backends: one pooled HTTP client, failures classified for retry decisions."""
