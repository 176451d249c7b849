"""Alembic migrations of this service (applied on start)."""
