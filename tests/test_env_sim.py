"""The episode dynamics (envs.sim): compiling scenarios to steps, energy books, departures, peak, costs."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from envs.core import SiteArrays
from envs.forecast import NoisyForecast, PerfectForecast
from envs.projection import ProjectionResult
from envs.scenario import Scenario
from envs.sim import BatchSim, Episode, compile_episode
from tests.test_env_support import random_scenario, tiny_scenario


def _result(
    charger_kw: list[list[float]], battery_kw: list[float], import_kw: list[float]
) -> ProjectionResult:
    """A hand-made batched 'projection result' (the simulator applies whatever it is given)."""
    p = np.array(charger_kw, dtype=float)
    B = p.shape[0]
    return ProjectionResult(
        charger_kw=p,
        battery_kw=np.array(battery_kw, dtype=float),
        pv_curtailed_kw=np.zeros(B),
        site_import_kw=np.array(import_kw, dtype=float),
        feasible=np.ones(B, dtype=bool),
        moved_kw=np.zeros(B),
        paused=np.zeros_like(p, dtype=bool),
    )


def _sim_for(scenario: Scenario, batch: int = 1) -> tuple[BatchSim, SiteArrays]:
    site = SiteArrays.from_config(scenario.site)
    sim = BatchSim(site, batch, scenario.dt_h)
    for b in range(batch):
        sim.load(b, compile_episode(scenario, site))
    return sim, site


# --------------------------------------------------------------------------- compiling


def test_slots_follow_exact_arrival_and_departure() -> None:
    sc = tiny_scenario(
        8,
        [
            {"charger_id": "c0", "arrival": 0.4, "departure": 2.6, "energy_kwh": 5.0},  # steps 0..2
            {"charger_id": "c0", "arrival": 3.0, "departure": 5.0, "energy_kwh": 1.0},  # steps 3..4
            {"charger_id": "c1", "arrival": 1.6, "departure": 1.9, "energy_kwh": 1.0},  # 0.3 of step 1
            {"charger_id": "c1", "arrival": 6.0, "departure": 8.0, "energy_kwh": 1.0},  # to the end
        ],
    )
    ep = compile_episode(sc, SiteArrays.from_config(sc.site))
    ids = {sid: k for k, sid in enumerate(ep.sessions.session_ids)}
    assert ep.dropped_sessions == 0
    col0 = ep.slot_session[:, 0].tolist()
    assert col0 == [ids["s0"]] * 3 + [ids["s1"]] * 2 + [-1] * 4
    col1 = ep.slot_session[:, 1].tolist()
    assert col1 == [-1, ids["s2"]] + [-1] * 4 + [ids["s3"]] * 2 + [-1]  # row T empty
    assert ep.sessions.departure_step.tolist() == [3, 2, 5, 8]
    frac = ep.sessions.present_fraction(np.full(3, ids["s0"]), np.arange(3))
    assert frac.tolist() == pytest.approx([0.6, 1.0, 0.6])
    assert ep.sessions.present_fraction(np.array([ids["s2"]]), np.array([1])).tolist() == pytest.approx([0.3])
    assert ep.n_steps == 8 and ep.slot_session.shape == (9, 2)


def test_a_session_sharing_a_step_with_the_previous_one_starts_at_the_next_boundary() -> None:
    sc = tiny_scenario(
        8,
        [
            {"charger_id": "c0", "arrival": 0.0, "departure": 2.3, "energy_kwh": 1.0},
            {"charger_id": "c0", "arrival": 2.6, "departure": 5.5, "energy_kwh": 1.0},  # -> from 3.0
            {"charger_id": "c1", "arrival": 1.0, "departure": 1.5, "energy_kwh": 1.0},
            {"charger_id": "c1", "arrival": 1.7, "departure": 1.9, "energy_kwh": 1.0},  # -> nothing left
        ],
    )
    ep = compile_episode(sc, SiteArrays.from_config(sc.site))
    ids = {sid: k for k, sid in enumerate(ep.sessions.session_ids)}
    assert ep.dropped_sessions == 1 and "s3" not in ids
    assert ep.slot_session[:, 0].tolist() == [ids["s0"]] * 3 + [ids["s1"]] * 3 + [-1] * 3
    assert ep.sessions.arrival_steps[ids["s1"]] == 3.0


def test_window_prorates_sessions_that_arrived_before_it() -> None:
    sc = tiny_scenario(8, [{"charger_id": "c0", "arrival": 0, "departure": 8, "energy_kwh": 8.0}])
    ep = compile_episode(sc, SiteArrays.from_config(sc.site), start_step=2, n_steps=4)
    assert ep.sessions.request_kwh.tolist() == pytest.approx([6.0])  # 6 of 8 steps inside the window
    assert ep.sessions.departure_step.tolist() == [6]  # past the window end (4): never penalised
    assert ep.slot_session[:, 0].tolist() == [0] * 5
    assert ep.start_step == 2 and ep.timestamps[0] == np.datetime64("2025-06-01T22:30:00")


def test_soc_room_and_v2g_floor_from_known_battery() -> None:
    sc = tiny_scenario(
        8,
        [
            {
                "charger_id": "c1",
                "arrival": 0,
                "departure": 8,
                "energy_kwh": 10.0,
                "battery_kwh": 50.0,
                "arrival_soc": 0.4,
                "v2g": True,
            },
            {"charger_id": "c0", "arrival": 0, "departure": 8, "energy_kwh": 5.0, "v2g": True},
        ],
    )
    site = SiteArrays.from_config(sc.site)
    st = compile_episode(sc, site, v2g_min_soc=0.2).sessions
    k1, k0 = st.session_ids.index("s0"), st.session_ids.index("s1")
    assert st.room_kwh[k1] == pytest.approx(30.0)  # 50 * (1 - 0.4)
    assert st.dischargeable_kwh[k1] == pytest.approx(10.0)  # down to 20 %
    assert st.max_discharge_kw[k1] == pytest.approx(5.0)  # the charger's discharge limit
    assert st.room_kwh[k0] == pytest.approx(5.0)  # unknown battery: room = request
    assert st.max_discharge_kw[k0] == 0.0  # c0 is not bidirectional
    no_v2g = compile_episode(sc, site, allow_discharge=False).sessions
    assert no_v2g.max_discharge_kw.tolist() == [0.0, 0.0] and no_v2g.dischargeable_kwh.tolist() == [0.0, 0.0]


def test_perfect_forecast_fast_path_matches_the_provider() -> None:
    sc = random_scenario(3, n_chargers=2)
    site = SiteArrays.from_config(sc.site)
    ep = compile_episode(sc, site, start_step=80, n_steps=10, horizon=8)
    bound = PerfectForecast().bind(sc.timeseries)
    for t in (0, 5, 10):
        w = bound.window(80 + t, 9)
        np.testing.assert_array_equal(ep.forecast[t, 0], w.base_load_kw)
        np.testing.assert_array_equal(ep.forecast[t, 3], w.export_price_per_kwh)
    # padded with the last value past the scenario's end (96 steps)
    assert ep.forecast[10, 1, -1] == sc.timeseries["pv_kw"].iloc[-1]


def test_noisy_forecast_is_seeded_and_exact_now() -> None:
    sc = random_scenario(4, n_chargers=2)
    site = SiteArrays.from_config(sc.site)
    noisy = NoisyForecast(error=0.2)

    def make(seed: int) -> Episode:
        return compile_episode(sc, site, forecast=noisy, horizon=4, rng=np.random.default_rng(seed))

    a, b, c = make(1), make(1), make(2)
    np.testing.assert_array_equal(a.forecast, b.forecast)
    assert not np.array_equal(a.forecast, c.forecast)
    np.testing.assert_allclose(a.forecast[:, 0, 0], a.base_load_kw)  # lead 0 is measured


def test_local_time_features_and_month_billing_periods() -> None:
    idx = pd.date_range("2025-06-30T00:00:00+02:00", periods=96 * 2, freq="15min")
    sc = tiny_scenario(8, billing_period="month")
    ts = sc.timeseries.iloc[:0].reindex(idx).fillna(1.0)
    sc2 = sc.with_timeseries(ts)
    ep = compile_episode(sc2, SiteArrays.from_config(sc2.site))
    # local midnight -> time of day angle 0
    assert ep.time_features[0, 0] == pytest.approx(0.0, abs=1e-12)
    assert ep.time_features[0, 1] == pytest.approx(1.0)
    assert np.flatnonzero(ep.new_period).tolist() == [0, 96]  # July 1st, local time


# --------------------------------------------------------------------------- stepping


def test_energy_books_departure_penalty_and_arrivals() -> None:
    sc = tiny_scenario(
        6,
        [
            {"charger_id": "c0", "arrival": 0, "departure": 2, "energy_kwh": 5.0},
            {"charger_id": "c0", "arrival": 2, "departure": 6, "energy_kwh": 3.0},
            {"charger_id": "c1", "arrival": 1, "departure": 3, "energy_kwh": 4.0, "v2g": True},
        ],
    )
    sim, _ = _sim_for(sc)
    assert sim.present.tolist() == [[True, False]]
    out = sim.apply(_result([[10.0, 0.0]], [0.0], [12.0]))
    assert out.delivered_kwh[0] == pytest.approx(10 * 0.9 * 0.25)
    assert out.arrivals[0] == 1 and out.departures[0] == 0
    assert sim.energy_needed_kwh()[0].tolist() == pytest.approx([5.0 - 2.25, 4.0])
    out = sim.apply(_result([[8.0, 4.0]], [0.0], [14.0]))
    # s0 leaves at the end of step 1 missing 5 - 2.25 - 1.8; s1 takes its slot
    assert out.missing_kwh[0] == pytest.approx(5.0 - 2.25 - 1.8)
    assert out.departures[0] == 1 and out.arrivals[0] == 1
    assert sim.energy_needed_kwh()[0].tolist() == pytest.approx([3.0, 3.0])
    out = sim.apply(_result([[0.0, -4.0]], [0.0], [-2.0]))  # V2G on c1 (efficiency 1.0)
    assert out.ev_discharged_kwh[0] == pytest.approx(1.0)
    assert out.missing_kwh[0] == pytest.approx(4.0)  # 4 asked, 1 delivered, 1 given back
    assert sim.delivered_total_kwh[0] == pytest.approx(2.25 + 1.8 + 1.0)
    assert sim.missing_total_kwh[0] == pytest.approx(5.0 - 4.05 + 4.0)


def test_costs_reward_and_peak_with_a_battery() -> None:
    sc = tiny_scenario(
        4,
        [{"charger_id": "c0", "arrival": 0, "departure": 4, "energy_kwh": 20.0}],
        battery=True,
        demand_charge_per_kw=2.0,
    )
    sim, _ = _sim_for(sc)
    assert sim.battery_soc_kwh[0] == pytest.approx(10.0)
    out = sim.apply(_result([[10.0, 0.0]], [8.0], [20.0]))  # import 2 + 10 + 8
    assert sim.battery_soc_kwh[0] == pytest.approx(12.0)
    assert out.cost.energy[0] == pytest.approx(20 * 0.25 * 0.2)  # type: ignore[index]
    assert out.cost.demand_charge[0] == pytest.approx(40.0)  # type: ignore[index]
    assert out.reward[0] == pytest.approx(-(1.0 + 40.0))
    out = sim.apply(_result([[4.0, 0.0]], [-8.0], [-2.0]))
    assert sim.battery_soc_kwh[0] == pytest.approx(10.0)
    assert out.battery_discharged_kwh[0] == pytest.approx(2.0)
    assert out.cost.export_revenue[0] == pytest.approx(2 * 0.25 * 0.05)  # type: ignore[index]
    assert out.cost.degradation[0] == pytest.approx(2.0 * 0.02)  # type: ignore[index]
    assert out.cost.demand_charge[0] == 0.0  # type: ignore[index]
    assert out.peak_import_kw[0] == pytest.approx(20.0)
    assert out.reward[0] == pytest.approx(2 * 0.25 * 0.05 - 0.04)


def test_rows_are_independent_and_reloadable() -> None:
    sc = tiny_scenario(3, [{"charger_id": "c0", "arrival": 0, "departure": 3, "energy_kwh": 5.0}])
    site = SiteArrays.from_config(sc.site)
    sim = BatchSim(site, 2, sc.dt_h)
    ep_long = compile_episode(sc, site)
    ep_short = compile_episode(sc, site, start_step=1, n_steps=1)
    sim.load(0, ep_long)
    sim.load(1, ep_short)
    out = sim.apply(_result([[4.0, 0.0], [4.0, 0.0]], [0.0, 0.0], [6.0, 6.0]))
    assert out.terminated.tolist() == [False, True]
    assert sim.t.tolist() == [1, 1]
    with pytest.raises(ValueError, match="past its episode end"):
        sim.apply(_result([[0.0, 0.0], [0.0, 0.0]], [0.0, 0.0], [2.0, 2.0]))
    sim.load(1, ep_long)
    assert sim.t.tolist() == [1, 0] and sim.net_kwh[1, 0] == 0.0
    assert sim.net_kwh[0, 0] == pytest.approx(0.9)
    state = sim.state()
    np.testing.assert_allclose(state.energy_needed_kwh, [[4.1, 0.0], [5.0, 0.0]])
    np.testing.assert_allclose(state.time_left_h, [[0.5, 0.0], [0.75, 0.0]])


def test_batched_result_shape_is_checked() -> None:
    sc = tiny_scenario(3)
    sim, _ = _sim_for(sc, batch=2)
    with pytest.raises(ValueError, match="batched"):
        sim.apply(_result([[0.0, 0.0]], [0.0], [2.0]))
