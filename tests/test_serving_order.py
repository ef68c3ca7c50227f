"""A batch of limits goes out in the order that keeps the site within its limits in between, and each
limit is rounded toward the safe side of the limit that binds (serving/order.py, serving/dispatch.py)."""

from __future__ import annotations

import dataclasses

import numpy as np
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from envs.config import site_from_dict
from envs.core import SiteArrays
from envs.limits import limit_violations
from envs.projection import project
from envs.share import profile_to_kw_one
from serving.dispatch import PlanContext, signed_profile
from serving.order import first_phase, import_binds, plan_range, site_excess_kw, stages
from tests.test_projection_support import sites
from tests.test_rotation import everyone_plugged_in


def v2g_site(export_limit_kw: float = 10.0) -> SiteArrays:
    chargers = [
        {"id": f"c{i}", "node": "n", "max_current_a": 16.0, "bidirectional": True, "max_discharge_kw": 11.0}
        for i in range(4)
    ]
    grid = {"import_limit_kw": 40.0, "export_limit_kw": export_limit_kw}
    return SiteArrays.from_config(
        site_from_dict(
            {"name": "v2g", "grid": grid, "nodes": [{"id": "n", "max_power_kw": 80.0}], "chargers": chargers}
        )
    )


def test_discharge_moving_between_evs_at_the_export_limit_goes_less_export_first() -> None:
    site = v2g_site()
    old = np.array([-5.0, -5.0, 0.0, 0.0])  # exporting 10 kW: at the export limit
    new = np.array([0.0, 0.0, -5.0, -5.0])  # the discharge moves to the other two EVs
    # decreases first (the order without V2G) would export 20 kW in between
    assert site_excess_kw(site, np.minimum(old, new), 0.0) > 9.9
    first = first_phase(site, old, new, 0.0)
    assert first.tolist() == [True, True, False, False]  # the EVs that stop discharging go first
    assert site_excess_kw(site, np.where(first, new, old), 0.0) <= 0.0


def test_charging_alone_keeps_decreases_first() -> None:
    site = v2g_site()
    old = np.array([10.0, 10.0, 0.0, 0.0])
    new = np.array([0.0, 5.0, 10.0, 5.0])
    assert first_phase(site, old, new, 5.0).tolist() == [True, True, False, False]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), reserve_frac=st.floats(-0.5, 0.8))
def test_the_site_stays_within_its_limits_in_between_whenever_one_order_can(
    data: st.DataObject, reserve_frac: float
) -> None:
    site = data.draw(sites(max_chargers=8, allow_battery=False))
    n = site.n
    state = everyone_plugged_in(site, max(reserve_frac, 0.0) * site.import_limit_kw)
    state = dataclasses.replace(
        state,
        pv_kw=max(-reserve_frac, 0.0) * site.import_limit_kw,
        ev_max_discharge_kw=np.asarray(site.max_discharge_kw, dtype=float),
        energy_dischargeable_kwh=np.full(n, 1e6),
    )
    requests = st.lists(st.floats(-50.0, 50.0), min_size=n, max_size=n).map(np.array)
    old = np.asarray(project(site, state, data.draw(requests)).charger_kw, dtype=float)
    new = np.asarray(project(site, state, data.draw(requests)).charger_kw, dtype=float)
    # a site whose PV or base load alone is over a limit has no feasible plan to order
    assume(limit_violations(site, state, old, 0.0, 0.0).total == 0)
    assume(limit_violations(site, state, new, 0.0, 0.0).total == 0)
    other = float(state.base_load_kw - state.pv_kw)
    within = [
        limit_violations(site, state, np.where(new < old, new, old), 0.0, 0.0).total == 0,
        limit_violations(site, state, np.where(new > old, new, old), 0.0, 0.0).total == 0,
    ]
    first = first_phase(site, old, new, other)
    between = np.where(first, new, old)
    if any(within):
        assert limit_violations(site, state, between, 0.0, 0.0).total == 0


@given(kw=st.floats(-11.0, 11.04), rounding=st.sampled_from(["down", "up"]))
def test_rounding_goes_to_the_safe_side_and_stays_in_the_chargers_box(kw: float, rounding: str) -> None:
    site = v2g_site()
    value = signed_profile(site, 0, kw, rounding)  # type: ignore[arg-type]
    got = profile_to_kw_one(site, 0, value)
    assert abs(value * 10 - round(value * 10)) < 1e-9  # one decimal
    assert -float(site.max_discharge_kw[0]) - 1e-9 <= got <= float(site.rated_kw[0]) + 1e-9
    step = float(site.kw_per_a[0]) * 0.1
    if rounding == "down":  # never more import than asked
        assert got <= kw + 1e-9 or got == -profile_to_kw_one(site, 0, signed_profile(site, 0, 11.0))
        assert got >= min(kw, 0.0) - step - 1e-9 or kw < -float(site.max_discharge_kw[0]) + step
    else:  # never more export than asked
        assert got >= kw - 1e-9 or got >= float(site.rated_kw[0]) - step
        assert got <= kw + step + 1e-9


def test_a_discharge_is_rounded_away_from_zero_where_the_import_binds() -> None:
    site = v2g_site()
    kw = -3.0  # 4.35 A per phase discharge
    assert signed_profile(site, 0, kw, "zero") == -4.3  # toward 0: 4.3 A, 14 W more import than planned
    assert signed_profile(site, 0, kw, "down") == -4.4
    assert signed_profile(site, 0, kw, "up") == -4.3
    plan = PlanContext(np.array([11.0, 11.0, 11.0, -3.0]), 9.0)  # 39 kW of 40: the import binds
    assert plan.rounding(site, None) == ("down",)
    assert import_binds(site, 39.0) and not import_binds(site, -8.0)
    exporting = PlanContext(np.array([-3.0, -3.0, -3.0, 0.5]), 0.0)
    schedule = np.array([[-3.0, 10.0]] * 4)  # the next period charges 40 kW: the import binds then
    assert exporting.rounding(site, schedule) == ("up", "down")


def applied(old: np.ndarray, out: list[np.ndarray]) -> list[np.ndarray]:
    """The limits after each stage of :func:`stages` (NaN: unchanged in that stage)."""
    cur, seen = old.copy(), []
    for sent in out:
        cur = np.where(np.isfinite(sent), sent, cur)
        seen.append(cur.copy())
    return seen


def test_a_swap_wider_than_the_room_between_the_limits_goes_out_in_stages_within_them() -> None:
    site = v2g_site(export_limit_kw=5.0)  # import 40, export 5: 45 kW of room
    old = np.array([11.0, 11.0, -11.0, -11.0])  # 0 kW net
    new = -old  # every EV swaps: 44 kW each way
    # neither order of two phases stays within the limits in between
    assert site_excess_kw(site, np.minimum(old, new), 0.0) > 0.0
    assert site_excess_kw(site, np.maximum(old, new), 0.0) > 0.0
    out = stages(site, old, new, 0.0)
    seen = applied(old, out)
    assert len(out) > 2 and np.array_equal(seen[-1], new)
    prev = old
    for cur in seen:
        assert site_excess_kw(site, cur, 0.0) <= 1e-6
        step = cur - prev
        assert (step <= 1e-9).all() or (step >= -1e-9).all()  # each stage moves one way only
        prev = cur


def test_a_station_about_to_step_into_its_next_period_counts_as_either() -> None:
    site = v2g_site(export_limit_kw=30.0)  # import 40
    # EV 0 discharges 11 kW now but its plan steps to 0 in a moment (it is not resent); EV 3 is to charge
    old, new = np.array([-11.0, 11.0, 11.0, 0.0]), np.array([-11.0, 11.0, 11.0, 11.0])
    movable = np.array([False, False, False, True])
    # judged on its limit now, the increase fits (22 kW + 10 kW of other load)...
    assert stages(site, old, new, 10.0, movable=movable)[0][3] == 11.0
    # ...but if EV 0 stops discharging the site imports 43 kW: only the part that fits goes out, the
    # rest waits for the next cycle
    out = stages(site, old, new, 10.0, old_hi_kw=np.array([0.0, 11.0, 11.0, 0.0]), movable=movable)
    assert np.isnan(out[0][:3]).all() and abs(out[0][3] - 8.0) < 1e-6
    assert all(np.isnan(o[3]) or o[3] <= 8.0 + 1e-6 for o in out)


# the assume keeps only pairs of settings that are both within the limits: with a high reserve most drawn
# pairs are not, which is the point (the stages between two safe ends), not a badly built strategy
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]
)
@given(data=st.data(), reserve_frac=st.floats(-0.5, 0.8))
def test_every_stage_stays_within_the_kw_limits_when_both_ends_do(
    data: st.DataObject, reserve_frac: float
) -> None:
    site = data.draw(sites(max_chargers=8, allow_battery=False))
    n = site.n
    other = reserve_frac * site.import_limit_kw
    lo, hi = -np.asarray(site.max_discharge_kw, dtype=float), np.asarray(site.rated_kw, dtype=float)
    vec = st.lists(st.floats(0.0, 1.0), min_size=n, max_size=n).map(lambda f: lo + np.array(f) * (hi - lo))
    old, new = data.draw(vec), data.draw(vec)
    assume(site_excess_kw(site, old, other) <= 0.0 and site_excess_kw(site, new, other) <= 0.0)
    out = stages(site, old, new, other)
    seen = applied(old, out)
    assert np.allclose(seen[-1], new, atol=1e-5)
    if len(out) < 8:  # not cut short: every stage within the import, export and node kW limits
        kw_only = dataclasses.replace(site, node_limit_a=np.full(site.node_limit_a.shape, np.inf))
        for cur in seen:
            assert site_excess_kw(kw_only, cur, other) <= 1e-5


def test_a_plan_near_a_period_boundary_counts_both_periods_either_side_of_it() -> None:
    plan = np.array([-11.0, 0.0, 0.0, 5.0])  # 10 s periods: discharge, then stop, then charge
    assert plan_range(plan, 5.0, 10.0, 2.0) == (-11.0, -11.0)  # mid-period: one value
    assert plan_range(plan, 8.5, 10.0, 2.0) == (-11.0, 0.0)  # about to step
    # the loop read the plan just before the boundary, the batch goes out just after it: still both
    assert plan_range(plan, 10.02, 10.0, 2.0) == (-11.0, 0.0)
    assert plan_range(plan, 99.0, 10.0, 2.0) == (5.0, 5.0)  # past its end: the last period
