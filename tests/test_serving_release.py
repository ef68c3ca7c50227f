"""Increases released as the decreases they count on are accepted (:mod:`serving.release`): sooner than
after the slowest station, never before the headroom they use is freed, and never where a decrease that
freed it was not accepted."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays
from serving.config import connector_map
from serving.hold import hold_rows
from serving.live import ConnectorLive, LiveSite
from serving.order import site_excess_kw
from serving.release import Item, send_released
from tests.test_serving_helpers import feeder_site, serving_config, small_site


def _site(feeder: bool) -> tuple[SiteArrays, list[ConnectorLive]]:
    config = feeder_site(feeder_kw=25.0, import_limit_kw=40.0) if feeder else small_site()
    site = SiteArrays.from_config(config)
    live = LiveSite.build(site, connector_map(serving_config(Path("never-written")), config), ["CP1", "CP2"])
    return site, live.connectors


class Stations:
    """Fake stations: each answers after its delay (s), accepting unless it is in ``refuse``; records
    the worst the site may draw while calls are on their way (a decrease counts once answered, an
    increase from when it went out)."""

    def __init__(self, site: SiteArrays, old: np.ndarray, delays: dict[str, float], refuse: set[str]) -> None:
        self.site, self.delays, self.refuse = site, delays, refuse
        self.worst = old.astype(float).copy()
        self.worst_excess = site_excess_kw(site, self.worst, 0.0)
        self.log: list[tuple[str, str]] = []

    async def send(self, sid: str, items: list[Item]) -> bool:
        for c, kw, _ in items:
            if kw > self.worst[c.index]:
                self.worst[c.index] = kw  # an increase may act as soon as it is sent
        self.worst_excess = max(self.worst_excess, site_excess_kw(self.site, self.worst, 0.0))
        self.log.append(("sent", sid))
        await asyncio.sleep(self.delays.get(sid, 0.0))
        ok = sid not in self.refuse
        if ok:
            for c, kw, _ in items:
                self.worst[c.index] = kw
        self.log.append(("answered", sid))
        return ok


def _stages(
    connectors: list[ConnectorLive], old: np.ndarray, new: np.ndarray
) -> tuple[dict[str, list[Item]], dict[str, list[Item]], np.ndarray]:
    """One fake station per charger (``S<i>``): the decreases, the increases and the moves."""
    down: dict[str, list[Item]] = {
        f"S{c.index}": [(c, float(new[c.index]), None)] for c in connectors if new[c.index] < old[c.index]
    }
    up: dict[str, list[Item]] = {
        f"S{c.index}": [(c, float(new[c.index]), None)] for c in connectors if new[c.index] > old[c.index]
    }
    return down, up, new - old


async def test_an_increase_goes_once_the_decrease_it_counts_on_is_in_not_after_the_slowest() -> None:
    """30 kW site near its limit: two chargers cut 11.04 -> 4.14 kW, two raised 3.9 -> 10.8. The first
    cut answers at once, the second in 0.3 s: the first raise goes as soon as the first cut is in (the
    second cut's 6.9 kW still covered by the raise held back), the second once the second is."""
    site, conns = _site(feeder=False)
    old, new = np.array([11.04, 11.04, 3.9, 3.9]), np.array([4.14, 4.14, 10.8, 10.8])
    down, up, moves = _stages(conns, old, new)
    stations = Stations(site, old, {"S0": 0.0, "S1": 0.3}, set())
    ok, held = await send_released(hold_rows(site), down, moves, up, moves, stations.send)
    assert (ok, held) == (True, 0)
    order = stations.log
    first_raise = min(order.index(("sent", "S2")), order.index(("sent", "S3")))
    second_raise = max(order.index(("sent", "S2")), order.index(("sent", "S3")))
    assert order.index(("answered", "S0")) < first_raise < order.index(("answered", "S1")) < second_raise
    assert stations.worst_excess <= 1e-9


async def test_a_decrease_not_accepted_holds_the_increase_that_counts_on_it() -> None:
    site, conns = _site(feeder=False)
    old, new = np.array([11.04, 11.04, 3.9, 3.9]), np.array([4.14, 4.14, 10.8, 10.8])
    down, up, moves = _stages(conns, old, new)
    stations = Stations(site, old, {"S0": 0.01, "S1": 0.05}, {"S1"})
    ok, held = await send_released(hold_rows(site), down, moves, up, moves, stations.send)
    assert (ok, held) == (False, 1)
    assert sum(1 for what, sid in stations.log if what == "sent" and sid in ("S2", "S3")) == 1
    assert stations.worst_excess <= 1e-9


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    feeder=st.booleans(),
    old=st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    new=st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    delays=st.lists(st.sampled_from([0.0, 0.001, 0.003, 0.006]), min_size=4, max_size=4),
    refuse=st.sets(st.integers(0, 3), max_size=2),
)
def test_the_site_stays_within_its_limits_whatever_the_answers(
    feeder: bool, old: list[float], new: list[float], delays: list[float], refuse: set[int]
) -> None:
    """Both plans within the limits (scaled down until they are); stations answering in any order, some
    refusing: while the batch is on its way the site never draws more than a limit allows."""
    site, conns = _site(feeder)
    plans = []
    for kw in (np.array(old), np.array(new)):
        while site_excess_kw(site, kw, 0.0) > 0:
            kw = kw * 0.9
        plans.append(kw)
    down, up, moves = _stages(conns, plans[0], plans[1])
    stations = Stations(site, plans[0], {f"S{i}": d for i, d in enumerate(delays)}, {f"S{i}" for i in refuse})
    ok, held = asyncio.run(send_released(hold_rows(site), down, moves, up, moves, stations.send))
    assert stations.worst_excess <= 1e-6
    assert ok == (not (refuse & {int(s[1:]) for s in down}))
    assert held <= len(up)


async def test_a_profile_that_only_changes_its_plan_goes_after_every_decrease() -> None:
    """A charger whose limit now stays (its schedule's later periods changed) rides with the increases
    (:func:`serving.dispatch.stage_writes`): it goes once every decrease was accepted, and is held with
    the increases where one was not."""
    site, conns = _site(feeder=False)
    old, new = np.array([11.04, 4.0, 4.0, 3.9]), np.array([4.14, 4.0, 4.0, 10.8])
    down, up, moves = _stages(conns, old, new)
    up["S1"] = [(conns[1], 4.0, np.array([4.0, 8.0]))]
    stations = Stations(site, old, {"S0": 0.02}, set())
    assert await send_released(hold_rows(site), down, moves, up, moves, stations.send) == (True, 0)
    assert stations.log.index(("answered", "S0")) < stations.log.index(("sent", "S1"))
    refused = Stations(site, old, {"S0": 0.02}, {"S0"})
    assert await send_released(hold_rows(site), down, moves, up, moves, refused.send) == (False, 2)
    assert ("sent", "S1") not in refused.log


async def test_decreases_go_a_few_at_a_time_and_the_increases_follow_each() -> None:
    """One station at a time (``in_flight=1``), four chargers: the largest cut goes first, alone, and a
    raise it frees goes out while the next cut is still on its way. The site stays within its limits."""
    site, conns = _site(feeder=False)
    old, new = np.array([11.04, 8.0, 3.9, 3.9]), np.array([4.14, 7.0, 10.8, 4.8])
    down, up, moves = _stages(conns, old, new)
    stations = Stations(site, old, {"S1": 0.1}, set())
    ok, held = await send_released(hold_rows(site), down, moves, up, moves, stations.send, in_flight=1)
    assert (ok, held) == (True, 0)
    log = stations.log
    assert log[:2] == [("sent", "S0"), ("answered", "S0")]  # the largest cut first, alone
    # S1's 1 kW cut on its way is covered by holding S2's 6.9 kW raise: S3's goes before S1 answers
    assert log.index(("sent", "S1")) < log.index(("sent", "S3")) < log.index(("answered", "S1"))
    assert log.index(("answered", "S1")) < log.index(("sent", "S2"))
    assert stations.worst_excess <= 1e-9
