"""Entities, rules and the events they raise."""
