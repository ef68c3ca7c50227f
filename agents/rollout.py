"""The one snapshot -> act -> step loop: a policy driving :class:`~envs.env.ChargingSiteEnv`.

``for step in rollout(policy, env): ...`` yields every step of the episode the env is in (reset both first:
``env.reset(seed=...)``, ``policy.reset(env.site, scenario)``). Evaluation, the benchmarks and training's
held-out evaluation all run policies through it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from agents.base import Decision, Policy
from envs.core import FloatArray, SiteArrays, Snapshot
from envs.env import ChargingSiteEnv


def kw_request(decision: Decision, site: SiteArrays) -> FloatArray:
    """The env's kW action for a decision: the chargers' kW, then (with a battery) the battery's."""
    charger_kw = np.asarray(decision.charger_kw, dtype=float).reshape(-1)
    if not site.has_battery:
        return charger_kw
    return np.concatenate([charger_kw, [float(decision.battery_kw)]])


@dataclass(frozen=True, eq=False)
class RolloutStep:
    """One step: what the policy saw and decided, and what the env reported."""

    snapshot: Snapshot
    """the state before the step"""
    decision: Decision
    reward: float
    terminated: bool
    info: dict[str, Any]
    decide_s: float
    """wall time of ``policy.act``"""


def rollout(policy: Policy, env: ChargingSiteEnv, max_steps: int | None = None) -> Iterator[RolloutStep]:
    """Steps of ``policy`` on ``env`` until the episode ends (or ``max_steps``)."""
    site = env.site
    steps = env.episode.n_steps if max_steps is None else max_steps
    for _ in range(steps):
        snapshot = env.snapshot()
        t0 = time.perf_counter()
        decision = policy.act(snapshot)
        decide_s = time.perf_counter() - t0
        _, reward, terminated, _, info = env.step(kw_request(decision, site))
        yield RolloutStep(snapshot, decision, reward, terminated, info, decide_s)
        if terminated:
            return
