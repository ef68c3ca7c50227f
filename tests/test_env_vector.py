"""The batched env: equal to a SyncVectorEnv of single envs, autoreset, and the stable-baselines3 adapter."""

from __future__ import annotations

import numpy as np
import pytest
from gymnasium.vector import AutoresetMode, SyncVectorEnv

from envs.env import ChargingSiteEnv, EnvConfig, GeneratorSpec
from envs.vector import ChargingSiteVectorEnv, make_vec_env
from tests.test_env_support import random_scenario

KWARGS = {"generator": {"kind": "depot", "chargers": 3, "days": 1, "seed": 0, "pool": 4}, "episode_steps": 12}


@pytest.mark.parametrize("mode", ["continuous", "priority"])
def test_matches_a_sync_vector_env_of_single_envs(mode: str) -> None:
    B = 3
    venv = ChargingSiteVectorEnv(B, action_mode=mode, **KWARGS)  # type: ignore[arg-type]
    ref = SyncVectorEnv(
        [lambda: ChargingSiteEnv(action_mode=mode, **KWARGS) for _ in range(B)],  # type: ignore[arg-type]
        autoreset_mode=AutoresetMode.SAME_STEP,
    )
    assert venv.single_observation_space == ref.single_observation_space
    assert venv.action_space.shape == ref.action_space.shape == (B, 3)
    o1, _ = venv.reset(seed=11)
    o2, _ = ref.reset(seed=11)
    np.testing.assert_allclose(o1, o2, atol=1e-6)
    rng = np.random.default_rng(0)
    ends = 0
    for _ in range(30):
        a = rng.uniform(-1, 1, (B, 3)).astype(np.float32)
        o1, r1, t1, u1, i1 = venv.step(a)
        o2, r2, t2, _, i2 = ref.step(a)
        step2 = i2["final_info"] if t2.all() else i2  # SyncVectorEnv moves a finished step's info there
        np.testing.assert_allclose(o1, o2, atol=1e-6)
        np.testing.assert_allclose(r1, r2, rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(t1, t2)
        assert not u1.any()
        np.testing.assert_allclose(i1["site_import_kw"], step2["site_import_kw"], atol=1e-9)
        np.testing.assert_allclose(i1["charger_power_kw"], step2["charger_power_kw"], atol=1e-9)
        np.testing.assert_allclose(i1["cost"]["energy"], step2["cost"]["energy"], atol=1e-12)
        parts = sum(i1["cost"].values())
        np.testing.assert_allclose(parts, -r1, rtol=1e-12, atol=1e-12)
        if t1.any():
            ends += 1
            for b in np.flatnonzero(t1):
                np.testing.assert_allclose(i1["final_obs"][b], i2["final_obs"][b], atol=1e-6)
            assert i1["_final_obs"].tolist() == t1.tolist()
            assert venv.single_observation_space.contains(i1["final_obs"][int(np.flatnonzero(t1)[0])])
    assert ends == 2  # episodes of 12 steps end at steps 12 and 24


def test_rows_reset_with_their_own_seed_and_options() -> None:
    venv = ChargingSiteVectorEnv(2, **KWARGS)  # type: ignore[arg-type]
    _, info = venv.reset(seed=[5, None], options={"scenario_seed": [1, 2], "start_step": 3})
    assert [s.rsplit("s", 1)[1] for s in info["scenario"]] == ["1", "2"]
    assert info["start_step"].tolist() == [3, 3]
    with pytest.raises(ValueError, match="one per env"):
        venv.reset(options={"scenario_seed": [1, 2, 3]})


def test_final_info_reports_episode_totals() -> None:
    venv = ChargingSiteVectorEnv(2, scenario=random_scenario(3), episode_steps=5)
    venv.reset(seed=0)
    total = np.zeros(2)
    for _ in range(5):
        _, r, term, _, info = venv.step(np.ones((2, 6), dtype=np.float32))
        total += r
    assert term.all()
    np.testing.assert_allclose(info["final_info"]["episode_return"], total)
    assert info["final_info"]["episode_length"].tolist() == [5, 5]
    assert (info["final_info"]["energy_delivered_total_kwh"] > 0).all()
    assert venv.sim.t.tolist() == [0, 0]  # rows already reset


def test_sb3_adapter_steps_resets_and_trains() -> None:
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnv, VecNormalize

    config = EnvConfig(generator=GeneratorSpec(chargers=3, days=1, pool=2), episode_steps=8)
    a = make_vec_env(config, n_envs=2, seed=3)
    b = make_vec_env(config, n_envs=2, seed=3)
    assert isinstance(a, VecEnv) and a.num_envs == 2
    env_size = int(np.prod(a.observation_space.shape or ()))
    np.testing.assert_array_equal(a.reset(), b.reset())
    dones_seen = 0
    for _ in range(8):
        step_obs, rewards, dones, infos = a.step(np.zeros((2, 3), dtype=np.float32))
        obs = np.asarray(step_obs)
        assert obs.shape == (2, env_size) and rewards.dtype == np.float32
        if dones.any():
            dones_seen += 1
            assert infos[0]["terminal_observation"].shape == obs.shape[1:]
            assert infos[0]["TimeLimit.truncated"] is False
            assert "episode_return" in infos[0]
    assert dones_seen == 1
    full = make_vec_env(config, n_envs=2, seed=3, full_info=True)
    full.reset()
    _, _, _, infos = full.step(np.zeros((2, 3), dtype=np.float32))
    assert set(infos[1]["cost"]) == {
        "energy",
        "export_revenue",
        "demand_charge",
        "missing_energy",
        "degradation",
    }
    assert infos[1]["charger_power_kw"].shape == (3,)
    model = PPO("MlpPolicy", VecNormalize(a), n_steps=16, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=32)
    assert model.num_timesteps == 32
