"""The failsafe rotation (envs/rotation.py): no limit broken at any instant of the day, judged by the
independent checker, and every charger that can charge at all gets energy over the day; the ``static``
baseline and the live service's failsafe follow it."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays, SiteState
from envs.limits import limit_violations
from envs.rotation import DAY_S, Rotation, failsafe_rotation, second_of_day, turn_kw
from envs.scenario import make_scenario
from envs.share import safe_static_share_kw
from tests.test_projection_support import sites
from tests.test_serving_helpers import small_site


def everyone_plugged_in(site: SiteArrays, reserve_kw: float) -> SiteState:
    """Every charger with an EV that takes anything, ``reserve_kw`` of building load, no PV."""
    n = site.n
    return SiteState(
        ev_present=np.ones(n, dtype=bool),
        ev_max_charge_kw=np.full(n, 1e3),
        ev_max_discharge_kw=np.zeros(n),
        energy_needed_kwh=np.full(n, 1e6),
        energy_room_kwh=np.full(n, 1e6),
        energy_dischargeable_kwh=np.zeros(n),
        time_left_h=np.full(n, 1e3),
        base_load_kw=reserve_kw,
        pv_kw=0.0,
        dt_h=1.0 / 60.0,
    )


def seconds_on(rotation: Rotation) -> np.ndarray:
    """(n,) seconds of the day each charger may draw more than 0."""
    periods = rotation.day_periods()
    ends = [t for t, _ in periods[1:]] + [DAY_S]
    return sum((end - t) * (kw > 0) for (t, kw), end in zip(periods, ends, strict=True))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), reserve_frac=st.floats(0.0, 0.95), slot_s=st.sampled_from([600, 3600, 7200]))
def test_no_limit_is_broken_at_any_instant_and_every_charger_gets_energy(
    data: st.DataObject, reserve_frac: float, slot_s: int
) -> None:
    site = data.draw(sites(max_chargers=8, allow_battery=False))
    reserve = reserve_frac * site.import_limit_kw
    rot = failsafe_rotation(site, reserve, slot_s=slot_s, guard_s=60)
    state = everyone_plugged_in(site, reserve)
    periods = rot.day_periods()
    assert periods[0][0] == 0 and all(a[0] < b[0] for a, b in itertools.pairwise(periods))
    for _, kw in periods:
        assert limit_violations(site, state, kw, 0.0, 0.0).total == 0
    for g in range(rot.n_slots):
        assert limit_violations(site, state, rot.slot_kw[g], 0.0, 0.0).total == 0
    # every change of the failsafe is all decreases or all increases (stations may switch a little apart)
    for (_, a), (_, b) in zip(periods, periods[1:] + periods[:1], strict=True):
        assert np.all(a <= b + 1e-12) or np.all(a >= b - 1e-12)
    # every charger that can charge at all does, for a positive part of the day; a starved one at its minimum
    on = seconds_on(rot)
    can_charge = (site.rated_kw > 0) & ~rot.stranded
    assert np.all(on[can_charge] > 0)
    turn = turn_kw(site)
    assert np.all(turn >= site.min_kw) and np.all(turn[site.rated_kw > 0] > 0)
    for i in np.flatnonzero(rot.starved & ~rot.stranded):
        assert np.isclose(rot.slot_kw[rot.slot_of[i], i], turn[i])
    # a stranded charger is one whose minimum alone breaks a limit
    for i in np.flatnonzero(rot.stranded):
        alone = np.where(np.arange(site.n) == i, turn, 0.0)
        assert limit_violations(site, state, alone, 0.0, 0.0).total > 0
    # the failsafe at any second is the period in force
    starts = np.array([t for t, _ in periods])
    for t in data.draw(st.lists(st.integers(0, DAY_S - 1), min_size=1, max_size=8)):
        k = int(np.searchsorted(starts, t, side="right") - 1)
        np.testing.assert_array_equal(rot.kw_at(t), periods[k][1])
        lo = rot.lowest_between(t, t + 1800)
        assert np.all(lo <= rot.kw_at(t)) and np.all(lo <= rot.kw_at(t + 1799))


def test_without_starved_chargers_the_rotation_is_the_static_share() -> None:
    site = SiteArrays.from_config(small_site())
    rot = failsafe_rotation(site, 5.0)
    assert not rot.starved.any() and not rot.rotates
    np.testing.assert_array_equal(rot.kw_at(12_345), safe_static_share_kw(site, 5.0))
    assert [t for t, _ in rot.day_periods()] == [0]


def test_four_chargers_with_room_for_one_minimum_take_turns() -> None:
    # 30 kW, 4 x 11.04 kW three-phase, 24 kW reserved: 6 kW is room for one charger at 6 A (4.14 kW)
    site = SiteArrays.from_config(small_site())
    rot = failsafe_rotation(site, 24.0, slot_s=3600, guard_s=60)
    assert rot.starved.all() and rot.n_slots == 4 and rot.slot_s == 3600
    assert sorted(rot.slot_of) == [0, 1, 2, 3]
    on = seconds_on(rot)
    assert np.all(on == 6 * (3600 - 60))  # six turns a day, each a minute short for the guard
    assert rot.kw_at(0)[0] == site.min_kw[0] and rot.kw_at(3600 - 30)[0] == 0.0  # guard: nobody on
    assert rot.kw_at(3600)[1] == site.min_kw[1]
    ts = np.datetime64("2025-06-02T01:30:00")
    assert second_of_day(ts) == 5400.0
    np.testing.assert_array_equal(rot.kw_at_time(ts), rot.kw_at(5400))


def test_the_static_baseline_charges_every_ev_at_a_starved_charger_over_a_day() -> None:
    from agents.baselines import StaticShare
    from agents.rollout import rollout
    from envs.env import ChargingSiteEnv

    # every EV plugged in all day asking more than it can get; 24 kW of the 30 kW is building load
    site_cfg = small_site()
    idx = pd.date_range("2025-06-02T00:00:00+00:00", periods=96, freq="15min")
    ts = pd.DataFrame(
        {
            "timestamp": idx, "base_load_kw": 24.0, "pv_kw": 0.0, "import_price_per_kwh": 0.3,
            "export_price_per_kwh": 0.0,
        }
    )  # fmt: skip
    sessions = pd.DataFrame(
        {
            "session_id": [f"s{i}" for i in range(4)],
            "charger_id": list(site_cfg.charger_ids),
            "arrival": idx[0],
            "departure": idx[-1] + pd.Timedelta("15min"),
            "energy_kwh": 200.0,
        }
    )
    sc = make_scenario(site_cfg, sessions, ts, "starved")
    site = SiteArrays.from_config(site_cfg)
    assert np.all(safe_static_share_kw(site, 24.0) == 0.0)  # the static share alone starves them all
    env = ChargingSiteEnv(scenario=sc, step=None)
    env.reset(seed=0)
    pol = StaticShare()
    pol.reset(env.site, sc)
    energy = np.zeros(site.n)
    for step in rollout(pol, env):
        kw = np.asarray(step.info["charger_power_kw"], dtype=float)
        assert np.sum(kw) + 24.0 <= 30.0 + 1e-6  # never above the connection
        energy += kw * 0.25
    assert np.all(energy > 1.0)
