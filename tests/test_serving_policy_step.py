"""A policy trained on a long step, served by a 10-second control loop (:mod:`serving.policy_step`).

It decides on its own grid (the first cycle, then once per step), the decision is held in between and
re-projected by the controller every cycle on the live measurements, and an arrival or a departure makes
it decide early. Table-driven over the cycles of one step, with a fake policy that counts what it saw.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from agents.base import Decision
from envs.core import ForecastWindow, SiteArrays, SiteState, Snapshot
from envs.scenario import Scenario
from envs.share import safe_static_share_kw
from serving.control import Controller
from serving.policy_step import OwnStepPolicy, on_own_step, on_policy_grid
from tests.test_serving_helpers import serving_config, small_site

INTERVAL_S = 10.0
STEP_S = 900.0
T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = 24 * 360  # a day of 10-second control intervals


class AskEverything:
    """A stand-in for a learned policy trained on 15-minute steps: asks each present EV's full rating
    and records every snapshot it is shown."""

    name = "ask-everything"
    step_s = STEP_S

    def __init__(self) -> None:
        self.seen: list[Snapshot] = []
        self.rated_kw = np.zeros(0)

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.rated_kw = np.asarray(site.rated_kw, dtype=float)

    def act(self, snapshot: Snapshot) -> Decision:
        self.seen.append(snapshot)
        return Decision(np.where(snapshot.state.ev_present, self.rated_kw, 0.0), 0.0)


def _snapshot(seconds: float, present: list[bool], base_kw: float = 5.0) -> Snapshot:
    """A live snapshot ``seconds`` after 12:00 UTC, on the 10-second control grid."""
    n = len(present)
    state = SiteState(
        ev_present=np.array(present),
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.zeros(n),
        energy_needed_kwh=np.full(n, 30.0),
        energy_room_kwh=np.full(n, 30.0),
        energy_dischargeable_kwh=np.zeros(n),
        time_left_h=np.full(n, 6.0),
        base_load_kw=base_kw,
        pv_kw=0.0,
        dt_h=INTERVAL_S / 3600,
    )
    minutes = np.arange(WINDOW) * INTERVAL_S / 60.0
    window = ForecastWindow(base_kw + minutes, np.zeros(WINDOW), np.full(WINDOW, 0.3), np.full(WINDOW, 0.05))
    stamp = np.datetime64(T0.replace(tzinfo=None), "s") + np.timedelta64(int(seconds), "s")
    return Snapshot(state, stamp, int(seconds // INTERVAL_S), 0.3, 0.05, window, 0.0)


def _served() -> tuple[OwnStepPolicy, AskEverything, SiteArrays]:
    site = SiteArrays.from_config(small_site())
    inner = AskEverything()
    served = OwnStepPolicy(inner, STEP_S, min_window=5)
    served.reset(site)
    return served, inner, site


def test_the_policy_sees_its_own_step_and_a_window_on_its_grid() -> None:
    snap = on_policy_grid(_snapshot(0.0, [True] * 4), STEP_S, min_steps=5)
    assert snap.state.dt_h == pytest.approx(0.25)
    # element k is the live element at now + k * 15 min (the live window ramps 1 kW per minute)
    np.testing.assert_allclose(snap.forecast.base_load_kw[:5], 5.0 + 15.0 * np.arange(5))
    assert snap.forecast.horizon == WINDOW // 90
    short = on_policy_grid(dataclass_window(_snapshot(0.0, [True] * 4), 100), STEP_S, min_steps=5)
    # past the live window's end its last value, as the env pads its window
    np.testing.assert_allclose(
        short.forecast.base_load_kw, [5.0, 20.0, 5.0 + 99 / 6, 5.0 + 99 / 6, 5.0 + 99 / 6]
    )


def dataclass_window(snap: Snapshot, length: int) -> Snapshot:
    import dataclasses

    fc = snap.forecast
    cut = ForecastWindow(
        *(
            np.asarray(a)[:length]
            for a in (fc.base_load_kw, fc.pv_kw, fc.import_price_per_kwh, fc.export_price_per_kwh)
        )
    )
    return dataclasses.replace(snap, forecast=cut)


@pytest.mark.parametrize(
    ("seconds", "present", "expect"),
    [
        (0.0, [True, True, False, False], "start"),
        (10.0, [True, True, False, False], None),  # held
        (890.0, [True, True, False, False], None),  # still the same step
        (900.0, [True, True, False, False], "step"),  # the next step of its grid
        (910.0, [True, True, True, False], "arrival"),  # early: an EV plugged in
        (920.0, [True, True, True, False], None),
        (930.0, [False, True, True, False], "departure"),  # early: an EV left
        (1790.0, [False, True, True, False], None),  # held up to the grid's next step, not 15 min on
        (1800.0, [False, True, True, False], "step"),
    ],
)
def test_decides_on_its_grid_and_early_on_arrival_or_departure(
    seconds: float, present: list[bool], expect: str | None
) -> None:
    served, inner, _ = _served()
    cycles = [
        (0.0, [True, True, False, False]),
        (10.0, [True, True, False, False]),
        (890.0, [True, True, False, False]),
        (900.0, [True, True, False, False]),
        (910.0, [True, True, True, False]),
        (920.0, [True, True, True, False]),
        (930.0, [False, True, True, False]),
        (1790.0, [False, True, True, False]),
        (1800.0, [False, True, True, False]),
    ]
    for s, p in cycles:
        snap = _snapshot(s, p)
        if s == seconds:
            assert served.why_decide(snap) == expect
            break
        served.act(snap)
    asked = len(inner.seen)
    decision = served.act(_snapshot(seconds, present))
    assert len(inner.seen) == asked + (expect is not None)
    np.testing.assert_array_equal(
        decision.charger_kw > 0, np.array(present) if expect else decision.charger_kw > 0
    )


async def test_held_between_steps_and_reprojected_on_live_measurements() -> None:
    served, inner, site = _served()
    ctl = Controller(site, served, None, safe_static_share_kw(site, 5.0), 1.0)
    present = [True] * 4
    limit = float(site.import_limit_kw)
    outcomes = []
    # one step of 10-second cycles; the base load measured on the site meter rises mid-step
    for k in range(90):
        base_kw = 5.0 if k < 30 else 18.0
        out = await ctl.decide(_snapshot(k * INTERVAL_S, present, base_kw), meter_stale=False)
        outcomes.append(out)
        assert out.fallback_reason is None and out.policy == inner.name
        assert base_kw + float(out.limits_kw.sum()) <= limit + 1e-6  # the limit holds on the live measurement
    assert len(inner.seen) == 1 and served.decisions == {"start": 1} and served.held_cycles == 89
    assert inner.seen[0].state.dt_h == pytest.approx(STEP_S / 3600)
    before, after = outcomes[29].limits_kw, outcomes[30].limits_kw
    assert after.sum() < before.sum() - 12.0  # re-projected down at once, not at the next step
    np.testing.assert_allclose(outcomes[0].limits_kw, before)  # held, same measurements: same limits
    out = await ctl.decide(_snapshot(STEP_S, present, 18.0), meter_stale=False)
    assert len(inner.seen) == 2 and served.decisions["step"] == 1
    ctl.close()


def test_only_a_policy_trained_on_a_longer_step_is_wrapped(tmp_path: Path) -> None:
    cfg = serving_config(tmp_path, control_interval_s=INTERVAL_S)
    wrapped = on_own_step(AskEverything(), cfg)
    assert isinstance(wrapped, OwnStepPolicy) and wrapped.grid_ns == int(STEP_S * 1e9)
    every_cycle = AskEverything()
    every_cycle.step_s = INTERVAL_S  # trained on the control interval: decides every cycle
    assert on_own_step(every_cycle, cfg) is every_cycle
    from agents.rule_based import RuleBasedDLM

    rule = RuleBasedDLM()
    assert on_own_step(rule, cfg) is rule
    fast = on_own_step(
        AskEverything(), serving_config(tmp_path, control_interval_s=INTERVAL_S, time_scale=60.0)
    )
    assert isinstance(fast, OwnStepPolicy) and fast.grid_ns == int(STEP_S / 60.0 * 1e9)
