"""Jejaring developer tools: run a local Kafka broker and PostgreSQL server without containers."""

from jejaring_devtools.kafka import KAFKA_VERSION, KafkaBroker, KafkaError, ensure_kafka_jars
from jejaring_devtools.paths import cache_dir, data_dir, free_port, repo_root
from jejaring_devtools.postgres import PostgresError, PostgresServer

__all__ = [
    "KAFKA_VERSION",
    "KafkaBroker",
    "KafkaError",
    "PostgresError",
    "PostgresServer",
    "cache_dir",
    "data_dir",
    "ensure_kafka_jars",
    "free_port",
    "repo_root",
]
