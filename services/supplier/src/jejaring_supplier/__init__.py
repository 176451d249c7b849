"""Supplier service."""
