"""The policy decides a step once; the other cycles of the step re-project its request on their snapshot
and ask the policy again only on an event (issue 15: a regular cycle in a step already decided asked the
rule-based policy again with the EVs a few Wh further on, and its decision moved by tens of kW)."""

from __future__ import annotations

import dataclasses
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.base import Decision
from envs.core import SiteArrays, Snapshot
from envs.share import safe_static_share_kw
from serving.control import Controller
from serving.events import ChargingNeeds, TransactionStarted
from serving.live import SiteMeterReading
from serving.service import Service
from serving.step_decision import StepBasis, what_is_new
from tests.test_serving import _snapshot
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

BASE_KW = 5.0
IMPORT_KW = 30.0
FIRST_KW = (5.0, 8.0)
"""what the policy asks for the two EVs the first time; later it asks :data:`LATER_KW` (it moved)"""
LATER_KW = (9.0, 4.5)
STEP_KW = 0.7
"""the chargers' resolution (1 A on three phases): a limit is the request rounded down to it"""


class Moving(FullPower):
    """Asks :data:`FIRST_KW` at its first call and :data:`LATER_KW` after: which call a cycle's limits come
    from shows in them. Counts its calls."""

    name = "moving"

    def __init__(self) -> None:
        self.calls = 0

    def act(self, snapshot: Snapshot) -> Decision:
        self.calls += 1
        kw = np.zeros(self.site.n)
        kw[:2] = FIRST_KW if self.calls == 1 else LATER_KW
        return Decision(np.where(snapshot.state.ev_present, kw, 0.0))


async def _start(tmp_path: Path, phase: float | None = 0.0, evs: int = 2) -> tuple[Service, Moving]:
    """A service (no loop, no network) on a grid of one hour (every cycle of a test in one step) with
    ``evs`` 1.6 transactions on CP1, started 0.5 s ago (past the arrival reserve's window)."""
    policy = Moving()
    cfg = serving_config(tmp_path, control_interval_s=3600.0, cycle_phase_s=phase)
    svc = Service(cfg, small_site(IMPORT_KW), policy, PASSWORDS)
    await svc.start(http=False, loop=False)
    svc.live.stations["CP1"].ocpp_version = "1.6"
    for k in range(1, evs + 1):
        await _begin(svc, k)
    svc.on_site_meter(BASE_KW, None, datetime.now(UTC))  # stamped: read after the starts
    return svc, policy


async def _begin(svc: Service, connector: int) -> None:
    now = datetime.now(UTC)
    await svc.updater.transaction_started(
        TransactionStarted("CP1", connector, f"t{connector}", "tag", 0.0, now)
    )
    svc.live.connectors[connector - 1].started_at = time.monotonic() - 0.5


def _reasons(svc: Service) -> dict[str, float]:
    why = ("start", "step", "arrival", "departure", "needs", "station", "meter", "limit", "fallback", "held")
    return {r: svc.metrics.count("step_decisions_total", reason=r) for r in why if svc.metrics.count(
        "step_decisions_total", reason=r
    )}  # fmt: skip


async def test_a_cycle_of_a_decided_step_with_nothing_new_reprojects_the_steps_request(
    tmp_path: Path,
) -> None:
    svc, policy = await _start(tmp_path)
    try:
        first = await svc.run_cycle()
        second = await svc.run_cycle()
        cycles = (first.cycle, second.cycle)
    finally:
        await svc.stop()
    assert cycles[0] == cycles[1]  # one step
    assert policy.calls == 1
    assert first.outcome.limits_kw[:2] == pytest.approx(FIRST_KW, abs=STEP_KW)
    assert second.outcome.limits_kw[:2] == pytest.approx(FIRST_KW, abs=STEP_KW)  # the step's, not LATER_KW
    assert second.outcome.policy == "moving" and second.outcome.fallback_reason is None
    assert _reasons(svc) == {"start": 1, "held": 1}


async def test_a_held_cycle_still_clips_to_a_higher_base_load(tmp_path: Path) -> None:
    """Safety first: the step's request is projected on each cycle's reading (a base load up 22 kW leaves
    3 kW of the 30 kW connection for the 13 kW the step asked)."""
    svc, policy = await _start(tmp_path)
    try:
        await svc.run_cycle()
        svc.on_site_meter(BASE_KW + 22.0, None, datetime.now(UTC))
        out = await svc.run_cycle()
    finally:
        await svc.stop()
    assert policy.calls == 1
    assert out.base_load_kw >= BASE_KW + 22.0 - 1e-6
    assert out.outcome.limits_kw.sum() <= IMPORT_KW - out.base_load_kw + 1e-6
    assert out.outcome.planned_import_kw <= IMPORT_KW + 1e-6


async def test_an_arrival_inside_the_step_asks_the_policy_again(tmp_path: Path) -> None:
    svc, policy = await _start(tmp_path, evs=1)
    try:
        await svc.run_cycle()
        await _begin(svc, 2)
        svc.on_site_meter(BASE_KW, None, datetime.now(UTC))  # a reading that may show it
        out = await svc.run_cycle()
    finally:
        await svc.stop()
    assert policy.calls == 2
    assert out.outcome.limits_kw[:2] == pytest.approx(LATER_KW, abs=STEP_KW)  # the new decision
    assert _reasons(svc) == {"start": 1, "arrival": 1}


async def test_needs_arriving_inside_the_step_ask_the_policy_again(tmp_path: Path) -> None:
    svc, policy = await _start(tmp_path)
    try:
        await svc.run_cycle()
        svc.updater.charging_needs(ChargingNeeds("CP1", 1, 1000.0, 8.0, None, None))
        await svc.run_cycle()
        await svc.run_cycle()  # nothing new since
    finally:
        await svc.stop()
    assert policy.calls == 2
    assert _reasons(svc) == {"start": 1, "needs": 1, "held": 1}


async def test_off_the_grid_every_regular_cycle_asks_the_policy(tmp_path: Path) -> None:
    """Without ``cycle_phase_s`` every regular cycle is a step of its own (as before)."""
    svc, policy = await _start(tmp_path, phase=None)
    try:
        outs = [await svc.run_cycle() for _ in range(3)]
    finally:
        await svc.stop()
    assert policy.calls == 3
    assert len({o.cycle for o in outs}) == 3
    assert _reasons(svc) == {"start": 1, "step": 2}


def _basis_and_snapshot(tmp_path: Path) -> tuple[StepBasis, Snapshot, Any, SiteArrays]:
    from serving.config import connector_map
    from serving.live import LiveSite, build_snapshot

    site = SiteArrays.from_config(small_site(IMPORT_KW))
    cfg = serving_config(tmp_path)
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    live.connectors[0].tx_pk, live.connectors[0].ocpp_tx_id = 1, "1"
    live.meter = SiteMeterReading(5.0, None, 0.0)
    snap, _ = build_snapshot(live, cfg, 1, np.full(site.n, np.inf), now_mono=1.0)
    return StepBasis.of(snap, live, site, 1.0, False, True), snap, live, site


def test_what_is_new_names_each_event(tmp_path: Path) -> None:
    basis, snap, live, site = _basis_and_snapshot(tmp_path)
    assert what_is_new(basis, snap, live, site, False) is None
    assert what_is_new(None, snap, live, site, False) == "start"
    assert what_is_new(basis, dataclasses.replace(snap, step_index=2), live, site, False) == "step"
    more = np.asarray(snap.state.ev_present, dtype=bool).copy()
    more[1] = True
    for present, why in ((more, "arrival"), (np.zeros_like(more), "departure")):
        other = dataclasses.replace(snap, state=dataclasses.replace(snap.state, ev_present=present))
        assert what_is_new(basis, other, live, site, False) == why
    assert what_is_new(basis, snap, live, site, True) == "meter"
    lower = dataclasses.replace(site, import_limit_kw=IMPORT_KW - 10.0)
    assert what_is_new(basis, snap, live, lower, False) == "limit"
    assert what_is_new(dataclasses.replace(basis, by_policy=False), snap, live, site, False) == "fallback"
    live.stations["CP2"].connected = not live.stations["CP2"].connected
    assert what_is_new(basis, snap, live, site, False) == "station"
    live.stations["CP2"].connected = not live.stations["CP2"].connected
    live.connectors[0].needs_at = 2.0  # after the basis read (1.0)
    assert what_is_new(basis, snap, live, site, False) == "needs"


@settings(max_examples=40, deadline=None)
@given(base_kw=st.floats(min_value=0.0, max_value=IMPORT_KW), ask=st.floats(min_value=0.0, max_value=11.04))
def test_the_steps_request_held_keeps_the_import_limit_at_any_base_load(
    tmp_path_factory: pytest.TempPathFactory, base_kw: float, ask: float
) -> None:
    """Safety property: whatever the base load of a held cycle, the re-projected plan keeps the limit, and
    the policy is not asked."""
    import asyncio

    tmp_path = tmp_path_factory.mktemp("held")
    site = SiteArrays.from_config(small_site(IMPORT_KW))
    policy = Moving()
    policy.reset(site)
    ctl = Controller(site, policy, None, safe_static_share_kw(site, 5.0), 1.0)
    snap, info = _snapshot(tmp_path, site)
    try:
        asyncio.run(ctl.decide(snap, info.meter_stale))
        ctl.step_request = (np.full(site.n, ask), 0.0, policy.name)  # any plan of the step
        state = dataclasses.replace(snap.state, base_load_kw=base_kw)
        out = asyncio.run(ctl.decide(dataclasses.replace(snap, state=state), False, hold=True))
    finally:
        ctl.close()
    assert policy.calls == 1
    assert base_kw + out.limits_kw.sum() <= IMPORT_KW + 1e-6
