"""A learned policy's action modes: each turns the agent's action in ``[-1, 1]`` into a :class:`Decision`.

One small class per mode, named in the bundle (``policy.json``'s ``action_mode``) and the training config:

* :class:`Residual` (``residual``): the rule-based DLM's kW plus ``a_i * residual_scale * rated_kw_i`` per
  charger; the battery entry adds ``a * residual_scale`` times its charge (``a >= 0``) or discharge rating.
* :class:`Setpoint` (``setpoint``): site-level numbers (import level, V2G share, battery) filled by
  :class:`agents.rule_setpoint.SetpointAllocator`.
* :class:`RuleSetpoint` (``rule_setpoint``): site-level corrections of the rule-based DLM's decision
  (:class:`agents.rule_setpoint.RuleSetpoint`).
* :class:`Normalised` (``continuous``) and :class:`Priority` (``priority``): the env's own wrappers'
  mappings (:mod:`envs.wrappers`) applied to the snapshot.

The decision then goes through the safety projection as always.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd

from agents.base import Decision
from agents.learned.observation import ChargerRange
from agents.rule_based import RuleBasedDLM
from agents.rule_setpoint import RuleSetpoint as RuleSetpointRule
from agents.rule_setpoint import SetpointAllocator, known_end
from envs.core import FloatArray, SiteArrays, Snapshot
from envs.projection import ProjectionPlan
from envs.wrappers import battery_request, battery_scale, normalised_request, priority_request


class ActionMode:
    """Base of the action modes: ``decide`` clips the action, checks its size and hands it on."""

    name: ClassVar[str]

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        self.site = site
        self.allow_discharge = allow_discharge
        self.residual_scale = residual_scale
        self.act_dim = self.dim(site)

    @classmethod
    def dim(cls, site: SiteArrays) -> int:
        """Entries of the action: one per charger, plus one for the stationary battery if there is one."""
        return site.n + int(site.has_battery)

    def reset(self, episode_end: pd.Timestamp | None = None) -> None:
        """Start of an episode; ``episode_end`` (tz-aware), when known, tells a rule-based base how long the
        episode's billing horizon is (as the scenario tells the rule-based DLM in evaluation)."""

    def decide(self, snapshot: Snapshot, bounds: ChargerRange, action: FloatArray) -> Decision:
        a = np.clip(np.asarray(action, dtype=float).reshape(1, -1), -1.0, 1.0)
        if a.shape[1] != self.act_dim:
            raise ValueError(f"action must have {self.act_dim} entries, got {a.shape[1]}")
        return self._decide(snapshot, bounds, a)

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        raise NotImplementedError


class Residual(ActionMode):
    name = "residual"

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        super().__init__(site, allow_discharge, residual_scale)
        # learned modes start from the rule as it was trained (trusting declared departures)
        self._base = RuleBasedDLM(v2g=allow_discharge, use_battery=True, early_prior=0.0)
        self._scale = battery_scale(site, allow_discharge)

    def reset(self, episode_end: pd.Timestamp | None = None) -> None:
        self._base.reset(self.site, known_end(episode_end))

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        site = self.site
        base = self._base.act(snapshot)
        request_kw = np.asarray(base.charger_kw, dtype=float) + a[0, : site.n] * (
            self.residual_scale * site.rated_kw
        )
        if not self.allow_discharge:
            request_kw = np.maximum(request_kw, 0.0)
        battery_kw = (
            float(base.battery_kw) + float(battery_request(a, site, self._scale)[0]) * self.residual_scale
        )
        return Decision(request_kw, battery_kw)


class Normalised(ActionMode):
    name = "continuous"

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        super().__init__(site, allow_discharge, residual_scale)
        self._scale = battery_scale(site, allow_discharge)

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        req_kw, req_battery_kw = normalised_request(a, bounds.lo_kw, bounds.hi_kw, self._scale)
        return Decision(np.asarray(req_kw, dtype=float)[0].copy(), float(np.asarray(req_battery_kw)[0]))


class Priority(ActionMode):
    name = "priority"

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        super().__init__(site, allow_discharge, residual_scale)
        self._plan = ProjectionPlan.from_site(site)

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        res = priority_request(self.site, bounds.state, a, self.allow_discharge, plan=self._plan)
        return Decision(
            np.asarray(res.charger_kw, dtype=float)[0].copy(), float(np.asarray(res.battery_kw)[0])
        )


class Setpoint(ActionMode):
    """Two site-level entries (the import level), one for V2G where a charger is bidirectional, one for the
    battery where there is one (see :class:`agents.rule_setpoint.SetpointAllocator`)."""

    name = "setpoint"

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        super().__init__(site, allow_discharge, residual_scale)
        self._rule = SetpointAllocator(site, allow_discharge)

    @classmethod
    def dim(cls, site: SiteArrays) -> int:
        return 2 + int(bool(np.asarray(site.bidirectional).any())) + int(site.has_battery)

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        return self._rule.decide(snapshot, bounds.lo_kw[0], bounds.hi_kw[0], a[0])


class RuleSetpoint(ActionMode):
    """One entry (the import lift), one more for V2G where a charger is bidirectional (see
    :class:`agents.rule_setpoint.RuleSetpoint`)."""

    name = "rule_setpoint"
    early_prior = 0.0
    """the rule-based DLM's bet on declared departures (:class:`agents.rule_based.RuleBasedDLM`)"""

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5) -> None:
        super().__init__(site, allow_discharge, residual_scale)
        self._rule = RuleSetpointRule(site, allow_discharge, early_prior=self.early_prior)

    @classmethod
    def dim(cls, site: SiteArrays) -> int:
        return 1 + int(bool(np.asarray(site.bidirectional).any()))

    def reset(self, episode_end: pd.Timestamp | None = None) -> None:
        self._rule.reset(episode_end)

    def _decide(self, snapshot: Snapshot, bounds: ChargerRange, a: FloatArray) -> Decision:
        return self._rule.decide(snapshot, bounds.lo_kw[0], bounds.hi_kw[0], a[0])


class RuleSetpointHedged(RuleSetpoint):
    """As ``rule_setpoint``, on the rule-based DLM exactly as registered (``rule_based``): it does not bet on
    declared departures before drivers are seen to keep them (``early_prior`` 1). The zero action is then
    the ``rule_based`` policy itself (without V2G), also where declarations are unreliable (real sites)."""

    name = "rule_setpoint_hedged"
    early_prior = 1.0


ACTION_MODES: dict[str, type[ActionMode]] = {
    cls.name: cls for cls in (Residual, Setpoint, RuleSetpoint, RuleSetpointHedged, Normalised, Priority)
}
"""the action modes by the name a bundle and a training config give"""


def action_mode(
    name: str, site: SiteArrays, allow_discharge: bool = True, residual_scale: float = 0.5
) -> ActionMode:
    """The action mode ``name`` (a key of :data:`ACTION_MODES`) for ``site``."""
    if name not in ACTION_MODES:
        raise ValueError(f"unknown action mode {name!r} (known: {sorted(ACTION_MODES)})")
    return ACTION_MODES[name](site, allow_discharge, residual_scale)


def action_dim(site: SiteArrays, mode: str = "residual") -> int:
    """Entries of the action of mode ``mode`` on ``site``."""
    if mode not in ACTION_MODES:
        raise ValueError(f"unknown action mode {mode!r} (known: {sorted(ACTION_MODES)})")
    return ACTION_MODES[mode].dim(site)
