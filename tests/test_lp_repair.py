"""The minimum-current repair (agents/lp_repair.py): the strict settle that refuses a plan whose minima do
not fit."""

from __future__ import annotations

from dataclasses import replace

import pytest

from agents.lp import LPData, LPError, SiteLP
from agents.lp_repair import solve_min_current
from agents.optimum import build_scenario_lp
from envs.core import SiteArrays
from envs.generate import generate_scenario


def workplace_lp() -> tuple[SiteLP, LPData]:
    """A generated workplace day (6 chargers): the building's own morning peak is the relaxation's peak."""
    sc = generate_scenario("workplace", chargers=6, days=1, seed=0)
    lp, data, _ = build_scenario_lp(SiteArrays.from_config(sc.site), sc)
    return lp, data


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
