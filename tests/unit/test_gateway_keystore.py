"""The key store's cache: one database read per key at a time, however many requests wait."""

from __future__ import annotations

import asyncio
from pathlib import Path

from jejaring_gateway.adapters.keystore import KeyRecord, KeyStore


async def test_concurrent_misses_share_one_lookup(tmp_path: Path) -> None:
    store = await KeyStore.open(f"sqlite+aiosqlite:///{tmp_path}/keys.db", cache_s=60)
    try:
        _record, token = await store.issue("ops", None)
        reads = 0
        real_get = store.get

        async def counted_get(key_id: str) -> KeyRecord | None:
            nonlocal reads
            reads += 1
            await asyncio.sleep(0.05)  # a slow read: everyone arrives while it runs
            return await real_get(key_id)

        store.get = counted_get  # type: ignore[method-assign]
        principals = await asyncio.gather(*(store.authenticate(token) for _ in range(50)))
        assert reads == 1
        assert all(p is not None and p.role == "ops" for p in principals)
        assert store.cached(token) == principals[0]  # and the answer is cached
    finally:
        await store.close()


async def test_a_cancelled_waiter_does_not_cancel_the_others(tmp_path: Path) -> None:
    store = await KeyStore.open(f"sqlite+aiosqlite:///{tmp_path}/keys.db", cache_s=60)
    try:
        _record, token = await store.issue("ops", None)
        real_get = store.get

        async def slow_get(key_id: str) -> KeyRecord | None:
            await asyncio.sleep(0.05)
            return await real_get(key_id)

        store.get = slow_get  # type: ignore[method-assign]
        first = asyncio.create_task(store.authenticate(token))
        second = asyncio.create_task(store.authenticate(token))
        await asyncio.sleep(0.01)
        first.cancel()
        assert (await second) is not None
    finally:
        await store.close()
