"""A learned policy served on the step it learned: decide on its own grid, hold, re-project every cycle.

A policy trained on 15-minute steps has learned what to ask for over the next 15 minutes: its
observation's window is 15-minute steps ahead, the energy a charger may still take is judged over 15
minutes, and its deadline terms count 15-minute steps. Asking it every 10-second control cycle would show
it a state it never saw (a window of 10-second steps, a step 90 times shorter). So the service runs it on
its own grid (:class:`OwnStepPolicy`):

* **decide on the step grid**: the policy is asked at the first cycle, then at the first cycle of every
  step of its grid (steps of ``step_s``, aligned to UTC midnight like the training episodes and the
  forecaster's history), on a snapshot re-expressed on that grid (:func:`on_policy_grid`: the step
  ``dt_h`` it was trained on, the window sampled every ``step_s``);
* **hold**: between decisions the cycle gets the held decision (its per-charger and battery requests);
* **re-project every cycle**: the controller projects the held request on each cycle's live snapshot
  (:meth:`serving.control.Controller.decide`), so every node, phase and the import limit hold on the live
  measurements, the fallback still takes a cycle the policy loses, and a stale meter still caps at the
  safe share;
* **re-decide early** on an arrival or a departure (the set of plugged-in EVs changed): a held request was
  made for the EVs that were there.

A policy that was trained on the control interval (its step no longer than one cycle) is not wrapped: it
decides every cycle (:func:`on_own_step`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from agents.base import Decision, Policy
from envs.core import ForecastWindow, SiteArrays, Snapshot

if TYPE_CHECKING:
    from envs.scenario import Scenario
    from serving.config import ServingConfig

LOG = logging.getLogger("evdlm.serving")

REASONS = ("start", "step", "arrival", "departure")
"""why the policy was asked: the first cycle, a new step of its grid, an EV plugged in, an EV left"""


def on_policy_grid(snapshot: Snapshot, step_s: float, min_steps: int = 1) -> Snapshot:
    """``snapshot`` (a live one, on the control grid) as the policy's own step sees it.

    The state's ``dt_h`` becomes ``step_s`` (in the stations' hours, like the live ``dt_h``); the window
    (element ``i`` at ``now + i`` control intervals) is sampled every ``step_s``: element ``k`` is the live
    element nearest to ``now + k * step_s``, past its end the last one (as the env pads its window), and
    at least ``min_steps`` elements. Prices now, peak and time are the snapshot's.
    """
    state = snapshot.state
    fc = snapshot.forecast
    interval_s = float(np.asarray(state.dt_h)) * 3600.0
    ratio = step_s / interval_s
    length = fc.horizon
    steps = max(min_steps, int(np.ceil(length / ratio - 1e-9)))
    idx = np.minimum(np.rint(np.arange(steps) * ratio).astype(np.int64), length - 1)
    window = ForecastWindow(
        np.asarray(fc.base_load_kw, dtype=float)[idx],
        np.asarray(fc.pv_kw, dtype=float)[idx],
        np.asarray(fc.import_price_per_kwh, dtype=float)[idx],
        np.asarray(fc.export_price_per_kwh, dtype=float)[idx],
    )
    own = dataclasses.replace(state, dt_h=step_s / 3600.0)
    return dataclasses.replace(snapshot, state=own, forecast=window)


class OwnStepPolicy:
    """``policy`` asked once per step of ``step_s`` (and early on an arrival or a departure), its decision
    held in between (see the module doc). ``time_scale``: the stations' seconds per wall second (the
    grid is ``step_s / time_scale`` wall seconds). ``min_window``: the window length the policy needs.
    """

    def __init__(self, policy: Policy, step_s: float, time_scale: float = 1.0, min_window: int = 1) -> None:
        if step_s <= 0 or time_scale <= 0:
            raise ValueError("step_s and time_scale must be > 0")
        self.policy = policy
        self.name = policy.name
        self.step_s = step_s
        self.grid_ns = round(step_s / time_scale * 1e9)
        """the decision grid, wall nanoseconds"""
        self.min_window = min_window
        self.decisions: Counter[str] = Counter()
        """decisions made, by reason (:data:`REASONS`)"""
        self.held_cycles = 0
        """cycles that got the held decision"""
        self._held: Decision | None = None
        self._present: np.ndarray | None = None
        self._next_ns = 0
        """the start of the next step of the grid after the held decision, wall ns"""

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.policy.reset(site, scenario)
        self._held, self._present, self._next_ns = None, None, 0
        self.decisions.clear()
        self.held_cycles = 0

    def why_decide(self, snapshot: Snapshot) -> str | None:
        """Why this cycle needs a new decision (one of :data:`REASONS`), None to hold."""
        if self._held is None or self._present is None:
            return "start"
        present = np.asarray(snapshot.state.ev_present, dtype=bool)
        if np.any(present & ~self._present):
            return "arrival"
        if np.any(self._present & ~present):
            return "departure"
        if _ns(snapshot) >= self._next_ns:
            return "step"
        return None

    def act(self, snapshot: Snapshot) -> Decision:
        why = self.why_decide(snapshot)
        if why is None:
            assert self._held is not None
            self.held_cycles += 1
            return self._held
        decision = self.policy.act(on_policy_grid(snapshot, self.step_s, self.min_window))
        now = _ns(snapshot)
        self._held = decision
        self._present = np.asarray(snapshot.state.ev_present, dtype=bool).copy()
        self._next_ns = (now // self.grid_ns + 1) * self.grid_ns
        self.decisions[why] += 1
        LOG.debug("%s decided (%s); held until the next step of %g s", self.name, why, self.step_s)
        return decision


def _ns(snapshot: Snapshot) -> int:
    return int(np.asarray(snapshot.timestamp).astype("datetime64[ns]").astype(np.int64))


def on_own_step(policy: Policy, cfg: ServingConfig) -> Policy:
    """``policy`` as the service runs it: on its own grid (:class:`OwnStepPolicy`) when it was trained on a
    step longer than the control interval (a learned policy's ``step_s``), else unchanged."""
    step_s = getattr(policy, "step_s", None)
    if not isinstance(step_s, float | int) or step_s <= cfg.control_interval_s * cfg.time_scale * (1 + 1e-9):
        return policy
    meta = getattr(policy, "meta", None)
    horizon = getattr(meta, "horizon", 0)
    return OwnStepPolicy(policy, float(step_s), cfg.time_scale, int(horizon) + 1)


def with_policy_forecaster(cfg: ServingConfig, policy: Policy) -> tuple[ServingConfig, str | None]:
    """``cfg`` with the live forecast made by the forecaster a learned policy was trained with (its
    bundle's copy), over at least the policy's horizon; unchanged for a policy without one. Returns a note
    when it replaces a different ``forecast.model`` of the serving config (the policy sees what it was
    trained on; the schedule planning then uses the same forecast)."""
    from serving.config import ForecastConfig

    file = getattr(policy, "forecaster_file", None)
    load = getattr(policy, "forecaster", None)
    if file is None or load is None:
        return cfg, None
    model = load()
    base = cfg.forecast if cfg.forecast is not None else ForecastConfig()
    note = None
    if base.model is not None and Path(base.model).resolve() != Path(file).resolve():
        note = (
            f"forecast.model {base.model} is replaced by the forecaster policy {policy.name!r} was trained "
            f"with ({file})"
        )
    step_s = float(getattr(policy, "step_s", 0.0))
    horizon = int(getattr(getattr(policy, "meta", None), "horizon", 0)) + 1
    need = math.ceil(horizon * step_s / model.step.total_seconds() - 1e-9) + 1
    fc = base.model_copy(
        update={"model": Path(file), "step": None, "horizon_steps": max(base.horizon_steps, need)}
    )
    out = cfg.model_copy(update={"forecast": fc})
    return type(cfg).model_validate(out.model_dump(by_alias=True)), note
