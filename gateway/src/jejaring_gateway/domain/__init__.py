"""Identities and access rules."""
