"""The optimum beyond the exact model's size (:mod:`agents.lp_executable`): a plan on the simulator's own
grid, replayed as it is, costs its objective, the relaxation bounds every policy, and no registered policy
beats the optimum or serves the EVs that leave better (a sweep over generated scenarios, V2G included, and
a slice of a real week; the exact model is switched off so that the large-scenario path is what runs)."""

from __future__ import annotations

import pytest

from agents.optimum import PerfectForesightOptimum
from agents.registry import NON_LEARNED
from envs.generate import generate_scenario
from envs.scenario import Scenario
from tests.test_optimum_exact import real_slice
from training.evaluate import EnvOptions, run_episode

OPTS = EnvOptions(forecast_horizon=16)
TOL = 1e-3  # 0.1 %


def scenario(name: str) -> Scenario:
    if name == "real":
        return real_slice(hours=12, sessions=10)
    kind, seed = name.split("-")
    return generate_scenario(
        kind.removesuffix("_v2g"),  # type: ignore[arg-type]
        chargers=4,
        days=2,
        seed=int(seed),
        v2g=kind.endswith("_v2g"),
    )


@pytest.mark.parametrize("name", ["real", "depot-0", "workplace_v2g-1", "workplace_v2g-2", "residential-2"])
def test_no_policy_beats_the_executable_optimum(name: str) -> None:
    sc = scenario(name)
    opt = PerfectForesightOptimum(exact_max_columns=0)  # the path of real weeks
    row = run_episode(opt, sc, options=OPTS).row
    assert opt.solution is not None
    best = row.cost_total
    if opt.plan_kind == "executable":  # executed as it is, the plan costs its objective
        assert best == pytest.approx(opt.solution.objective, rel=TOL, abs=1e-6)
    assert opt.bound <= best + 1e-6
    # with the generator's penalty (1 EUR/kWh) leaving some energy undelivered can be the cheapest plan:
    # "none serves better" holds where the optimum serves the EVs that leave (all but the grid's residue)
    serves = row.evs_short_kwh < 0.01 * max(row.evs_departed, 1)
    for policy in NON_LEARNED:
        if policy in ("optimum", "optimum_lp"):
            continue
        other = run_episode(policy, sc, options=OPTS).row
        assert other.cost_total >= best - TOL * abs(best) - 1e-6, policy
        assert other.cost_total >= opt.bound - 1e-6, policy
        if serves:
            assert other.evs_short_kwh >= row.evs_short_kwh - 1e-6, policy
