"""A decrease that cannot be sent this cycle (its station still busy with an earlier batch) holds the
increases that would use its headroom (serving/hold.py, :func:`serving.hold.hold_for_unsent`).

Traced in the V2G benchmark at 1,000 stations: a batch of 519 profiles was still on its way at the next
cycle, whose decreases for those stations were skipped while its increases went out to the others; a
feeder carried two chargers (22 kW) above its limit for 5 s."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays
from serving.dispatch import Dispatcher
from serving.hold import hold_for_unsent, hold_rows
from serving.live import LiveSite
from serving.metrics import Metrics
from tests.test_serving_helpers import feeder_site

MAPPING = {("CP1", 1): "CP1-1", ("CP1", 2): "CP1-2", ("CP2", 1): "CP2-1", ("CP2", 2): "CP2-2"}


class _Accepting:
    """A 1.6 station connection that accepts every profile and records which connector it was for."""

    version = "1.6"

    def __init__(self, sid: str, log: list[tuple[str, int]]) -> None:
        self.id = sid
        self.log = log

    async def call(self, req: Any, **_: Any) -> Any:
        self.log.append((self.id, int(req.connector_id)))

        class _Res:
            status = "Accepted"

        return _Res()


def _dispatcher(site: SiteArrays, limits_kw: list[float], log: list[tuple[str, int]]) -> Dispatcher:
    live = LiveSite.build(site, MAPPING, ["CP1", "CP2"])
    for c, kw in zip(live.connectors, limits_kw, strict=True):
        c.tx_pk, c.ocpp_tx_id = c.index + 1, str(c.index + 1)
        c.limit_kw, c.limit_value = kw, kw
    for st_ in live.stations.values():
        st_.registered = True
    d = Dispatcher(site, live, np.full(site.n, 2.0), Metrics(), "tx_default", asyncio.ensure_future)
    for sid in ("CP1", "CP2"):
        d.connections[sid] = _Accepting(sid, log)  # type: ignore[assignment]
    return d


async def _send(busy: set[str]) -> tuple[list[tuple[str, int]], Dispatcher]:
    """Feeder f1 (30 kW) carries CP1-1 (11 kW), CP1-2 (11 kW) and CP2-1 (0); f2 CP2-2 (0). The new plan
    moves 11 kW on f1 from CP1-1 to CP2-1 and gives CP2-2 5 kW; the stations in ``busy`` are busy."""
    site = SiteArrays.from_config(feeder_site(feeder_kw=30.0, import_limit_kw=60.0))
    log: list[tuple[str, int]] = []
    d = _dispatcher(site, [11.0, 11.0, 0.0, 0.0], log)
    d._busy.update(busy)
    d.send(np.array([0.0, 11.0, 11.0, 5.0]), [0, 2, 3], period_s=10.0)
    for _ in range(50):
        await asyncio.sleep(0)
    return log, d


async def test_an_increase_waits_for_a_decrease_its_station_cannot_take_yet() -> None:
    log, d = await _send(busy={"CP1"})
    # CP1-1's decrease cannot go (CP1 busy): CP2-1 may not take the 11 kW it was to free on f1
    assert ("CP2", 1) not in log
    # CP2-2's increase, on the other feeder and within the import limit, still goes out
    assert ("CP2", 2) in log
    assert d.metrics.counters[("increases_held_total", ())] == 1.0
    # with every station free, the whole plan goes out (the decrease first)
    log, _ = await _send(busy=set())
    assert log[0] == ("CP1", 1) and {("CP2", 1), ("CP2", 2)} <= set(log)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(
    st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    st.lists(st.floats(0.0, 11.04), min_size=4, max_size=4),
    st.lists(st.booleans(), min_size=4, max_size=4),
)
def test_what_the_feeders_carry_with_unsent_decreases_stays_within_the_plans(
    old: list[float], new: list[float], unsent_mask: list[bool]
) -> None:
    """Whatever the old and new limits and whichever chargers cannot be written: with the unsent ones at
    their old limit and the held ones too, no feeder and not the site carry more than under the old or
    the new limits."""
    site = SiteArrays.from_config(feeder_site(feeder_kw=30.0, import_limit_kw=60.0))
    live = LiveSite.build(site, MAPPING, ["CP1", "CP2"])
    for c, kw in zip(live.connectors, old, strict=True):
        c.limit_kw = kw
    chosen = [(c, old[c.index]) for c in live.connectors if not unsent_mask[c.index]]
    unsent = [c for c in live.connectors if unsent_mask[c.index]]
    new_kw = np.array(new)
    go, stay, where = hold_for_unsent(
        hold_rows(site), chosen, unsent, new_kw, None, np.zeros(4), 10.0, 2.0, 0.0
    )
    actual = np.array(old)
    for c, _ in go:
        actual[c.index] = new[c.index]
    assert np.allclose(where[stay], actual[stay])
    rows = hold_rows(site)
    carried = rows.T @ actual
    bound = np.maximum(rows.T @ np.array(old), rows.T @ new_kw)
    assert np.all(carried <= bound + 1e-9)
