"""A probe service: the smallest real service on the shared backbone.

It writes `probe.thing_happened` events through the outbox (POST /things) and applies them
as rows in `effects` through the consumer runner, so the backbone's guarantees can be
checked end to end: exactly once as effects, in order per key.
"""

from __future__ import annotations

import functools
from typing import Annotated, Any

import sqlalchemy as sa
from fastapi import APIRouter, Body
from pydantic import BaseModel, Field
from sqlmodel import Field as SQLField
from sqlmodel import SQLModel

from jejaring_shared.app import ConsumerSpec, ServiceDefinition, UoW
from jejaring_shared.contracts import Envelope, EventRegistry, Payload
from jejaring_shared.db import UnitOfWork
from jejaring_shared.settings import ServiceSettings

PROBE_TOPIC = "probe.things"


class ThingHappened(Payload):
    """A numbered thing happened to a key."""

    key: str = Field(max_length=100)
    seq: int = Field(ge=0)


@functools.cache
def registry_for(topic: str) -> EventRegistry:
    """Tests sharing a broker each use a topic of their own, so none sees another's events."""
    registry = EventRegistry()
    registry.register("probe.thing_happened", topic=topic)(ThingHappened)
    return registry


def group_for(topic: str) -> str:
    return topic.replace(".", "-") + "-effects"


REGISTRY = registry_for(PROBE_TOPIC)
GROUP = group_for(PROBE_TOPIC)


class Effect(SQLModel, table=True):
    __tablename__ = "effects"

    id: int | None = SQLField(default=None, primary_key=True)
    event_id: str
    key: str
    seq: int
    applied_by: str = "?"


class ThingIn(BaseModel):
    model_config = {"extra": "forbid"}
    key: str = Field(max_length=100)
    seq: int = Field(ge=0)


router = APIRouter()


@router.post("/things", status_code=201)
async def post_things(things: Annotated[list[ThingIn], Body()], uow: UoW) -> dict[str, int]:
    async with uow:
        for t in things:
            uow.publish(ThingHappened(key=t.key, seq=t.seq), key=t.key)
        await uow.commit()
    return {"written": len(things)}


def make_handler(applied_by: str = "?") -> Any:
    async def apply_thing(uow: UnitOfWork, envelope: Envelope, payload: ThingHappened) -> None:
        if payload.key == "boom":
            raise RuntimeError("the handler cannot apply key 'boom'")
        uow.session.add(
            Effect(
                event_id=str(envelope.id), key=payload.key, seq=payload.seq, applied_by=applied_by
            )
        )

    return apply_thing


def definition(
    *,
    topic: str = PROBE_TOPIC,
    consume: bool = True,
    applied_by: str = "?",
    after_db_commit: Any = None,
) -> ServiceDefinition:
    handlers = {"probe.thing_happened": make_handler(applied_by)}
    consumers = [ConsumerSpec(group_for(topic), [topic], handlers)] if consume else []
    return ServiceDefinition(
        name="probe",
        migrations_package="support.probe_migrations",
        routers=[router],
        consumers=consumers,
        topics=[topic],
        registry=registry_for(topic),
        after_db_commit=after_db_commit,
    )


def settings(database_url: str, bootstrap: str, **extra: Any) -> ServiceSettings:
    from jejaring_shared.settings import KafkaSettings

    return ServiceSettings(
        service_name="probe",
        database_url=database_url,
        kafka=KafkaSettings(bootstrap_servers=bootstrap, request_timeout_s=5.0),
        relay_idle_poll_s=0.1,
        **extra,
    )


async def effects(engine: Any) -> list[tuple[str, str, int, str]]:
    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text("SELECT event_id, key, seq, applied_by FROM effects ORDER BY id")
        )
        return [tuple(r) for r in rows]
