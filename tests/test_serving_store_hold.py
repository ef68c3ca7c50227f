"""The database thread starts no store call while a control cycle holds it (:meth:`AsyncStore.held`),
and a held call runs once the cycle ends, or after :data:`serving.store.HOLD_MAX_S` at most."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from serving import store as store_mod
from serving.store import AsyncStore, Store


async def test_a_store_call_waits_for_the_cycle_that_holds_the_worker(tmp_path: Path) -> None:
    db = AsyncStore(Store(f"sqlite:///{tmp_path / 'hold.db'}"))
    ran_at: list[float] = []
    try:
        with db.held():
            call = asyncio.ensure_future(db.run(lambda: ran_at.append(time.monotonic())))
            await asyncio.sleep(0.2)  # the cycle's awaits: the worker is idle, the call waits
            assert ran_at == [] and not call.done()
            released = time.monotonic()
        await call
        assert ran_at and ran_at[0] >= released
        # not held: a call runs at once
        t = time.monotonic()
        await db.run(lambda: ran_at.append(time.monotonic()))
        assert ran_at[1] - t < 0.1
    finally:
        db.close()


async def test_a_cycle_that_runs_long_holds_the_worker_no_longer_than_the_bound(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_mod, "HOLD_MAX_S", 0.3)
    db = AsyncStore(Store(f"sqlite:///{tmp_path / 'hold.db'}"))
    ran_at: list[float] = []
    try:
        with db.held():
            t = time.monotonic()
            call = asyncio.ensure_future(db.run(lambda: ran_at.append(time.monotonic())))
            await asyncio.sleep(1.0)
            assert call.done() and 0.25 <= ran_at[0] - t < 0.9
    finally:
        db.close()
