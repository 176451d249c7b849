"""Test helpers: a probe service built on the shared backbone, brokers and databases."""
