"""Jejaring shared library: contracts, outbox, consumer runner, settings and db helpers."""
