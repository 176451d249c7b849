"""Alembic migrations of the gateway (API keys), applied on start."""
