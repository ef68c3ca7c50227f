"""The rule-based DLM's top-up (:meth:`agents.rule_based.RuleBasedDLM._top_up_kw`): drivers declare a
little less than their EV takes, and a rule that stops at the declared energy leaves them short of what
they needed.

Where the site's log shows EVs taking more than declared, an EV that still takes energy once its declared
energy is in, with no more room left than EVs were seen to take beyond their declaration, is charged on
with what is left under the peak target; a battery with more room to spare, or an EV whose driver
declared what it takes, gets exactly what was declared."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.allocate import Resources, resource_use, site_headroom_kw
from agents.rollout import rollout
from agents.rule_based import RuleBasedDLM
from agents.rule_drivers import under_declared_kwh
from envs.env import ChargingSiteEnv
from envs.projection import charger_bounds
from tests.test_agents import make_site, make_snapshot, make_state
from tests.test_env_support import tiny_scenario

STEPS = 16
DECLARED_KWH = 5.0


def _run(
    actual_kwh: float, top_up_kwh: float, battery_kwh: float = float("nan")
) -> tuple[np.ndarray, float, float]:
    """Import per step, kWh delivered and kWh the EV left without (of its actual need), for one EV on the
    11 kW charger c1 (efficiency 1) for 4 h whose driver declared :data:`DECLARED_KWH`; a 2 kW base load, a
    demand charge, a flat price (0.2 per kWh) and a missing-energy penalty of 1 per kWh."""
    row: dict[str, object] = {
        "charger_id": "c1",
        "arrival": 0,
        "departure": STEPS,
        "energy_kwh": actual_kwh,
        "declared_energy_kwh": DECLARED_KWH,
        "battery_kwh": battery_kwh,
        "arrival_soc": 0.2 if np.isfinite(battery_kwh) else float("nan"),
    }
    sc = tiny_scenario(STEPS + 4, [row], import_limit_kw=40.0, demand_charge_per_kw=10.0)
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    pol = RuleBasedDLM(top_up_kwh=top_up_kwh, v2g=False)
    pol.reset(env.site, sc)
    steps = list(rollout(pol, env, STEPS + 4))
    imports = np.array([float(s.info["site_import_kw"]) for s in steps])
    delivered = float(steps[-1].info["energy_delivered_total_kwh"])
    return imports, delivered, float(env.sim.missing_total_kwh[0])


def test_a_rule_that_stops_at_the_declared_energy_leaves_an_under_declared_ev_short() -> None:
    _, delivered, missing = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=0.0)
    assert delivered == pytest.approx(DECLARED_KWH, abs=0.05)
    assert missing == pytest.approx(1.0, abs=0.05)


def test_where_evs_are_seen_to_take_more_than_declared_the_rule_tops_up_without_raising_the_peak() -> None:
    stop_imports, _, _ = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=0.0)
    imports, delivered, missing = _run(actual_kwh=DECLARED_KWH + 1.0, top_up_kwh=2.0)
    assert missing == pytest.approx(0.0, abs=1e-6)
    assert delivered == pytest.approx(DECLARED_KWH + 1.0, abs=1e-6)  # the EV is full: no more than it took
    assert imports.max() <= stop_imports.max() + 1e-6


def test_more_room_than_evs_are_seen_to_take_beyond_their_declaration_is_a_battery_with_room_to_spare() -> (
    None
):
    # the EV needs what was declared; its 40 kWh battery (20 % full) has 27 kWh more room: not filled
    _, delivered, missing = _run(actual_kwh=DECLARED_KWH, top_up_kwh=2.0, battery_kwh=40.0)
    assert missing == pytest.approx(0.0, abs=1e-6)
    assert delivered == pytest.approx(DECLARED_KWH, abs=0.05)


def test_where_drivers_declare_what_their_ev_takes_the_top_up_changes_nothing() -> None:
    base = _run(actual_kwh=DECLARED_KWH, top_up_kwh=0.0)
    top = _run(actual_kwh=DECLARED_KWH, top_up_kwh=2.0)
    np.testing.assert_array_equal(base[0], top[0])
    assert base[1:] == top[1:]


def test_the_log_gives_the_quantile_of_what_under_declared_evs_took_beyond_their_declaration() -> None:
    log = pd.DataFrame(
        {
            "energy_kwh": [5.0, 3.0, 6.0, 7.0, 12.0, 4.05, 8.0],
            "declared_energy_kwh": [4.0, 10.0, 5.0, 5.0, 6.0, 4.0, np.nan],
        }
    )
    # excess over 0.1 kWh: 1, 1, 2, 6 (4.05 - 4 is not; a missing declaration is what was taken)
    assert under_declared_kwh(log, quantile=0.5) == pytest.approx(1.5)
    assert under_declared_kwh(log, quantile=1.0) == pytest.approx(6.0)
    assert under_declared_kwh(log.iloc[[1, 5, 6]]) == 0.0
    assert under_declared_kwh(log.iloc[:0]) == 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    need=st.lists(st.one_of(st.just(-1.0), st.floats(0.0, 8.0)), min_size=6, max_size=6),
    extra=st.lists(st.floats(0.0, 6.0), min_size=6, max_size=6),
    time_left=st.lists(st.sampled_from([0.25, 0.5, 1.0, 2.0, 4.0, 8.0]), min_size=6, max_size=6),
    base_kw=st.floats(0.0, 25.0),
    pv_kw=st.floats(0.0, 30.0),
    prices=st.lists(st.floats(0.05, 0.5), min_size=8, max_size=8),
    top_up_kwh=st.floats(0.0, 4.0),
    peak_kw=st.floats(20.0, 40.0),  # a peak already paid for: room under the target to top up in
)
def test_the_top_up_only_adds_within_every_limit_to_evs_with_a_little_room_above_their_declared_need(
    need: list[float],
    extra: list[float],
    time_left: list[float],
    base_kw: float,
    pv_kw: float,
    prices: list[float],
    top_up_kwh: float,
    peak_kw: float,
) -> None:
    site = make_site(n=6, import_kw=40.0, feeder_kw=25.0, feeder_a=35.0)
    state = make_state(site, need, time_left, base_kw=base_kw, pv_kw=pv_kw)
    room = np.where(state.ev_present, state.energy_needed_kwh + np.asarray(extra), 0.0)
    state = dataclasses.replace(state, energy_room_kwh=room)
    snap = make_snapshot(state, prices, peak_kw=peak_kw)
    stop, top = RuleBasedDLM(), RuleBasedDLM(top_up_kwh=top_up_kwh)
    stop.reset(site)
    top.reset(site)
    kw_stop = np.asarray(stop.act(snap).charger_kw)
    kw_top = np.asarray(top.act(snap).charger_kw)
    added = kw_top - kw_stop
    assert (added >= -1e-9).all()  # it takes nothing from a declared need
    above = room - state.energy_needed_kwh
    may = state.ev_present & (above > 1e-9) & (above <= top_up_kwh)
    assert (added[~may] == 0).all()  # no EV without room above its need, none with more room than seen
    _, hi_kw = charger_bounds(site, state)
    assert (kw_top <= hi_kw + 1e-9).all()  # never beyond the room
    res = Resources.from_site(site)
    assert (resource_use(res, kw_top) <= res.limits(site_headroom_kw(site, state)) + 1e-6).all()
