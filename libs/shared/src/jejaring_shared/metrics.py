"""Prometheus metrics of the event backbone, one registry per service instance."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class BackboneMetrics:
    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        labels = {"service": service}
        self.outbox_backlog = Gauge(
            "jejaring_outbox_backlog",
            "Events in the outbox not yet published",
            registry=self.registry,
        )
        self.outbox_published = Counter(
            "jejaring_outbox_published_total", "Events the relay published", registry=self.registry
        )
        self.outbox_publish_errors = Counter(
            "jejaring_outbox_publish_errors_total",
            "Relay batches that failed (Kafka unavailable, timeout)",
            registry=self.registry,
        )
        self.consumer_lag = Gauge(
            "jejaring_consumer_lag",
            "Messages behind the partition's end",
            ["group", "topic", "partition"],
            registry=self.registry,
        )
        self.handled = Counter(
            "jejaring_consumer_handled_total",
            "Messages applied (or skipped as duplicates)",
            ["group", "type", "outcome"],
            registry=self.registry,
        )
        self.failed = Counter(
            "jejaring_consumer_failed_total",
            "Handler attempts that raised",
            ["group", "type"],
            registry=self.registry,
        )
        self.dead_lettered = Counter(
            "jejaring_consumer_dead_lettered_total",
            "Messages sent to the dead-letter topic",
            ["group", "reason"],
            registry=self.registry,
        )
        self.handle_seconds = Histogram(
            "jejaring_consumer_handle_seconds",
            "Time to apply one message, database commit included",
            ["group"],
            registry=self.registry,
        )
        self.info = Gauge(
            "jejaring_service_info", "Service identity", list(labels), registry=self.registry
        )
        self.info.labels(**labels).set(1)
