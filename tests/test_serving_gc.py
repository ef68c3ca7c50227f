"""The garbage collector kept out of the control cycle (:mod:`serving.gc_pause`): a full collection at
1,000 stations took 90-110 ms and doubled the cycle it landed in."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agents.base import Decision
from envs.core import Snapshot
from serving.gc_pause import collection_paused, freeze_start_up
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site


class SeesTheCollector(FullPower):
    """Records whether automatic garbage collection was on each time it decided (on its worker thread)."""

    name = "sees-the-collector"

    def __init__(self) -> None:
        self.collector_on: list[bool] = []

    def act(self, snapshot: Snapshot) -> Decision:
        self.collector_on.append(gc.isenabled())
        return Decision(np.where(snapshot.state.ev_present, np.asarray(self.site.rated_kw), 0.0))


@pytest.fixture
def collector_on() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_collection_is_paused_inside_the_block_and_restored_after(collector_on: None) -> None:
    with collection_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), collection_paused():
        raise RuntimeError("a cycle failed")
    assert gc.isenabled()  # on again after an error
    gc.disable()
    with collection_paused():
        pass
    assert not gc.isenabled()  # a caller that had it off keeps it off


async def test_a_cycle_decides_with_the_collector_paused_and_turns_it_back_on(
    tmp_path: Path, collector_on: None
) -> None:
    policy = SeesTheCollector()
    svc = Service(serving_config(tmp_path), small_site(), policy, PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        await svc.run_cycle()
        await svc.run_cycle()
    finally:
        await svc.stop()
    assert policy.collector_on == [False, False]
    assert gc.isenabled()


def test_start_up_objects_are_frozen_out_of_later_collections() -> None:
    kept = [[k] for k in range(1000)]  # alive now, as a service's start-up objects are
    try:
        frozen = freeze_start_up()
        assert frozen == gc.get_freeze_count() >= len(kept)
        walked = {id(x) for x in gc.get_objects(generation=2)}  # what a full collection walks
        assert not any(id(x) in walked for x in kept)
    finally:
        gc.unfreeze()
