"""What a training run trains: its env (the documented env through a learned policy's wrappers), the vector
of env copies SB3 steps, the SB3 model, and the description a trained policy's bundle carries."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np

from agents.learned import LearnedAction, ObservationSpec, PolicyMeta, learned_env
from envs.forecast import ForecastProvider, NoisyForecast, PerfectForecast
from training.rl_config import ForecastSpec, PPOSpec, SACSpec, TD3Spec, TrainConfig

if TYPE_CHECKING:
    import gymnasium as gym
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecEnv

    from envs.env import ChargingSiteEnv
    from training.site_history import TrainingHistory


def forecast_provider(spec: ForecastSpec) -> ForecastProvider:
    """The forecast provider the observation's window comes from."""
    # (cast: the frozen providers' read-only ``name`` does not satisfy the protocol's settable one)
    if spec.provider == "perfect":
        return cast("ForecastProvider", PerfectForecast())
    if spec.provider == "noisy":
        noisy = NoisyForecast(error=spec.error, error_growth_per_step=spec.error_growth_per_step)
        return cast("ForecastProvider", noisy)
    from envs.config import ConfigError

    path = Path(spec.model_path or "")
    if not path.is_file():
        raise ConfigError(
            f"env.forecast.model_path: {path} is not a file; write one with `evdlm forecast fit --out {path}`"
        )
    from forecasting.provider import ModelForecast

    return cast("ForecastProvider", ModelForecast.load(path))


def make_env(
    config: TrainConfig, site_seed: int | None = None, history: TrainingHistory | None = None
) -> LearnedAction:
    """One training env: generated scenarios on the site of ``site_seed`` (default: the training offset),
    a new scenario per episode (seeds ``site_seed + k``), seen as a learned policy sees it. With
    ``env.history``: windows of the history's training part (``history``, built once per run by
    :func:`training.site_history.training_history`)."""
    from envs.env import ChargingSiteEnv

    horizon = config.env.forecast.horizon_steps
    if config.env.history is not None:
        if history is None:
            raise ValueError("a config with env.history needs its TrainingHistory (training_history())")
        env = ChargingSiteEnv(
            history=history.episodes,
            step=config.env.history.step,
            forecast=history.forecast,
            forecast_horizon=history.episodes.horizon,
            allow_discharge=config.env.allow_discharge,
        )
    else:
        env = _generated_env(config, horizon, site_seed)
    return learned_env(
        env,
        config.env.action_mode,
        config.env.allow_discharge,
        config.env.residual_scale,
        observation_horizon=horizon,
    )


def _generated_env(config: TrainConfig, horizon: int, site_seed: int | None) -> ChargingSiteEnv:
    """The env of a generator config: a new generated scenario per episode on the policy's site."""
    from envs.env import ChargingSiteEnv, GeneratorSpec
    from training.evaluate import DEFAULT_HORIZON

    g = config.env.generator
    seed = config.env.train_seed_offset if site_seed is None else site_seed
    gen = GeneratorSpec(
        kind=g.kind,
        chargers=g.chargers,
        days=g.days,
        seed=seed,
        v2g=g.v2g,
        pv=g.pv,
        battery=g.battery,
        demand_charge_per_kw=g.demand_charge_per_kw,
        prefetch=g.prefetch,
    )
    return ChargingSiteEnv(
        generator=gen,
        step=g.step,
        forecast=forecast_provider(config.env.forecast),
        # the rule inside the action reads the window evaluation gives every policy; the agent observes
        # the configured horizon of it
        forecast_horizon=max(DEFAULT_HORIZON, horizon),
        allow_discharge=config.env.allow_discharge,
    )


def _env_thunk(config: TrainConfig, history: TrainingHistory | None) -> Callable[[], gym.Env[Any, Any]]:
    def thunk() -> gym.Env[Any, Any]:
        from stable_baselines3.common.monitor import Monitor

        return Monitor(make_env(config, history=history))

    return thunk


def build_vec_env(config: TrainConfig, history: TrainingHistory | None = None) -> VecEnv:
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    thunks = [_env_thunk(config, history) for _ in range(config.training.n_envs)]
    if config.training.vec_env == "subproc" and len(thunks) > 1:
        return SubprocVecEnv(thunks, start_method="spawn")
    return DummyVecEnv(thunks)


def build_model(config: TrainConfig, venv: VecEnv, seed: int) -> BaseAlgorithm:
    """The SB3 algorithm the config names, on ``venv``."""
    from stable_baselines3 import PPO, SAC, TD3
    from stable_baselines3.common.noise import NormalActionNoise

    a = config.algorithm
    common: dict[str, Any] = {
        "learning_rate": a.learning_rate,
        "gamma": a.gamma,
        "seed": seed,
        "device": a.device,
        "verbose": 0,
    }
    arch = list(a.net_arch)
    if isinstance(a, PPOSpec):
        return PPO(
            "MlpPolicy",
            venv,
            n_steps=a.n_steps,
            batch_size=a.batch_size,
            n_epochs=a.n_epochs,
            gae_lambda=a.gae_lambda,
            clip_range=a.clip_range,
            target_kl=a.target_kl,
            ent_coef=a.ent_coef,
            vf_coef=a.vf_coef,
            max_grad_norm=a.max_grad_norm,
            policy_kwargs={"net_arch": {"pi": arch, "vf": arch}, "log_std_init": a.log_std_init},
            **common,
        )
    if isinstance(a, SACSpec):
        return SAC(
            "MlpPolicy",
            venv,
            ent_coef=a.ent_coef,
            policy_kwargs={"net_arch": arch},
            **a.replay_kwargs(),
            **common,
        )
    assert isinstance(a, TD3Spec)
    n_act = int(np.prod(venv.action_space.shape or (1,)))
    return TD3(
        "MlpPolicy",
        venv,
        action_noise=NormalActionNoise(np.zeros(n_act), a.action_noise_std * np.ones(n_act)),
        policy_kwargs={"net_arch": arch},
        **a.replay_kwargs(),
        **common,
    )


def policy_meta(config: TrainConfig, env: LearnedAction, timesteps: int) -> PolicyMeta:
    e = env.observing.site_env
    spec = ObservationSpec(
        config.env.forecast.horizon_steps, e.config.price_scale_per_kwh, e.config.time_scale_h
    )
    return PolicyMeta.describe(
        name=config.name,
        algorithm=config.algorithm.name,
        site=e.site,
        spec=spec,
        mode=config.env.action_mode,
        allow_discharge=config.env.allow_discharge,
        residual_scale=config.env.residual_scale,
        trained_timesteps=timesteps,
        step_s=e.source.dt_h * 3600.0,
    )
