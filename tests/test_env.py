"""ChargingSiteEnv: construction, the env checkers, determinism, observation bounds, energy and cost books."""

from __future__ import annotations

import warnings
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import envs  # registers evdlm/ChargingSite-v0
from envs.core import Snapshot
from envs.env import ChargingSiteEnv
from envs.generate import generate_scenario
from envs.obs import CHARGER_FEATURES
from envs.scenario import Scenario, save_scenario
from envs.wrappers import NormalisedAction, PriorityScores
from tests.test_env_support import random_scenario, tiny_scenario

GEN = {"kind": "depot", "chargers": 4, "days": 1, "seed": 0}


def _hand_scenario() -> Scenario:
    return tiny_scenario(
        8,
        [
            {"charger_id": "c0", "arrival": 0, "departure": 4, "energy_kwh": 9.0},
            {"charger_id": "c1", "arrival": 1, "departure": 4, "energy_kwh": 2.0, "v2g": True},
        ],
        export_limit_kw=5.0,
        demand_charge_per_kw=1.0,
    )


# --------------------------------------------------------------------------- construction


def test_make_from_folder_generator_and_object(tmp_path: Path) -> None:
    sc = _hand_scenario()
    folder = save_scenario(sc, tmp_path / "tiny")
    from_dir = gym.make(envs.ENV_ID, scenario=str(folder))
    from_obj = gym.make(envs.ENV_ID, scenario=sc)
    from_gen = gym.make(envs.ENV_ID, generator=GEN)
    o1, _ = from_dir.reset(seed=3)
    o2, _ = from_obj.reset(seed=3)
    np.testing.assert_array_equal(o1, o2)
    o3, info = from_gen.reset(seed=3)
    assert from_gen.observation_space.contains(o3)
    assert from_gen.action_space.shape == (4,)
    assert info["n_steps"] == 96
    with pytest.raises(ValueError, match="exactly one"):
        ChargingSiteEnv()
    with pytest.raises(ValueError, match="unknown key"):
        ChargingSiteEnv(generator={**GEN, "colour": "red"})


def test_step_resamples_the_time_series() -> None:
    env = ChargingSiteEnv(scenario=_hand_scenario(), step="30min")
    _, info = env.reset(seed=0)
    assert info["n_steps"] == 4 and env.sim.dt_h == 0.5


def test_gymnasium_env_checker() -> None:
    from gymnasium.utils.env_checker import check_env

    for kwargs in ({"scenario": random_scenario(1, v2g=True, battery=True)}, {"generator": GEN}):
        env = ChargingSiteEnv(**kwargs)
        with warnings.catch_warnings():  # the kW request is not normalised: that is the wrappers' job
            warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
            check_env(env, skip_render_check=True)


def test_stable_baselines3_env_checker() -> None:
    from stable_baselines3.common.env_checker import check_env

    for wrapper in (None, NormalisedAction, PriorityScores):
        env: gym.Env[np.ndarray, np.ndarray] = ChargingSiteEnv(
            scenario=random_scenario(2, v2g=True, battery=True)
        )
        if wrapper is not None:
            env = wrapper(env)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no complaint about the spaces either
            if wrapper is None:  # the kW request is not normalised; that is what the wrappers are for
                warnings.filterwarnings("ignore", message=".*symmetric and normalized.*")
            check_env(env, warn=True)


# --------------------------------------------------------------------------- known numbers


def test_hand_built_episode_has_the_known_costs() -> None:
    # the plan leaves EVs short on purpose (the missing-energy cost): no departure floor
    env = ChargingSiteEnv(scenario=_hand_scenario(), departure_floor=False)
    env.reset(seed=0)
    # (request kW, cost of the step, import kW): see docs/environment.md for the arithmetic
    plan = [
        ([10.0, 0.0], 12.6, 12.0),  # 12 kW * 0.25 h * 0.2 + 12 kW peak * 1.0
        ([10.0, 8.0], 9.0, 20.0),  # 20 * 0.25 * 0.2 + (20 - 12) * 1.0
        ([0.0, -4.0], 0.025, -2.0),  # -2 * 0.25 * 0.05 export + 1 kWh V2G * 0.05
        ([11.0, 0.0], 3.675, 13.0),  # 13 * 0.25 * 0.2 + (2.025 + 1.0) kWh missing * 1.0
    ]
    plan += [([0.0, 0.0], 0.1, 2.0)] * 4
    total = 0.0
    for k, (kw, cost, import_kw) in enumerate(plan):
        _, reward, terminated, truncated, info = env.step(np.array(kw))
        assert info["site_import_kw"] == pytest.approx(import_kw, abs=1e-9), k
        assert info["charger_power_kw"] == pytest.approx(kw, abs=1e-9), k
        assert info["projection_moved_kw"] == pytest.approx(0.0, abs=1e-9), k
        assert reward == pytest.approx(-cost, abs=1e-9), k
        assert sum(info["cost"].values()) == pytest.approx(-reward, abs=1e-12)
        assert terminated == (k == 7) and not truncated
        total += cost
    assert total == pytest.approx(25.7)
    assert info["energy_delivered_total_kwh"] == pytest.approx(2.25 + 4.25 + 2.475)
    assert info["energy_missing_total_kwh"] == pytest.approx(2.025 + 1.0)
    assert info["peak_import_kw"] == pytest.approx(20.0)


def test_step3_breakdown_and_projection_report() -> None:
    env = ChargingSiteEnv(scenario=_hand_scenario())
    env.reset(seed=0)
    env.step(np.array([10.0, 0.0]))
    _, _, _, _, info = env.step(np.array([30.0, 30.0]))  # over the 11 kW ratings and the 20 kW import limit
    assert info["site_import_kw"] <= 20.0 + 1e-9 and info["feasible"]
    assert info["projection_moved_kw"] > 19.0 * np.sqrt(2) - 1e-6
    _, _, _, _, info = env.step(np.array([0.0, -4.0]))
    assert info["ev_discharged_kwh"] == pytest.approx(min(4.0, -info["charger_power_kw"][1]) * 0.25)
    assert set(info["cost"]) == {"energy", "export_revenue", "demand_charge", "missing_energy", "degradation"}


def test_continuous_action_maps_to_the_feasible_range() -> None:
    from envs.projection import charger_bounds

    base = ChargingSiteEnv(scenario=_hand_scenario(), departure_floor=False)  # the mapping alone
    env = NormalisedAction(base)
    env.reset(seed=0)
    lows = []
    for a in ([1.0, 0.0], [0.5, 0.25], [0.0, -1.0], [0.3, -0.5]):
        lo, hi = charger_bounds(base.site, base.sim.state())
        lows.append(lo[0, 1])
        want = np.where(np.array(a) >= 0, np.array(a) * hi[0], -np.array(a) * lo[0])
        _, _, _, _, info = env.step(np.array(a, dtype=np.float32))
        assert info["charger_power_kw"] == pytest.approx(want, abs=1e-6), a
    # V2G was on offer at step 2 (not in the EV's last step: it could not make up for it)
    assert lows[2] < 0.0 and lows[3] == 0.0


def test_departure_floor_serves_evs_an_idle_agent_would_strand() -> None:
    # a depot whose six 22 kW chargers share a 40 kW connection; the agent never asks for anything
    missing = {}
    for floor in (True, False):
        env = ChargingSiteEnv(
            generator={"kind": "depot", "chargers": 6, "days": 2, "seed": 3}, departure_floor=floor
        )
        env.reset(seed=0)
        done = False
        while not done:
            _, _, done, _, info = env.step(np.zeros(env.site.n))
        missing[floor] = info["energy_missing_total_kwh"]
    assert missing[False] > 100.0  # without the floor nobody charges
    assert missing[True] < 0.1 * missing[False]  # with it (deadline rule over the shared rows) most arrive


def test_no_discharge_when_not_allowed() -> None:
    env = ChargingSiteEnv(scenario=random_scenario(5, v2g=True, battery=True), allow_discharge=False)
    env.reset(seed=1)
    for _ in range(60):
        _, _, _, _, info = env.step(np.full(env.site.n + 1, -50.0))
        assert info["ev_discharged_kwh"] == 0.0 and info["battery_kw"] >= 0.0
        assert (info["charger_power_kw"] >= 0.0).all()


# --------------------------------------------------------------------------- invariants


def _sites() -> list[Scenario]:
    return [
        random_scenario(11, v2g=True, single_phase=True, battery=True),
        random_scenario(12, n_chargers=3, pv=False),
        generate_scenario("residential", chargers=6, days=1, seed=2, v2g=True),  # mostly single-phase
        generate_scenario("depot", chargers=5, days=1, seed=3, battery=True, v2g=True),
        generate_scenario("public", chargers=4, days=1, seed=4),
    ]


@pytest.mark.parametrize("wrapper", [None, NormalisedAction, PriorityScores])
def test_random_rollouts_keep_every_invariant(wrapper: type[gym.ActionWrapper] | None) -> None:
    for sc in _sites():
        site_env = ChargingSiteEnv(scenario=sc, forecast_horizon=4)
        env = site_env if wrapper is None else wrapper(site_env)
        obs, _ = env.reset(seed=7)
        env.action_space.seed(7)
        site = site_env.site
        assert env.observation_space.contains(obs)
        delivered = 0.0
        terminated = False
        while not terminated:
            state = site_env.sim.state()
            base, pv = float(state.base_load_kw[0]), float(state.pv_kw[0])  # type: ignore[index]
            room_before = state.energy_room_kwh[0].copy()
            obs, reward, terminated, _, info = env.step(env.action_space.sample())
            assert env.observation_space.contains(obs), sc.name
            assert obs.dtype == np.float32
            p = info["charger_power_kw"]
            # energy books: delivered = integral of charging power times efficiency; never above the room
            step_kwh = float(np.sum(np.maximum(p, 0.0) * site.efficiency) * site_env.sim.dt_h)
            assert info["energy_delivered_kwh"] == pytest.approx(step_kwh, abs=1e-9)
            assert (np.maximum(p, 0.0) * site.efficiency * site_env.sim.dt_h <= room_before + 1e-6).all()
            delivered += step_kwh
            # site balance and limits
            balance = base + p.sum() + info["battery_kw"] - pv + info["pv_curtailed_kw"]
            assert info["site_import_kw"] == pytest.approx(balance, abs=1e-6)
            if info["feasible"]:
                assert info["site_import_kw"] <= info["import_limit_kw"] + 1e-6
                assert info["site_import_kw"] >= -site.export_limit_kw - 1e-6
            assert sum(info["cost"].values()) == pytest.approx(-reward, rel=1e-12, abs=1e-12)
            assert (site_env.sim.net_kwh <= site_env.sim.room0_kwh + 1e-6).all()
        assert info["energy_delivered_total_kwh"] == pytest.approx(delivered, rel=1e-9)
        if site.has_battery:
            assert (
                site.battery_soc_min_kwh - 1e-6 <= info["battery_soc_kwh"] <= site.battery_soc_max_kwh + 1e-6
            )


@pytest.fixture(scope="module")
def hypo_env() -> ChargingSiteEnv:
    return ChargingSiteEnv(
        scenario=random_scenario(21, v2g=True, single_phase=True, battery=True), episode_steps=32
    )


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    actions=st.lists(
        st.lists(st.floats(-30.0, 30.0, width=32), min_size=7, max_size=7), min_size=1, max_size=30
    ),
    seed=st.integers(0, 2**16),
)
def test_observation_stays_in_space_for_any_actions(
    hypo_env: ChargingSiteEnv, actions: list[list[float]], seed: int
) -> None:
    env = hypo_env
    obs, _ = env.reset(seed=seed, options={"start_step": seed % 60})
    for a in actions:
        obs, reward, terminated, _, _ = env.step(np.array(a, dtype=np.float32))
        assert env.observation_space.contains(obs)
        assert np.isfinite(reward)
        if terminated:
            break


# --------------------------------------------------------------------------- determinism


def _rollout(env: ChargingSiteEnv, seed: int, steps: int) -> tuple[np.ndarray, np.ndarray]:
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    seen, rewards = [obs], []
    for _ in range(steps):
        obs, r, terminated, _, _ = env.step(env.action_space.sample())
        seen.append(obs)
        rewards.append(r)
        if terminated:
            obs, _ = env.reset()
            seen.append(obs)
    return np.stack(seen), np.array(rewards)


def test_identical_seeds_give_identical_rollouts() -> None:
    from envs.forecast import NoisyForecast

    kwargs = {"generator": {**GEN, "days": 2}, "episode_steps": 40, "forecast": NoisyForecast(0.2)}
    a = _rollout(ChargingSiteEnv(**kwargs), 5, 100)  # type: ignore[arg-type]
    b = _rollout(ChargingSiteEnv(**kwargs), 5, 100)  # type: ignore[arg-type]
    c = _rollout(ChargingSiteEnv(**kwargs), 6, 100)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_episodes_draw_new_scenarios_and_windows() -> None:
    env = ChargingSiteEnv(generator={**GEN, "days": 2, "pool": 3}, episode_steps=10)
    names, starts = set(), set()
    env.reset(seed=0)
    for _ in range(12):
        _, info = env.reset()
        names.add(info["scenario"])
        starts.add(info["start_step"])
        assert info["n_steps"] == 10
    assert 1 < len(names) <= 3 and len(starts) > 3
    _, info = env.reset(options={"scenario_seed": 123, "start_step": 5})
    assert info["scenario"].endswith("s123") and info["start_step"] == 5
    with pytest.raises(ValueError, match="unknown reset option"):
        env.reset(options={"start": 1})


# --------------------------------------------------------------------------- observation and snapshot


def test_observation_layout_names_and_values() -> None:
    env = ChargingSiteEnv(scenario=_hand_scenario(), forecast_horizon=3)
    obs, _ = env.reset(seed=0)
    lay = env.layout
    assert len(lay.names()) == lay.size == obs.shape[0] == 7 * 2 + 1 + 9 + 4 * 3
    parts = lay.unflatten(obs)
    assert parts["ev_present"].tolist() == [1.0, 0.0]
    # 9 kWh at 11 kW * 0.9 = 0.909 h of 24 h
    assert parts["energy_needed"][0] == pytest.approx(9.0 / (11 * 0.9) / 24, rel=1e-6)
    assert parts["time_to_departure"][0] == pytest.approx(1.0 / 24, rel=1e-6)
    assert parts["laxity"][0] == pytest.approx((1.0 - 9.0 / 9.9) / 24, rel=1e-5)
    assert parts["soc"][0] == -1.0  # unknown battery
    assert parts["max_power_now"][0] == pytest.approx(1.0)
    assert parts["base_load"] == pytest.approx(2.0 / 20.0)
    assert parts["import_price"] == pytest.approx(0.2 / 0.25)
    assert parts["headroom"] == pytest.approx(18.0 / 20.0)
    assert parts["forecast_base_load"].tolist() == pytest.approx([0.1, 0.1, 0.1])
    assert [f[0] for f in CHARGER_FEATURES][:2] == ["ev_present", "energy_needed"]
    env.step(np.array([10.0, 0.0]))
    obs, *_ = env.step(np.array([10.0, 8.0]))
    assert lay.unflatten(obs)["peak_so_far"] == pytest.approx(1.0)


def test_snapshot_matches_the_state_and_drives_a_kw_step() -> None:
    env = ChargingSiteEnv(scenario=random_scenario(8, battery=True), forecast_horizon=5)
    env.reset(seed=0)
    for _ in range(30):
        env.step(env.action_space.sample())
    snap = env.snapshot()
    assert isinstance(snap, Snapshot)
    assert snap.step_index == 30 and snap.forecast.horizon == 6
    assert snap.state.ev_present.shape == (env.site.n,)
    assert snap.forecast.base_load_kw[0] == snap.state.base_load_kw
    assert snap.timestamp == np.datetime64("2025-06-01T22:00:00") + np.timedelta64(30 * 15, "m")
    # a kW step with the snapshot's need spread over the time left goes through the same projection
    s = snap.state
    want = np.where(s.ev_present, s.energy_needed_kwh / np.maximum(s.time_left_h, 0.25), 0.0)
    _, _, _, _, info = env.step(np.append(want, -5.0))
    assert info["step_index"] == 30
    assert (info["charger_power_kw"] <= env.site.rated_kw + 1e-9).all()


def test_the_old_action_mode_is_a_clear_error() -> None:
    from envs.env import EnvConfig

    with pytest.raises(ValueError, match="NormalisedAction"):
        EnvConfig.from_kwargs(scenario=_hand_scenario(), action_mode="continuous")


def test_step_before_reset_raises() -> None:
    env = ChargingSiteEnv(scenario=_hand_scenario())
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, dtype=np.float32))
