"""An AsyncAPI 3.0 document generated from the event registry."""

from __future__ import annotations

from typing import Any

from .contracts import Envelope, EventRegistry

_SERVERS = {
    "local": {
        "host": "127.0.0.1:9092",
        "protocol": "kafka",
        "description": "The local single-node broker that `make run` starts",
    }
}


def _message_name(event: str) -> str:
    return "".join(part.capitalize() for part in event.replace(".", "_").split("_"))


def build_asyncapi(registry: EventRegistry, *, version: str = "0.1.0") -> dict[str, Any]:
    envelope_schema = Envelope.model_json_schema()
    # Each message narrows `payload` to its own schema; the envelope keeps the property so
    # that its additionalProperties=false does not refuse every real event.
    envelope_schema["properties"]["payload"] = {
        "type": "object",
        "description": "The event's payload; each message gives its schema",
    }
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    components: dict[str, Any] = {"messages": {}, "schemas": {"Envelope": envelope_schema}}
    for et in registry:
        name = _message_name(et.name)
        schema = et.model.model_json_schema(ref_template="#/components/schemas/{model}")
        for def_name, definition in schema.pop("$defs", {}).items():
            components["schemas"][def_name] = definition
        components["schemas"][name] = schema
        components["messages"][name] = {
            "name": et.name,
            "title": et.name,
            "summary": et.summary,
            "contentType": "application/json",
            "headers": {
                "type": "object",
                "properties": {
                    "event_type": {"type": "string", "const": et.name},
                    "event_id": {"type": "string", "format": "uuid"},
                },
            },
            "payload": {
                "allOf": [
                    {"$ref": "#/components/schemas/Envelope"},
                    {
                        "type": "object",
                        "required": ["type", "payload"],
                        "properties": {
                            "type": {"const": et.name},
                            "version": {"const": et.version},
                            "payload": {"$ref": f"#/components/schemas/{name}"},
                        },
                    },
                ]
            },
            "x-version": et.version,
        }
        channel = channels.setdefault(
            et.topic.replace(".", "_"),
            {
                "address": et.topic,
                "description": "Commands to the service"
                if et.topic.endswith(".commands")
                else "Events of the owning service, keyed by aggregate",
                "messages": {},
            },
        )
        channel["messages"][name] = {"$ref": f"#/components/messages/{name}"}
    for channel_id, channel in channels.items():
        operations[f"publish_{channel_id}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{channel_id}"},
            "messages": [
                {"$ref": f"#/channels/{channel_id}/messages/{m}"} for m in channel["messages"]
            ],
        }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Jejaring events",
            "version": version,
            "description": (
                "Every event travels in the Envelope. The Kafka key is the aggregate "
                "(outlet_id:sku for stock, the request id for transfers), so one "
                "aggregate's events stay in order. Consumers de-duplicate by envelope id."
            ),
        },
        "defaultContentType": "application/json",
        "servers": _SERVERS,
        "channels": channels,
        "operations": operations,
        "components": components,
    }


def main() -> None:
    """`python -m jejaring_shared.asyncapi [PATH]`: write (or print) the document."""
    import json
    import sys
    from pathlib import Path

    from .contracts import REGISTRY

    text = json.dumps(build_asyncapi(REGISTRY), indent=2, sort_keys=False) + "\n"
    if len(sys.argv) > 1:
        Path(sys.argv[1]).parent.mkdir(parents=True, exist_ok=True)
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)


if __name__ == "__main__":
    main()
