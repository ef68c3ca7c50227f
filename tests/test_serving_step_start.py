"""A cycle on the UTC grid decides its step from the step's start, as the environment's policy does (issue 15:
measured from the cycle, 1 s into the step, every EV had one whole step fewer left for the rule-based
policy, ``floor(time_left / dt)``, at every step of its stay, and the live EVs charged ahead of the
environment's before the V2G window)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.config import site_from_dict
from envs.core import SiteArrays
from envs.physics import ev_terms
from serving.config import connector_map
from serving.events import ChargingNeeds, TransactionStarted
from serving.live import EPOCH, LiveSite, build_snapshot, step_start
from serving.service import Service
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_site

GRID = datetime(2026, 3, 2, 8, 0, 0, tzinfo=UTC)


def _snapshot(tmp_path: Path, phase: float | None, into_s: float) -> tuple[float, np.datetime64, int]:
    """One EV leaving 12 steps of 10 s after a step's start, a cycle ``into_s`` into that step:
    (its time left in s, the snapshot's time, its whole steps left)."""
    cfg = serving_config(tmp_path, control_interval_s=10.0, cycle_phase_s=phase)
    site = SiteArrays.from_config(site_from_dict(small_site().model_dump()))
    live = LiveSite.build(site, connector_map(cfg, site.config), ["CP1", "CP2"])
    c = live.connectors[0]
    c.tx_pk, c.ocpp_tx_id, c.energy_asked_kwh, c.tx_start = 1, "1", 5.0, GRID
    c.departure = GRID + timedelta(seconds=120)
    now = GRID + timedelta(seconds=into_s)
    snap, _ = build_snapshot(live, cfg, 1, np.full(4, np.inf), now_mono=1.0, now_utc=now)
    steps = int(np.asarray(ev_terms(site, snap.state).steps_left)[0])
    return float(snap.state.time_left_h[0]) * 3600.0, snap.timestamp, steps


@pytest.mark.parametrize("into_s", [1.0, 0.1, 4.9, 9.99])
def test_a_cycle_on_the_grid_sees_the_time_left_from_its_steps_start(tmp_path: Path, into_s: float) -> None:
    left_s, stamp, steps = _snapshot(tmp_path, 1.0, into_s)
    assert left_s == pytest.approx(120.0)
    assert steps == 12  # as the environment's snapshot of the step: 12 steps of 10 s left
    assert stamp == np.datetime64(GRID.replace(tzinfo=None), "s")


def test_a_cycle_off_the_grid_sees_the_time_left_from_itself(tmp_path: Path) -> None:
    """Without ``cycle_phase_s`` cycles keep no grid: the time left is the departure less the cycle's time."""
    left_s, _, steps = _snapshot(tmp_path, None, 1.0)
    assert left_s == pytest.approx(119.0)
    assert steps == 11


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.floats(min_value=0.0, max_value=3.0e8, allow_nan=False),
    interval=st.sampled_from([0.5, 1.0, 10.0, 60.0, 900.0]),
    phase=st.floats(min_value=0.0, max_value=5.0),
)
def test_step_start_is_the_grid_time_at_or_before_the_cycle(
    seconds: float, interval: float, phase: float
) -> None:
    cfg = serving_config(Path("/nonexistent"), control_interval_s=interval, cycle_phase_s=phase)
    utc = datetime(2020, 1, 1, tzinfo=UTC) + timedelta(seconds=seconds)
    start = step_start(utc, cfg)
    gap = (utc - start).total_seconds()
    assert -1e-6 <= gap < interval + 1e-6
    assert (start - EPOCH) % timedelta(microseconds=round(interval * 1e6)) == timedelta(0)  # exactly on it


@pytest.mark.parametrize("jitter_ms", [0.6, -0.4, 0.0])
async def test_a_departure_declared_off_the_second_is_taken_to_the_second(
    tmp_path: Path, jitter_ms: float
) -> None:
    """A station turns the EV's departure (whole seconds from now) into a time on its own clock, a fraction of
    a millisecond off the grid: 480.0006 s left counted as 49 steps of 10 s where the EV has 48, and the
    rule-based policy's first decision in the V2G benchmark was 248 kW against the environment's 160."""
    cfg = serving_config(tmp_path, control_interval_s=10.0, cycle_phase_s=1.0)
    svc = Service(cfg, small_site(), FullPower(), PASSWORDS)
    await svc.start(http=False, loop=False)
    try:
        await svc.updater.transaction_started(TransactionStarted("CP1", 1, "t1", "tag", 0.0, GRID))
        departure = GRID + timedelta(seconds=480, milliseconds=jitter_ms)
        svc.updater.charging_needs(ChargingNeeds("CP1", 1, 350.0, 16.0, None, departure))
        c = svc.live.connectors[0]
        snap, _ = build_snapshot(svc.live, cfg, 1, np.full(4, np.inf), now_utc=GRID + timedelta(seconds=1))
    finally:
        await svc.stop()
    assert c.departure == GRID + timedelta(seconds=480)
    assert float(snap.state.time_left_h[0]) * 3600.0 == pytest.approx(480.0, abs=1e-9)


def test_a_cycle_moves_the_policys_step_on_only_in_a_new_step(tmp_path: Path) -> None:
    """EVs that arrive just after a step's start have their needs in before its regular cycle: the step is
    decided then (a decision again, of the last cycle's index, before), and its regular cycle 0.5 s later
    decides the same step again. Counted as a new step (before), the rule-based policy took the first
    decision's offers as a whole step gone by and charged 215 kW where it had decided 160."""
    cfg = serving_config(tmp_path, control_interval_s=10.0, cycle_phase_s=1.0)
    loop = Service(cfg, small_site(), FullPower(), PASSWORDS).loop
    at = [0.5, 1.0, 11.0, 11.6, 12.0, 25.0]
    redecide = [True, False, False, True, True, False]
    new = [loop._new_step(r, GRID + timedelta(seconds=s)) for r, s in zip(redecide, at, strict=True)]
    assert new == [True, False, True, False, False, True]
    off = Service(
        serving_config(tmp_path / "off", control_interval_s=10.0), small_site(), FullPower(), PASSWORDS
    )
    assert [off.loop._new_step(r, GRID) for r in redecide] == [
        not r for r in redecide
    ]  # off the grid: as asked
