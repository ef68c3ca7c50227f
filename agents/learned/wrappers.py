"""The env as a learned policy sees it: Gymnasium wrappers over :class:`~envs.env.ChargingSiteEnv`.

:func:`learned_env` stacks them the way training uses them, so that the agent trains on exactly the
observations and decisions :class:`~agents.learned.policy.LearnedPolicy` makes when it acts on snapshots in
evaluation or serving:

* :class:`SkipInvalidScenarios`: a generated scenario that fails validation is skipped (and counted);
* :class:`SnapshotObservation`: observations built from ``env.snapshot()`` by a
  :class:`~agents.learned.observation.SnapshotObserver`;
* :class:`LearnedAction`: the agent's action through an action mode (:mod:`agents.learned.actions`) to the
  env's kW request, projected there. Reward, termination and ``info`` are the env's.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from agents.learned.actions import ActionMode, action_mode
from agents.learned.observation import ObservationSpec, Observed, SnapshotObserver
from agents.rollout import kw_request
from envs.config import ConfigError
from envs.core import Snapshot
from envs.env import ChargingSiteEnv

RESET_TRIES = 5
"""scenarios a training env may draw at one reset before a generator error is raised"""


class SkipInvalidScenarios(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Resets again (up to :data:`RESET_TRIES` draws) when a generated scenario fails validation."""

    def __init__(self, env: ChargingSiteEnv) -> None:
        super().__init__(env)
        self.site_env = env
        self.skipped_scenarios = 0
        """generated scenarios that failed validation and were skipped at reset"""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        for attempt in range(RESET_TRIES):
            try:  # a retry draws the next scenario seed from the env's generator (seeded on the first try)
                return self.site_env.reset(seed=seed if attempt == 0 else None, options=options)
            except ConfigError:
                if attempt == RESET_TRIES - 1 or self.site_env.config.generator is None:
                    raise
                self.skipped_scenarios += 1
        raise AssertionError("unreachable")


class SnapshotObservation(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """Observations from ``env.snapshot()``; ``observation_horizon`` (default: the env's forecast horizon,
    at most that) is the forecast window observed. After the last step the observation is the one before
    it (nothing bootstraps past a terminal step)."""

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray], observation_horizon: int | None = None) -> None:
        super().__init__(env)
        site_env: ChargingSiteEnv = env.unwrapped  # type: ignore[assignment]
        self.site_env = site_env
        horizon = site_env.config.forecast_horizon if observation_horizon is None else observation_horizon
        if not 1 <= horizon <= site_env.config.forecast_horizon:
            raise ValueError(
                f"observation_horizon {horizon} must lie in [1, {site_env.config.forecast_horizon}] "
                "(the env's forecast window)"
            )
        spec = ObservationSpec(horizon, site_env.config.price_scale_per_kwh, site_env.config.time_scale_h)
        self.observer = SnapshotObserver(site_env.site, spec)
        self.observation_space = self.observer.layout.space()
        self.snapshot: Snapshot | None = None
        self.observed: Observed | None = None

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        _, info = self.env.reset(seed=seed, options=options)
        return self._observe(), info

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self.observed is None:
            raise RuntimeError("call reset() before step()")
        _, reward, terminated, truncated, info = self.env.step(action)
        if terminated:
            obs = self.observed.obs.copy()
            self.snapshot = self.observed = None
        else:
            obs = self._observe()
        return obs, float(reward), terminated, truncated, info

    def _observe(self) -> np.ndarray:
        self.snapshot = self.site_env.snapshot()
        self.observed = self.observer.observe(self.snapshot)
        return self.observed.obs.copy()


class LearnedAction(gym.ActionWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """The agent's action ``Box(-1, 1, (mode.act_dim,))`` through an action mode to the env's kW request.

    Wraps a :class:`SnapshotObservation` (the mode decides on the snapshot and charger range it observed).
    """

    def __init__(self, env: SnapshotObservation, mode: ActionMode) -> None:
        super().__init__(env)
        self.observing = env
        self.mode = mode
        self.action_space = spaces.Box(-1.0, 1.0, shape=(mode.act_dim,), dtype=np.float32)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        end = self.observing.site_env.episode.timestamps[-1]  # the window end, UTC
        self.mode.reset(pd.Timestamp(end).tz_localize("UTC"))
        return obs, info

    def action(self, action: np.ndarray) -> np.ndarray:
        snapshot, observed = self.observing.snapshot, self.observing.observed
        if snapshot is None or observed is None:
            raise RuntimeError("call reset() before step()")
        decision = self.mode.decide(snapshot, observed, action)
        return kw_request(decision, self.observing.site_env.site)


def learned_env(
    env: ChargingSiteEnv,
    mode: str,
    allow_discharge: bool = True,
    residual_scale: float = 0.5,
    observation_horizon: int | None = None,
) -> LearnedAction:
    """``env`` seen through a learned policy's observation and action mode ``mode`` (see the module doc).

    The rule inside the action (``residual``, ``setpoint``, ``rule_setpoint``) reads the env's whole
    forecast window: give the env the window evaluation gives policies
    (:data:`training.evaluate.DEFAULT_HORIZON`) for the agent to train on the rule it will act with.
    """
    observing = SnapshotObservation(SkipInvalidScenarios(env), observation_horizon)
    return LearnedAction(observing, action_mode(mode, env.site, allow_discharge, residual_scale))
