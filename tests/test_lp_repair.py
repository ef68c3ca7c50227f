"""The minimum-current repair (agents/lp_repair.py): settling a whole plan held to the relaxation's peak,
and the strict settle that refuses a plan whose minima do not fit."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from agents.lp import LPData, LPError, SiteLP
from agents.lp_repair import HOLD_KW, solve_min_current
from agents.optimum import build_scenario_lp
from envs.core import SiteArrays
from envs.generate import generate_scenario


def workplace_lp() -> tuple[SiteLP, LPData]:
    """A generated workplace day (6 chargers): the building's own morning peak is the relaxation's peak."""
    sc = generate_scenario("workplace", chargers=6, days=1, seed=0)
    lp, data, _ = build_scenario_lp(SiteArrays.from_config(sc.site), sc)
    return lp, data


def test_the_whole_plan_settled_under_the_relaxations_peak_where_settling_lifted_it() -> None:
    # settling every column on or off puts columns on at the minimum in the steps of the building's peak:
    # 33.64 kW relaxed, 38.2 settled; held, the same repair keeps the peak and serves as much
    lp, data = workplace_lp()
    relaxed = lp.solve(data)
    plain = solve_min_current(lp, data, passes=1, settle=True)
    assert plain.peak_kw[0] > relaxed.peak_kw[0] + 1.0
    held = solve_min_current(lp, data, passes=1, settle=True, hold=np.ones(lp.K, dtype=bool))
    assert held.peak_kw[0] <= relaxed.peak_kw[0] + HOLD_KW
    assert held.missing_kwh.sum() <= plain.missing_kwh.sum() + 1e-3
    assert held.objective < plain.objective - 10.0
    # the slots held are the ones compared: none given, the settled plan is kept as it was
    again = solve_min_current(lp, data, passes=1, settle=True)
    assert again.peak_kw[0] == pytest.approx(plain.peak_kw[0])


def test_a_strict_settle_refuses_a_plan_whose_minima_do_not_fit_under_the_cap() -> None:
    # capped at the relaxation's peak, the minima do not fit together: the loose settle returns the plan
    # before it, columns below their minimum (the optimum's held search replayed such a plan 1 % dearer
    # than its objective); the strict one raises, and the optimum drops that variant
    lp, data = workplace_lp()
    capped = replace(data, peak_cap_kw=lp.solve(data).peak_kw.copy())
    solve_min_current(lp, capped, passes=1, settle=True)
    below = (lp.last_x > 1e-6) & (lp.last_x < lp.min_x_kw(capped) - 1e-6)
    assert below.any()
    lp._highs = None
    with pytest.raises(LPError):
        solve_min_current(lp, capped, passes=1, settle=True, strict=True)
