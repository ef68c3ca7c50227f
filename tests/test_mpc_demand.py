"""The MPC's future demand (agents/mpc_demand.py): ghosts keep what they aggregate, sit outside the limit
tree but for the nodes every charger is under, and let the MPC set the peak for an EV that has not arrived
yet."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agents.lp import LPData, SiteLP
from agents.mpc import ModelPredictiveControl
from agents.mpc_demand import PerfectDemand, ProfileDemand, free_of_tree, group
from agents.optimum import PerfectForesightOptimum
from envs.config import site_from_dict
from envs.core import SiteArrays
from envs.generate import generate_scenario
from envs.scenario import Scenario, make_scenario
from training.evaluate import EnvOptions, run_episode


def late_arrival_scenario() -> Scenario:
    """Hourly steps, a 1 EUR/kW demand charge; EV A (20 kWh) stays all four hours, EV B arrives at hour 2
    and needs all its charger gives in its two hours (22 kWh at 11 kW). Energy is cheap in hours 2 and 3.
    Best: A in hours 0 and 1 (peak 11 kW): 11 + 4.0 + 2.2 = 17.2 EUR. Planning A alone (flat at 5 kW, the
    lowest peak for it) leaves B on top of it: a 16 kW peak, 21.2 EUR."""
    charger = {"max_power_kw": 11.0, "efficiency": 1.0, "min_current_a": 0.0, "rate_unit": "W"}
    site = site_from_dict(
        {
            "name": "late",
            "timezone": "UTC",
            "grid": {"import_limit_kw": 30.0},
            "nodes": [{"id": "root", "max_power_kw": 100.0}],
            "chargers": [{"id": "a", "node": "root", **charger}, {"id": "b", "node": "root", **charger}],
            "tariff": {"demand_charge_per_kw": 1.0, "billing_period": "episode"},
        }
    )
    t0 = pd.Timestamp("2025-06-02T00:00:00Z")
    ts = pd.DataFrame(
        {
            "timestamp": pd.date_range(t0, periods=4, freq="1h"),
            "base_load_kw": 0.0,
            "pv_kw": 0.0,
            "import_price_per_kwh": [0.2, 0.2, 0.1, 0.1],
            "export_price_per_kwh": 0.0,
        }
    )
    sessions = pd.DataFrame(
        {
            "session_id": ["A", "B"],
            "charger_id": ["a", "b"],
            "arrival": [t0, t0 + pd.Timedelta(hours=2)],
            "departure": [t0 + pd.Timedelta(hours=4), t0 + pd.Timedelta(hours=4)],
            "energy_kwh": [20.0, 22.0],
        }
    )
    return make_scenario(site, sessions, ts, name="late-arrival")


def test_ghosts_let_the_mpc_set_the_peak_for_an_ev_still_to_come() -> None:
    sc = late_arrival_scenario()
    opts = EnvOptions(forecast_horizon=4)
    best = run_episode(PerfectForesightOptimum(), sc, options=opts).row
    ghosts = run_episode(ModelPredictiveControl(horizon=4), sc, options=opts).row
    # (without the plan's margin on the needs, which would lift A's flat plan, and the peak, by 2 %)
    blind = run_episode(ModelPredictiveControl(horizon=4, demand=None, need_margin=0.0), sc, options=opts).row
    assert best.cost_total == pytest.approx(17.2, abs=1e-3)
    assert ghosts.energy_delivered_pct == pytest.approx(100.0)
    assert ghosts.cost_total == pytest.approx(best.cost_total, rel=1e-3)
    assert ghosts.peak_import_kw == pytest.approx(11.0, abs=1e-3)
    assert blind.peak_import_kw == pytest.approx(16.0, abs=1e-3)
    assert blind.cost_total == pytest.approx(21.2, abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 60),
    max_ghosts=st.integers(1, 12),
    seed=st.integers(0, 2**31 - 1),
)
def test_grouping_keeps_energy_and_power_and_fits_the_window(n: int, max_ghosts: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    H = 96
    a = rng.uniform(1.0, H, n)
    d = a + rng.uniform(0.0, 60.0, n)
    energy = rng.uniform(0.0, 40.0, n)
    rate = rng.uniform(1.0, 11.0, n)
    g = group(a, d, energy, rate, H, 0.25, max_ghosts)
    assert 1 <= g.size <= max_ghosts
    assert g.energy_kwh.sum() == pytest.approx(energy.sum())
    assert g.max_kw.sum() == pytest.approx(rate.sum())
    assert np.all(g.start >= 1) and np.all(g.stop <= H) and np.all(g.stop > g.start)
    # a ghost runs past the window only where it reaches its end
    assert np.all((g.after_steps == 0) | (g.stop == H))


def test_perfect_demand_sees_the_sessions_arriving_after_this_step_and_within_the_window() -> None:
    sc = generate_scenario("workplace", chargers=10, days=2, seed=3)
    site = SiteArrays.from_config(sc.site)
    demand = PerfectDemand().bind(site, sc)
    assert demand is not None
    assert PerfectDemand().bind(site, None) is None  # serving: no scenario, no ghosts
    now = sc.start + pd.Timedelta(hours=6)
    H, dt = 24, sc.dt_h
    g = demand.window(np.datetime64(now.tz_convert("UTC").tz_localize(None)), H, dt, 64)
    s = sc.sessions
    arriving = (s["arrival"] >= now + sc.step) & (s["arrival"] < now + H * sc.step)
    assert g.size >= 1
    stay_h = (s["departure"] - s["arrival"]).dt.total_seconds() / 3600.0
    charger = s["charger_id"].map(site.config.charger_index()).to_numpy()
    rate = np.minimum(site.rated_kw[charger], s["max_power_kw"].fillna(np.inf))  # the EV's limit, if lower
    expected = np.minimum(s["energy_kwh"], rate * site.efficiency[charger] * stay_h)[arriving].sum()
    assert g.energy_kwh.sum() == pytest.approx(expected, rel=1e-6)
    assert g.max_kw.sum() == pytest.approx(rate[arriving].sum())


def test_a_profile_forecasts_an_average_day_of_its_history() -> None:
    sc = generate_scenario("workplace", chargers=10, days=7, seed=5)
    site = SiteArrays.from_config(sc.site)
    first = sc.start
    rate = float(site.rated_kw[0])
    prof = ProfileDemand.fit(sc.sessions, sc.site.timezone, first, sc.end, rate, float(site.efficiency[0]))
    assert sum(prof.days) == 7
    # a whole day ahead, from midnight local of the next Monday: the average workday's energy
    monday = sc.end.tz_convert(sc.site.timezone).normalize()
    while monday.day_of_week != 0:
        monday += pd.Timedelta(days=1)
    H = int(pd.Timedelta(hours=24) / sc.step)
    g = prof.window(np.datetime64(monday.tz_convert("UTC").tz_localize(None)), H, sc.dt_h, 64)
    # the window holds the arrivals from its second step (00:15) to midnight
    later = prof.arrival_h >= sc.dt_h
    assert g.energy_kwh.sum() == pytest.approx(prof.energy_kwh[prof.workday & later].sum() / prof.days[0])
    assert g.max_kw.sum() == pytest.approx(rate * (prof.workday & later).sum() / prof.days[0])


def test_ghost_columns_leave_the_rows_of_the_nodes_some_chargers_are_not_under_and_nothing_else() -> None:
    sc = generate_scenario("depot", chargers=20, days=1, seed=1)
    site = SiteArrays.from_config(sc.site)
    n, G, T = site.n, 3, 8
    lp = SiteLP(
        site,
        site.config.tariff,
        T,
        sc.dt_h,
        slot_charger=np.concatenate([np.arange(n), np.arange(G) % n]),
        slot_start=np.zeros(n + G, dtype=np.int64),
        slot_stop=np.full(n + G, T, dtype=np.int64),
    )
    before = lp.matrix.copy()
    free_of_tree(lp, np.arange(n, n + G))
    after = lp.matrix
    ghost_cols = lp.col["x"] + np.flatnonzero(lp.x_slot >= n)
    # the kW rows of the nodes every charger sits under (the transformer) keep the ghosts; the others (and
    # the phase rows, -1) lose them
    node = lp.limit_row_node
    common = (node >= 0) & np.asarray(site.membership.all(axis=0))[np.maximum(node, 0)]
    assert (node < 0).any()
    rows = lp.r_limits + np.arange(lp.n_limit_rows)
    assert common.any() and (~common).any()
    assert after[rows[~common]][:, ghost_cols].nnz == 0
    assert before[rows[~common]][:, ghost_cols].nnz > 0
    kept = after[rows[common]][:, ghost_cols]
    assert kept.nnz > 0 and (kept != before[rows[common]][:, ghost_cols]).nnz == 0
    others = np.setdiff1d(np.arange(lp.n_cols), ghost_cols)
    assert (after[:, others] != before[:, others]).nnz == 0
    rest = np.r_[0 : lp.r_limits, lp.r_limits + lp.n_limit_rows : lp.n_rows]
    assert (after[rest] != before[rest]).nnz == 0


def test_ghosts_are_held_to_the_transformer_every_charger_sits_under() -> None:
    # one ghost asking more than the transformer passes in the window: it gets the transformer's limit in
    # each step, not the import limit above it
    site = site_from_dict(
        {
            "name": "tree",
            "timezone": "UTC",
            "grid": {"import_limit_kw": 100.0},
            "nodes": [
                {"id": "transformer", "max_power_kw": 30.0},
                {"id": "left", "parent": "transformer", "max_power_kw": 20.0},
                {"id": "right", "parent": "transformer", "max_power_kw": 20.0},
            ],
            "chargers": [
                {"id": "a", "node": "left", "max_power_kw": 22.0, "efficiency": 1.0, "min_current_a": 0.0},
                {"id": "b", "node": "right", "max_power_kw": 22.0, "efficiency": 1.0, "min_current_a": 0.0},
            ],
            "tariff": {"demand_charge_per_kw": 0.0, "billing_period": "episode"},
        }
    )
    arrays = SiteArrays.from_config(site)
    n, T = 2, 4
    lp = SiteLP(
        arrays,
        site.tariff,
        T,
        1.0,
        slot_charger=np.array([0, 1, 0]),
        slot_start=np.zeros(3, dtype=np.int64),
        slot_stop=np.full(3, T, dtype=np.int64),
    )
    free_of_tree(lp, np.array([n]))
    data = LPData(
        base_load_kw=np.zeros(T),
        pv_kw=np.zeros(T),
        import_price_per_kwh=np.full(T, 0.2),
        export_price_per_kwh=np.zeros(T),
        need_kwh=np.array([0.0, 0.0, 200.0]),
        max_charge_kw=np.array([22.0, 22.0, 80.0]),
        active_stop=np.array([0, 0, T]),
    )
    sol = lp.solve(data)
    assert float(sol.missing_kwh[n]) == pytest.approx(200.0 - 4 * 30.0, abs=1e-6)
    x = lp.last_x[lp.x_slot == n]
    # on the one charger it is drawn against it would get 20 kW (its group), out of the tree 80: 30 here
    np.testing.assert_allclose(x, 30.0, atol=1e-6)


def test_the_real_benchmark_swaps_only_the_mpc_and_only_in_declared_mode(tmp_path: Path) -> None:
    from benchmarks import real
    from benchmarks.real_modes import mode_policies

    week = real.WEEKS[0]
    assert mode_policies("perfect", week, ["mpc", "optimum"], tmp_path) == ["mpc", "optimum"]
    assert mode_policies("declared", week, ["llf", "optimum"], tmp_path) == ["llf", "optimum"]
