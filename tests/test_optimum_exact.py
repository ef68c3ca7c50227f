"""The exact optimum: its schedule is the simulator's own physics, so replayed through the env it costs its
objective, and no policy beats it (property test over generated scenarios and a slice of a real week)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.optimum import LPRelaxationBound, PerfectForesightOptimum
from agents.registry import NON_LEARNED
from envs.generate import generate_scenario
from envs.loaders import load_acn_csv
from envs.scenario import Scenario, make_scenario
from training.evaluate import EnvOptions, run_episode

FIX = Path(__file__).parent / "fixtures"
OPTS = EnvOptions(forecast_horizon=16)
TOL = 1e-3  # 0.1 %


def real_slice(hours: int = 10, sessions: int = 8) -> Scenario:
    """The first ``sessions`` sessions of the real JPL fixture (6 A minimum, 208 V), ``hours`` long."""
    sc = load_acn_csv(FIX / "acn_jpl_2019-11-01.csv", FIX / "acn_csv_site.yaml").scenario
    ses = sc.sessions.sort_values("arrival").head(sessions).copy()
    end = sc.start + pd.Timedelta(hours=hours)
    ses = ses[ses["arrival"] < end - pd.Timedelta(hours=1)]
    ses["departure"] = ses["departure"].where(ses["departure"] <= end, end)
    ts = sc.timeseries[sc.timeseries.index < end].reset_index()
    return make_scenario(sc.site, ses.reset_index(drop=True), ts, name="jpl-slice")


def replayed(scenario: Scenario) -> tuple[PerfectForesightOptimum, float, float]:
    opt = PerfectForesightOptimum(time_limit_s=10.0, mip_rel_gap=1e-5)
    row = run_episode(opt, scenario, options=OPTS).row
    assert opt.solution is not None
    return opt, row.cost_total, row.energy_delivered_pct


def test_the_exact_schedule_replayed_through_the_env_costs_its_objective_on_real_sessions() -> None:
    opt, cost, _ = replayed(real_slice())
    assert opt.used_exact
    assert opt.solution is not None and opt.solution.mip_gap <= 1e-4
    assert cost == pytest.approx(opt.solution.objective, rel=TOL)
    # the relaxation is a lower bound of the exact model, and its replay loses to the minimum current
    lp = LPRelaxationBound()
    lp_cost = run_episode(lp, real_slice(), options=OPTS).row.cost_total
    assert lp.solution is not None
    assert lp.solution.objective <= opt.solution.objective + 1e-9
    assert lp_cost >= cost - TOL * abs(cost)


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(["depot", "workplace", "residential"]), seed=st.integers(0, 50))
def test_no_policy_beats_the_exact_optimum(kind: str, seed: int) -> None:
    # without V2G: the projection's departure margin on discharge is not in the exact model yet
    sc = generate_scenario(kind, chargers=2, days=1, seed=seed)  # type: ignore[arg-type]
    opt, best, delivered = replayed(sc)
    assert opt.used_exact and opt.solution is not None
    assert best == pytest.approx(opt.solution.objective, rel=TOL, abs=1e-6)
    # with the generator's penalty, leaving some energy undelivered can be the cheapest plan (seen:
    # workplace seed 11, 95.4 % delivered): "none delivers more" holds where the plan serves every EV
    serves_all = float(opt.solution.missing_kwh.sum()) < 1e-6
    for name in NON_LEARNED:
        if name in ("optimum", "optimum_lp"):
            continue
        row = run_episode(name, sc, options=OPTS).row
        assert row.cost_total >= best - TOL * abs(best) - 1e-6, name
        if serves_all:
            assert row.energy_delivered_pct <= delivered + 0.1, name


def test_no_policy_beats_the_exact_optimum_on_real_sessions() -> None:
    sc = real_slice()
    _, best, delivered = replayed(sc)
    for name in NON_LEARNED:
        if name in ("optimum", "optimum_lp"):
            continue
        row = run_episode(name, sc, options=OPTS).row
        assert row.cost_total >= best - TOL * abs(best), name
        assert row.energy_delivered_pct <= delivered + 0.1, name
