"""The site LP and the perfect-foresight optimum against hand-solved cases, and the MPC against it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from agents.lp import LPData, SiteLP
from agents.mpc import ModelPredictiveControl
from agents.optimum import PerfectForesightOptimum, build_scenario_lp
from envs.config import site_from_dict
from envs.core import SiteArrays
from envs.scenario import Scenario, make_scenario
from training.evaluate import EnvOptions, run_episode


def two_ev_site(import_kw: float = 15.0, demand_charge: float = 0.0) -> dict[str, object]:
    charger = {"max_power_kw": 11.0, "efficiency": 1.0, "min_current_a": 0.0, "rate_unit": "W"}
    return {
        "name": "two-ev",
        "timezone": "UTC",
        "grid": {"import_limit_kw": import_kw},
        "nodes": [{"id": "root", "max_power_kw": 100.0}],
        "chargers": [{"id": "a", "node": "root", **charger}, {"id": "b", "node": "root", **charger}],
        "tariff": {"demand_charge_per_kw": demand_charge, "billing_period": "episode"},
    }


def two_ev_scenario(
    prices: list[float], needs: tuple[float, float] = (10.0, 15.0), demand_charge: float = 0.0
) -> Scenario:
    """Hourly steps; EV a stays the first two hours, EV b all three."""
    site = site_from_dict(two_ev_site(demand_charge=demand_charge))
    t0 = pd.Timestamp("2025-06-02T00:00:00Z")
    index = pd.date_range(t0, periods=len(prices), freq="1h")
    ts = pd.DataFrame(
        {
            "timestamp": index,
            "base_load_kw": 0.0,
            "pv_kw": 0.0,
            "import_price_per_kwh": prices,
            "export_price_per_kwh": 0.0,
        }
    )
    sessions = pd.DataFrame(
        {
            "session_id": ["A", "B"],
            "charger_id": ["a", "b"],
            "arrival": [t0, t0],
            "departure": [t0 + pd.Timedelta(hours=2), t0 + pd.Timedelta(hours=3)],
            "energy_kwh": list(needs),
        }
    )
    return make_scenario(site, sessions, ts, name="two-ev")


def test_lp_matches_the_hand_solved_two_ev_case() -> None:
    # Step prices 0.30, 0.10, 0.20 $/kWh; 15 kW connection; A needs 10 kWh by the end of hour 2, B 15 kWh
    # by the end of hour 3. Cheapest: hour 2 full (A 10 + B 5 at 0.10 = 1.50), B's other 10 kWh in hour 3
    # at 0.20 (2.00): 3.50 in total, nothing in the dear first hour.
    site = SiteArrays.from_config(site_from_dict(two_ev_site()))
    lp = SiteLP(site, site.config.tariff, 3, 1.0, np.array([0, 1]), np.array([0, 0]), np.array([2, 3]))
    data = LPData(
        base_load_kw=np.zeros(3),
        pv_kw=np.zeros(3),
        import_price_per_kwh=np.array([0.3, 0.1, 0.2]),
        export_price_per_kwh=np.zeros(3),
        need_kwh=np.array([10.0, 15.0]),
        max_charge_kw=np.array([11.0, 11.0]),
        active_stop=np.array([2, 3]),
    )
    sol = lp.solve(data)
    assert sol.objective == pytest.approx(3.5, abs=1e-6)
    np.testing.assert_allclose(sol.charger_kw, [[0.0, 10.0, 0.0], [0.0, 5.0, 10.0]], atol=1e-6)
    np.testing.assert_allclose(sol.missing_kwh, [0.0, 0.0], atol=1e-9)
    # the same structure re-solved warm with new prices: the first hour is now the cheapest
    warm = lp.solve(LPData(**{**data.__dict__, "import_price_per_kwh": np.array([0.1, 0.3, 0.2])}), warm=True)
    # A: 10 kWh in hour 1 at 0.10; B: 5 kWh in hour 1 (0.50), 10 kWh in hour 3 (2.00) -> 3.50 again
    assert warm.objective == pytest.approx(3.5, abs=1e-6)
    np.testing.assert_allclose(warm.charger_kw[:, 0], [10.0, 5.0], atol=1e-6)


def test_lp_trades_the_demand_charge_against_energy_prices() -> None:
    # One EV, 10 kWh over two hours at 0.10 then 0.30 $/kWh, demand charge 0.5 $/kW of the peak:
    # cost(x0) = 0.1 x0 + 0.3 (10 - x0) + 0.5 max(x0, 10 - x0), minimal at x0 = 5: 0.5 + 1.5 + 2.5 = 4.5.
    site = SiteArrays.from_config(site_from_dict(two_ev_site(demand_charge=0.5)))
    lp = SiteLP(site, site.config.tariff, 2, 1.0, np.array([0]), np.array([0]), np.array([2]))
    data = LPData(
        base_load_kw=np.zeros(2),
        pv_kw=np.zeros(2),
        import_price_per_kwh=np.array([0.1, 0.3]),
        export_price_per_kwh=np.zeros(2),
        need_kwh=np.array([10.0]),
        max_charge_kw=np.array([11.0]),
        active_stop=np.array([2]),
    )
    sol = lp.solve(data)
    assert sol.objective == pytest.approx(4.5, abs=1e-6)
    np.testing.assert_allclose(sol.charger_kw[0], [5.0, 5.0], atol=1e-6)
    assert sol.peak_kw[0] == pytest.approx(5.0, abs=1e-6)


def test_lp_pays_the_penalty_when_energy_cannot_be_delivered() -> None:
    # 11 kW for one hour cannot give 20 kWh: 9 kWh missing at 1 $/kWh plus 11 kWh at 0.2
    site = SiteArrays.from_config(site_from_dict(two_ev_site()))
    lp = SiteLP(site, site.config.tariff, 1, 1.0, np.array([0]), np.array([0]), np.array([1]))
    data = LPData(
        base_load_kw=np.zeros(1),
        pv_kw=np.zeros(1),
        import_price_per_kwh=np.array([0.2]),
        export_price_per_kwh=np.zeros(1),
        need_kwh=np.array([20.0]),
        max_charge_kw=np.array([11.0]),
        active_stop=np.array([1]),
    )
    sol = lp.solve(data)
    assert sol.missing_kwh[0] == pytest.approx(9.0)
    assert sol.objective == pytest.approx(11 * 0.2 + 9 * 1.0)


def test_optimum_replayed_through_the_env_costs_the_hand_solved_amount() -> None:
    sc = two_ev_scenario([0.3, 0.1, 0.2])
    site = SiteArrays.from_config(sc.site)
    lp, data, _ = build_scenario_lp(site, sc)
    assert lp.T == 3
    np.testing.assert_allclose(data.need_kwh, [10.0, 15.0])
    result = run_episode(PerfectForesightOptimum(), sc, options=EnvOptions(forecast_horizon=4))
    assert result.row.cost_total == pytest.approx(3.5, abs=1e-3)
    assert result.row.energy_delivered_pct == pytest.approx(100.0)
    assert result.row.violations == 0
    np.testing.assert_allclose(result.trace.site_import_kw, [0.0, 15.0, 10.0], atol=1e-3)


def test_mpc_with_perfect_forecasts_and_a_long_horizon_matches_the_optimum() -> None:
    sc = two_ev_scenario([0.3, 0.1, 0.2, 0.25], demand_charge=0.05)
    opts = EnvOptions(forecast_horizon=8)
    best = run_episode(PerfectForesightOptimum(), sc, options=opts).row
    mpc = run_episode(ModelPredictiveControl(horizon=8), sc, options=opts).row
    assert mpc.energy_delivered_pct == pytest.approx(100.0)
    assert mpc.cost_total <= best.cost_total * 1.01 + 1e-9
    assert mpc.cost_total >= best.cost_total - 1e-6
