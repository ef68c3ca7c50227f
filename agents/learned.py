"""Learned policies: a trained stable-baselines3 model behind the one :class:`~agents.base.Policy` protocol.

A learned policy acts on a :class:`~envs.core.Snapshot`, like every other policy, so evaluation and the
live service treat it alike. Three pieces, shared by training and acting so that both run the same code:

* :class:`SnapshotObserver` builds the environment's observation from a snapshot: the features are
  computed by :class:`envs.obs.ObservationLayout` (the env's own code); this module only presents the
  snapshot to it. A snapshot does not carry the EVs' state of charge, so that feature reads "unknown".
* :class:`ActionAdapter` turns the agent's action into a :class:`~agents.base.Decision`:
  ``residual`` (the default) adds a per-charger kW correction (and one for the stationary battery) to the
  rule-based DLM's decision; ``setpoint`` sets a few site-level numbers (the import level, the V2G share)
  that a fixed deadline-first rule fills (:class:`SetpointAllocator`); ``priority`` and ``continuous`` map
  the action with the env's own :class:`envs.env.ActionMapper`. The decision then goes through the
  safety projection as always.
* :class:`SnapshotControlEnv` wraps :class:`envs.env.ChargingSiteEnv` so that the agent trains on exactly
  these observations and decisions.

A trained policy is saved as a *bundle* folder: ``model.zip`` (SB3), ``vecnormalize.pkl`` (observation
statistics), ``site.yaml`` (the site it was trained for) and ``policy.json`` (:class:`PolicyMeta`, with a
fingerprint of the observation layout). :meth:`LearnedPolicy.reset` refuses a site whose charger count or
observation layout differs from the one it was trained for (:class:`SiteMismatchError`).
"""

from __future__ import annotations

import hashlib
import json
import pickle
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from zoneinfo import ZoneInfo

import gymnasium as gym
import numpy as np
import pandas as pd
from gymnasium import spaces

from agents.base import Decision
from agents.rule_based import RuleBasedDLM
from envs.config import SiteConfig, dump_site, load_site
from envs.core import FloatArray, SiteArrays, SiteState, Snapshot
from envs.obs import F32Array, ObservationLayout
from envs.projection import charger_bounds
from envs.scenario import Scenario

if TYPE_CHECKING:
    from stable_baselines3.common.base_class import BaseAlgorithm
    from stable_baselines3.common.vec_env import VecNormalize

    from envs.env import ChargingSiteEnv
    from envs.sim import BatchSim, Episode

ActionMode = Literal["residual", "priority", "continuous", "setpoint", "rule_setpoint"]
BUNDLE_META = "policy.json"
MODEL_FILE = "model.zip"
VECNORM_FILE = "vecnormalize.pkl"
SITE_FILE = "site.yaml"
BUNDLE_FORMAT = 1
_RESET_TRIES = 5
"""scenarios a training env may draw at one reset before a generator error is raised"""


class SiteMismatchError(ValueError):
    """The site a learned policy is asked to control is not the kind of site it was trained for."""


# --------------------------------------------------------------------------- observation


@dataclass(frozen=True)
class ObservationSpec:
    """What fixes the observation besides the site: the forecast horizon and the scales."""

    horizon: int = 16
    price_scale_per_kwh: float = 0.25
    time_scale_h: float = 24.0


def layout_for(site: SiteArrays, spec: ObservationSpec) -> ObservationLayout:
    """The env's observation layout for ``site`` (as :class:`envs.env.ChargingSiteEnv` builds it)."""
    return ObservationLayout.for_site(site, spec.horizon, spec.price_scale_per_kwh, spec.time_scale_h)


def action_dim(site: SiteArrays, mode: ActionMode = "residual") -> int:
    """Per-charger modes: one entry per charger, plus one for the stationary battery if the site has one.
    ``setpoint``: two site-level entries (the import level), one for V2G where a charger is bidirectional,
    one for the battery where there is one (see :class:`SetpointAllocator`)."""
    if mode == "setpoint":
        return 2 + int(bool(np.asarray(site.bidirectional).any())) + int(site.has_battery)
    if mode == "rule_setpoint":
        return 1 + int(bool(np.asarray(site.bidirectional).any()))
    return site.n + int(site.has_battery)


def layout_fingerprint(layout: ObservationLayout, mode: ActionMode, act_dim: int) -> str:
    """A short hash of everything that fixes what each observation and action entry means."""
    desc = {
        "names": layout.names(),
        "n_chargers": layout.n_chargers,
        "horizon": layout.horizon,
        "price_scale_per_kwh": layout.price_scale_per_kwh,
        "time_scale_h": layout.time_scale_h,
        "has_battery": layout.has_battery,
        "action_mode": mode,
        "act_dim": act_dim,
    }
    return hashlib.sha256(json.dumps(desc, sort_keys=True).encode()).hexdigest()[:16]


def _time_features(timestamp: np.datetime64, timezone: ZoneInfo) -> FloatArray:
    """(1, 4) sin/cos of the site-local time of day and week, as :func:`envs.sim.compile_episode` has them."""
    seconds = int(np.asarray(timestamp).astype("datetime64[us]").astype(np.int64)) / 1e6
    local = datetime.fromtimestamp(seconds, tz=UTC).astimezone(timezone)
    hours = local.hour + local.minute / 60.0 + (local.second + local.microsecond / 1e6) / 3600.0
    week_h = local.weekday() * 24.0 + hours
    tod, tow = 2 * np.pi * hours / 24.0, 2 * np.pi * week_h / 168.0
    return np.array([[np.sin(tod), np.cos(tod), np.sin(tow), np.cos(tow)]])


@dataclass(frozen=True, eq=False)
class _StepWindow:
    """One step as the part of :class:`envs.sim.Episode` that the observation's static block reads."""

    time_features: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    forecast: FloatArray


class _SnapshotView:
    """A one-row view of a snapshot with the attributes :meth:`ObservationLayout.write` reads of a
    :class:`envs.sim.BatchSim`: what the snapshot's state says, nothing delivered yet in its books, and
    the state of charge unknown (a snapshot does not carry it)."""

    batch = 1

    def __init__(self, site: SiteArrays, state: SiteState, peak_kw: float, static: F32Array) -> None:
        present = np.asarray(state.ev_present, dtype=bool)[None, :]
        self.present = present
        self.present_f = present.astype(float)
        self.request_kwh = np.asarray(state.energy_needed_kwh, dtype=float)[None, :]
        self.net_kwh = np.zeros_like(self.request_kwh)
        self.ev_max_charge_kw = np.asarray(state.ev_max_charge_kw, dtype=float)[None, :]
        self.ev_max_discharge_kw = np.asarray(state.ev_max_discharge_kw, dtype=float)[None, :]
        self.v2g = (self.ev_max_discharge_kw > 0).astype(float)
        rate_kw = np.minimum(site.rated_kw, self.ev_max_charge_kw) * site.efficiency
        self.h_per_kwh = np.where(present, 1.0 / np.where(present, rate_kw, 1.0), 0.0)
        self.soc_base = np.where(present, -1.0, 0.0)
        self.inv_battery = np.zeros_like(self.request_kwh)
        self.peak_kw = np.array([peak_kw])
        self.battery_soc_kwh = np.array([float(np.asarray(state.battery_soc_kwh))])
        self._time_left = np.where(present, np.asarray(state.time_left_h, dtype=float)[None, :], 0.0)
        self._static = static

    def time_left_h(self) -> FloatArray:
        return self._time_left

    def energy_needed_kwh(self) -> FloatArray:
        return self.request_kwh

    def soc(self) -> FloatArray:
        return self.soc_base

    def peak_so_far_kw(self) -> FloatArray:
        return self.peak_kw

    def static_obs(self) -> F32Array:
        return self._static


@dataclass(frozen=True, eq=False)
class Observed:
    """A snapshot as the agent sees it, with the batched state and charger bounds the action needs."""

    obs: F32Array
    """(size,) the observation"""
    state: SiteState
    """the snapshot's state as a batch of one"""
    lo_kw: FloatArray
    hi_kw: FloatArray


class SnapshotObserver:
    """Builds the env's observation (:class:`envs.obs.ObservationLayout`) from a :class:`Snapshot`."""

    def __init__(self, site: SiteArrays, spec: ObservationSpec) -> None:
        self.site = site
        self.spec = spec
        self.layout = layout_for(site, spec)
        self._timezone = ZoneInfo(site.config.timezone)

    def observe(self, snapshot: Snapshot) -> Observed:
        H = self.layout.horizon
        fc = snapshot.forecast
        if fc.horizon < H + 1:
            raise ValueError(
                f"the snapshot's forecast covers {fc.horizon} steps; this policy needs {H + 1} (now + {H})"
            )
        st = snapshot.state
        window = np.stack(
            [
                np.asarray(fc.base_load_kw, dtype=float)[: H + 1],
                np.asarray(fc.pv_kw, dtype=float)[: H + 1],
                np.asarray(fc.import_price_per_kwh, dtype=float)[: H + 1],
                np.asarray(fc.export_price_per_kwh, dtype=float)[: H + 1],
            ]
        )[None, :, :]
        step = _StepWindow(
            time_features=_time_features(snapshot.timestamp, self._timezone),
            base_load_kw=np.array([float(np.asarray(st.base_load_kw))]),
            pv_kw=np.array([float(np.asarray(st.pv_kw))]),
            import_price_per_kwh=np.array([snapshot.import_price_per_kwh]),
            export_price_per_kwh=np.array([snapshot.export_price_per_kwh]),
            forecast=window,
        )
        static = self.layout.static_block(cast("Episode", step))
        state = st.as_batch()
        lo, hi = charger_bounds(self.site, state)
        out = np.zeros((1, self.layout.size), dtype=np.float32)
        view = _SnapshotView(self.site, st, snapshot.peak_import_kw, static)
        self.layout.write(out, cast("BatchSim", view), state, np.asarray(hi, dtype=float))
        return Observed(out[0], state, np.asarray(lo, dtype=float), np.asarray(hi, dtype=float))


# --------------------------------------------------------------------------- action


@dataclass(frozen=True)
class _EpisodeEnd:
    """The one thing :meth:`RuleBasedDLM.reset` reads of a scenario: its end."""

    end: pd.Timestamp


@dataclass(frozen=True, eq=False)
class _EVTerms:
    need_kwh: FloatArray
    steps_left: np.ndarray
    active: np.ndarray
    must_kw: FloatArray
    """what the deadline forces now (finishing at ``hedge`` of full power later)"""
    laxity: FloatArray
    """steps of slack (inf where no EV needs energy)"""


class SetpointAllocator:
    """The ``setpoint`` action: a few site-level numbers, the allocation below them a fixed rule.

    The agent does not set each charger; it sets the site's *import level* for this step, and the rule
    fills it. Much smaller than a per-charger action, so it learns in minutes, and it is the lever that
    matters for a demand charge (the billing-period peak) and for time-of-use prices. Each step:

    1. **deadlines**: every EV gets what it must have now to still finish at ``hedge`` of its full power
       later (as the rule-based DLM), whatever the level;
    2. **level**: ``L0`` is the lowest import level (kW) under which every present EV still finishes by its
       deadline on the forecast net load, with ``margin`` to spare ("valley filling"). Entry 1 scales it,
       ``L1 = L0 * (1 + 0.5 a1)``; entry 0 lifts it toward the billing-period peak so far (which costs no
       more demand charge): ``level = L1 + (a0 + 1) / 2 * max(peak - L1, 0)``. The room between the
       forecast net load now and the level goes to the EVs with the least laxity first;
    3. **V2G** (entry 2, bidirectional sites): only when discharging pays after the round trip and the
       degradation cost (price now times efficiency squared above the cheapest import price in the window
       plus ``ev_degradation_per_kwh``), EVs that are not charging give ``(a2 + 1) / 2`` of the site's
       import, most slack first, never exporting (the export price never pays for the round trip) and
       never below what their departure needs (the projection's bound);
    4. **battery** (last entry, sites with one): ``a * max charge`` (``a >= 0``) or ``a * max discharge``.

    ``allow_discharge=False`` turns 3 off and keeps the battery from discharging: the same trained policy
    without discharge, to measure what V2G adds. The decision goes through the safety projection.
    """

    def __init__(
        self,
        site: SiteArrays,
        allow_discharge: bool = True,
        hedge: float = 0.9,
        margin: float = 0.85,
        v2g_hedge: float = 0.5,
        v2g_min_gain_per_kwh: float = 0.08,
    ) -> None:
        self.site = site
        self.allow_discharge = allow_discharge
        self.hedge = hedge
        self.margin = margin
        self.v2g_hedge = v2g_hedge
        self.v2g_min_gain_per_kwh = v2g_min_gain_per_kwh
        self.has_v2g = bool(np.asarray(site.bidirectional).any())

    def min_level_kw(
        self,
        need_kwh: FloatArray,
        steps_left: np.ndarray,
        active: np.ndarray,
        net_kw: FloatArray,
        dt_h: float,
    ) -> float:
        """The lowest site import level (kW) under which the present EVs' energy due by each deadline fits
        (with ``margin``) in the room above the forecast net load ``net_kw`` (H,); 0 when nothing is due."""
        site = self.site
        H = len(net_kw)
        grid_kwh = np.where(active, need_kwh / site.efficiency, 0.0)
        deadline = np.minimum(steps_left, H) - 1
        share = np.where(steps_left > H, H / np.maximum(steps_left, 1), 1.0)
        due = np.cumsum(np.bincount(deadline[active], weights=(grid_kwh * share)[active], minlength=H)[:H])
        if due[-1] <= 1e-9:
            return 0.0
        lo = max(float(net_kw.min()), 0.0)
        hi = float(site.import_limit_kw)
        if hi <= lo:
            return hi
        levels = np.linspace(lo, hi, 64)
        room = np.maximum(levels[:, None] - net_kw[None, :], 0.0) * dt_h
        feasible = (self.margin * np.cumsum(room, axis=1) >= due[None, :] - 1e-6).all(axis=1)
        return float(levels[int(np.argmax(feasible))]) if feasible.any() else hi

    def ev_terms(self, snapshot: Snapshot, hi_kw: FloatArray) -> _EVTerms:
        """Per-charger need, steps left, activity, deadline-forced kW and laxity of a snapshot."""
        site = self.site
        st = snapshot.state
        dt = float(st.dt_h)
        eff = site.efficiency
        present = np.asarray(st.ev_present, dtype=bool)
        need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
        rate = np.where(present, np.minimum(site.rated_kw, np.asarray(st.ev_max_charge_kw, dtype=float)), 0.0)
        steps_left = np.maximum(np.floor(np.asarray(st.time_left_h, dtype=float) / dt + 1e-6), 1).astype(
            np.int64
        )
        active = present & (hi_kw > 0) & (need > 1e-9)
        step_kwh = rate * eff * dt
        must = np.where(
            active, np.maximum(need - self.hedge * step_kwh * (steps_left - 1), 0.0) / (eff * dt), 0.0
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            laxity = np.where(active, steps_left - need / np.maximum(step_kwh, 1e-12), np.inf)
        return _EVTerms(need, steps_left, active, np.minimum(must, hi_kw), laxity)

    @staticmethod
    def fill_kw(budget_kw: float, room_kw: FloatArray, laxity: FloatArray) -> FloatArray:
        """``budget_kw`` spread over ``room_kw`` (per charger), least laxity first."""
        order = np.argsort(laxity, kind="stable")
        before = np.cumsum(room_kw[order]) - room_kw[order]
        out = np.zeros(len(room_kw))
        out[order] = np.clip(budget_kw - before, 0.0, room_kw[order])
        return out

    def decide(self, snapshot: Snapshot, observed: Observed, a: FloatArray) -> Decision:
        site = self.site
        st = snapshot.state
        dt = float(st.dt_h)
        lo_kw, hi_kw = observed.lo_kw[0], observed.hi_kw[0]
        ev = self.ev_terms(snapshot, hi_kw)
        need, steps_left, active, must, laxity = ev.need_kwh, ev.steps_left, ev.active, ev.must_kw, ev.laxity

        fc = snapshot.forecast
        net_now = float(np.asarray(st.base_load_kw)) - float(np.asarray(st.pv_kw))
        net_h = np.asarray(fc.base_load_kw, dtype=float) - np.asarray(fc.pv_kw, dtype=float)
        net_h[0] = net_now
        level1 = max(self.min_level_kw(need, steps_left, active, net_h, dt) * (1.0 + 0.5 * a[1]), 0.0)
        level = level1 + 0.5 * (a[0] + 1.0) * max(float(snapshot.peak_import_kw) - level1, 0.0)
        budget = max(level - net_now - float(must.sum()), 0.0)
        charger_kw = must + self.fill_kw(budget, np.where(active, hi_kw - must, 0.0), laxity)

        if self.has_v2g and self.allow_discharge:
            charger_kw = charger_kw - self.v2g_kw(
                snapshot, charger_kw, lo_kw, laxity, net_now, 0.5 * (a[2] + 1), level
            )
        battery_kw = 0.0
        if site.has_battery:
            ab = float(a[-1])
            low = site.battery_max_discharge_kw if self.allow_discharge else 0.0
            battery_kw = ab * site.battery_max_charge_kw if ab >= 0 else ab * low
        return Decision(charger_kw, battery_kw)

    def v2g_kw(
        self,
        snapshot: Snapshot,
        charger_kw: FloatArray,
        lo_kw: FloatArray,
        laxity: FloatArray,
        net_now_kw: float,
        fraction: float,
        level_kw: float,
    ) -> FloatArray:
        """Discharge per EV (>= 0 kW): ``fraction`` of the site import, when the round trip pays."""
        site = self.site
        import_kw = net_now_kw + float(charger_kw.sum())
        prices = np.asarray(snapshot.forecast.import_price_per_kwh, dtype=float)
        eta2 = float(np.mean(site.efficiency)) ** 2
        gain = (
            snapshot.import_price_per_kwh * eta2
            - float(prices.min())
            - site.config.tariff.ev_degradation_per_kwh
        )
        out = np.zeros(site.n)
        if gain < self.v2g_min_gain_per_kwh or import_kw <= 0 or fraction <= 0:
            return out
        # what each EV can give and still finish at ``v2g_hedge`` of its full power: the recharge spreads
        # over the rest of its stay instead of raising the peak
        st = snapshot.state
        dt = float(st.dt_h)
        present = np.asarray(st.ev_present, dtype=bool)
        rate = np.where(present, np.minimum(site.rated_kw, np.asarray(st.ev_max_charge_kw, dtype=float)), 0.0)
        steps_left = np.maximum(np.floor(np.asarray(st.time_left_h, dtype=float) / dt + 1e-6), 1)
        need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
        spare_kwh = self.v2g_hedge * rate * site.efficiency * dt * (steps_left - 1) - need
        spare_kw = np.maximum(spare_kwh, 0.0) * site.efficiency / dt
        can = np.where((charger_kw <= 0) & (lo_kw < 0), np.minimum(-lo_kw, spare_kw), 0.0)
        order = np.argsort(-np.where(np.isfinite(laxity), laxity, 1e9), kind="stable")
        before = np.cumsum(can[order]) - can[order]
        out[order] = np.clip(fraction * import_kw - before, 0.0, can[order])
        out = np.where(out < site.min_kw - 1e-9, 0.0, out)
        if not out.any():
            return out
        # the recharge must fit under the level already paid for: shrink the discharge until the lowest
        # deadline-feasible level with the extra energy stays at or below max(level, peak so far)
        net_h = np.asarray(snapshot.forecast.base_load_kw, dtype=float) - np.asarray(
            snapshot.forecast.pv_kw, dtype=float
        )
        net_h[0] = net_now_kw
        active = present & (np.maximum(need, 0.0) + out > 1e-9)
        paid_kw = max(level_kw, float(snapshot.peak_import_kw))
        scale, lo_s, hi_s = 1.0, 0.0, 1.0
        for _ in range(6):
            extra_kwh = scale * out * dt / site.efficiency
            if self.min_level_kw(need + extra_kwh, steps_left.astype(np.int64), active, net_h, dt) <= paid_kw:
                lo_s = scale
            else:
                hi_s = scale
            scale = lo_s if hi_s - lo_s < 1e-3 else 0.5 * (lo_s + hi_s)
        out = lo_s * out
        return np.where(out < site.min_kw - 1e-9, 0.0, out)


class RuleSetpoint:
    """The ``rule_setpoint`` action: site-level corrections of the rule-based DLM's decision.

    The rule-based DLM decides; entry 0 lifts its site import toward the billing-period peak so far
    (which costs no further demand charge): ``dz(a0) * (peak - import)`` kW more for the EVs with the
    least laxity, worth it in cheap hours before dear ones and before arrivals that would otherwise raise
    the peak. (No cut below the rule-based DLM: its deadline and node reserve is what keeps EVs on time;
    cutting into it raised later peaks.) On bidirectional sites V2G is the agent's, not the base's (the
    base runs without V2G): EVs give ``dz(a1)`` of the site import as in :class:`SetpointAllocator` (only
    where the round trip pays, never exporting, the recharge under the level already paid).

    ``dz(a) = max(a - DEAD_ZONE, 0) / (1 - DEAD_ZONE)``: a policy whose mean action sits near 0 (a fresh
    network's does) *is* the rule-based DLM without V2G, so learning starts from it exactly, and the
    training's evaluation at step 0 scores that start (the registered policy is never worse than it on
    the validation weeks). Exploration still crosses the dead zone, so the gradient sees both sides.
    """

    DEAD_ZONE = 0.1

    def __init__(self, site: SiteArrays, allow_discharge: bool = True) -> None:
        self.site = site
        self.allow_discharge = allow_discharge
        # V2G is the agent's (entry 1, gated as in :class:`SetpointAllocator`), not the base's
        self.base = RuleBasedDLM(v2g=False, use_battery=True)
        self.rule = SetpointAllocator(site, allow_discharge)

    def reset(self, episode_end: pd.Timestamp | None) -> None:
        known = None if episode_end is None else cast("Scenario", _EpisodeEnd(episode_end))
        self.base.reset(self.site, known)

    @classmethod
    def _dead_zone(cls, a: float) -> float:
        return max(a - cls.DEAD_ZONE, 0.0) / (1.0 - cls.DEAD_ZONE)

    def decide(self, snapshot: Snapshot, observed: Observed, a: FloatArray) -> Decision:
        base = self.base.act(snapshot)
        kw = np.asarray(base.charger_kw, dtype=float).copy()
        lo_kw, hi_kw = observed.lo_kw[0], observed.hi_kw[0]
        ev = self.rule.ev_terms(snapshot, hi_kw)
        st = snapshot.state
        net_now = float(np.asarray(st.base_load_kw)) - float(np.asarray(st.pv_kw))
        import_kw = net_now + float(kw.sum()) + float(base.battery_kw)
        peak = float(snapshot.peak_import_kw)
        lift = self._dead_zone(float(a[0]))
        if lift > 0:
            room = np.where(ev.active & (kw >= 0), np.maximum(hi_kw - kw, 0.0), 0.0)
            kw = kw + self.rule.fill_kw(lift * max(peak - import_kw, 0.0), room, ev.laxity)
        share = self._dead_zone(float(a[1])) if len(a) > 1 else 0.0
        if self.rule.has_v2g and self.allow_discharge and share > 0:
            level = net_now + float(kw.sum())
            kw = kw - self.rule.v2g_kw(snapshot, kw, lo_kw, ev.laxity, net_now, share, level)
        return Decision(kw, float(base.battery_kw))


class ActionAdapter:
    """Turns a normalised action ``(act_dim,)`` in ``[-1, 1]`` into a :class:`Decision` (see module doc).

    residual: charger ``i`` asks the rule-based DLM's kW plus ``a_i * residual_scale * rated_kw_i``; the
    battery entry adds ``a * residual_scale`` times its charge (``a >= 0``) or discharge rating.
    """

    def __init__(
        self, site: SiteArrays, mode: ActionMode, allow_discharge: bool = True, residual_scale: float = 0.5
    ) -> None:
        from envs.env import ActionMapper

        self.site = site
        self.mode = mode
        self.allow_discharge = allow_discharge
        self.residual_scale = residual_scale
        self.act_dim = action_dim(site, mode)
        self._mapper = ActionMapper(site, "priority" if mode == "priority" else "continuous", allow_discharge)
        self._base = RuleBasedDLM(v2g=allow_discharge, use_battery=True) if mode == "residual" else None
        self._setpoint = SetpointAllocator(site, allow_discharge) if mode == "setpoint" else None
        self._rule_setpoint = RuleSetpoint(site, allow_discharge) if mode == "rule_setpoint" else None

    def reset(self, episode_end: pd.Timestamp | None = None) -> None:
        """Start of an episode; ``episode_end`` (tz-aware), when known, tells the rule-based base how long
        the episode's billing horizon is (as the scenario tells the rule-based DLM in evaluation)."""
        if self._base is not None:
            known = None if episode_end is None else cast("Scenario", _EpisodeEnd(episode_end))
            self._base.reset(self.site, known)
        if self._rule_setpoint is not None:
            self._rule_setpoint.reset(episode_end)

    def decide(self, snapshot: Snapshot, observed: Observed, action: FloatArray) -> Decision:
        a = np.clip(np.asarray(action, dtype=float).reshape(1, -1), -1.0, 1.0)
        if a.shape[1] != self.act_dim:
            raise ValueError(f"action must have {self.act_dim} entries, got {a.shape[1]}")
        site = self.site
        if self._setpoint is not None:
            return self._setpoint.decide(snapshot, observed, a[0])
        if self._rule_setpoint is not None:
            return self._rule_setpoint.decide(snapshot, observed, a[0])
        if self._base is not None:
            base = self._base.act(snapshot)
            request_kw = np.asarray(base.charger_kw, dtype=float) + a[0, : site.n] * (
                self.residual_scale * site.rated_kw
            )
            if not self.allow_discharge:
                request_kw = np.maximum(request_kw, 0.0)
            battery_kw = float(base.battery_kw) + float(self._mapper.battery_kw(a)[0]) * self.residual_scale
            return Decision(request_kw, battery_kw)
        if self.mode == "priority":
            res = self._mapper.project(observed.state, a)
            return Decision(
                np.asarray(res.charger_kw, dtype=float)[0].copy(), float(np.asarray(res.battery_kw)[0])
            )
        req_kw, req_battery_kw = self._mapper.request(observed.state, observed.lo_kw, observed.hi_kw, a)
        return Decision(np.asarray(req_kw, dtype=float)[0].copy(), float(np.asarray(req_battery_kw)[0]))


# --------------------------------------------------------------------------- training wrapper


class SnapshotControlEnv(gym.Wrapper[np.ndarray, np.ndarray, np.ndarray, np.ndarray]):
    """:class:`envs.env.ChargingSiteEnv` seen through a learned policy's observer and action adapter.

    Observations are built from ``env.snapshot()`` and actions become kW requests stepped with
    ``env.step_kw`` (projected there), so training sees exactly what :class:`LearnedPolicy` sees when it
    acts on snapshots in evaluation or serving. Reward, termination and ``info`` are the env's.

    ``observation_horizon`` (default: the env's forecast horizon, at most that) is the forecast window the
    agent observes; the rule inside the action (``residual``, ``setpoint``) reads the env's whole window, so
    give the env the window evaluation gives policies (:data:`training.evaluate.DEFAULT_HORIZON`) for the
    agent to train on the rule it will act with.
    """

    def __init__(
        self,
        env: ChargingSiteEnv,
        mode: ActionMode,
        allow_discharge: bool = True,
        residual_scale: float = 0.5,
        observation_horizon: int | None = None,
    ) -> None:
        super().__init__(env)
        self.site_env = env
        horizon = env.config.forecast_horizon if observation_horizon is None else observation_horizon
        if not 1 <= horizon <= env.config.forecast_horizon:
            raise ValueError(
                f"observation_horizon {horizon} must lie in [1, {env.config.forecast_horizon}] "
                "(the env's forecast window)"
            )
        spec = ObservationSpec(
            horizon=horizon,
            price_scale_per_kwh=env.config.price_scale_per_kwh,
            time_scale_h=env.config.time_scale_h,
        )
        self.observer = SnapshotObserver(env.site, spec)
        self.adapter = ActionAdapter(env.site, mode, allow_discharge, residual_scale)
        self.observation_space = self.observer.layout.space()
        self.action_space = spaces.Box(-1.0, 1.0, shape=(self.adapter.act_dim,), dtype=np.float32)
        self._snapshot: Snapshot | None = None
        self._observed: Observed | None = None
        self.skipped_scenarios = 0
        """generated scenarios that failed validation and were skipped at reset"""

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        from envs.config import ConfigError

        for attempt in range(_RESET_TRIES):
            try:  # a retry draws the next scenario seed from the env's generator (seeded on the first try)
                _, info = self.site_env.reset(seed=seed if attempt == 0 else None, options=options)
                break
            except ConfigError:
                # a generated scenario that fails validation is skipped (and counted), not fatal to a run
                if attempt == _RESET_TRIES - 1 or self.site_env.config.generator is None:
                    raise
                self.skipped_scenarios += 1
        end = self.site_env.episode.timestamps[-1]  # the window end, UTC
        self.adapter.reset(pd.Timestamp(end).tz_localize("UTC"))
        return self._observe(), info

    def _observe(self) -> np.ndarray:
        self._snapshot = self.site_env.snapshot()
        self._observed = self.observer.observe(self._snapshot)
        return self._observed.obs.copy()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._snapshot is None or self._observed is None:
            raise RuntimeError("call reset() before step()")
        decision = self.adapter.decide(self._snapshot, self._observed, action)
        _, reward, terminated, truncated, info = self.site_env.step_kw(
            decision.charger_kw, decision.battery_kw
        )
        if terminated:
            obs = self._observed.obs.copy()  # no bootstrapping past a terminal step: any valid obs will do
            self._snapshot = self._observed = None
        else:
            obs = self._observe()
        return obs, reward, terminated, truncated, info


# --------------------------------------------------------------------------- the policy


@dataclass(frozen=True)
class PolicyMeta:
    """What a learned policy was trained for (``policy.json`` in its bundle)."""

    name: str
    algorithm: str
    action_mode: ActionMode
    residual_scale: float
    allow_discharge: bool
    n_chargers: int
    has_battery: bool
    horizon: int
    price_scale_per_kwh: float
    time_scale_h: float
    obs_dim: int
    act_dim: int
    layout_fingerprint: str
    trained_timesteps: int = 0
    site_name: str = ""
    format: int = BUNDLE_FORMAT

    @property
    def observation(self) -> ObservationSpec:
        return ObservationSpec(self.horizon, self.price_scale_per_kwh, self.time_scale_h)

    def to_json_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json_dict(cls, data: dict[str, Any], source: str = "policy.json") -> PolicyMeta:
        if data.get("format") != BUNDLE_FORMAT:
            raise ValueError(
                f"{source}: bundle format {data.get('format')!r}, this evdlm reads {BUNDLE_FORMAT}"
            )
        try:
            return cls(**data)
        except TypeError as err:
            raise ValueError(f"{source}: {err}") from None

    @classmethod
    def describe(
        cls,
        name: str,
        algorithm: str,
        site: SiteArrays,
        spec: ObservationSpec,
        mode: ActionMode,
        allow_discharge: bool,
        residual_scale: float,
        trained_timesteps: int = 0,
    ) -> PolicyMeta:
        layout = layout_for(site, spec)
        act = action_dim(site, mode)
        return cls(
            name=name,
            algorithm=algorithm,
            action_mode=mode,
            residual_scale=residual_scale,
            allow_discharge=allow_discharge,
            n_chargers=site.n,
            has_battery=site.has_battery,
            horizon=spec.horizon,
            price_scale_per_kwh=spec.price_scale_per_kwh,
            time_scale_h=spec.time_scale_h,
            obs_dim=layout.size,
            act_dim=act,
            layout_fingerprint=layout_fingerprint(layout, mode, act),
            trained_timesteps=trained_timesteps,
            site_name=site.config.name,
        )


def detached_statistics(vecnorm: VecNormalize) -> VecNormalize:
    """A copy of VecNormalize's statistics without its env, frozen (not updating), picklable again."""
    return _frozen(pickle.loads(pickle.dumps(vecnorm)))


def _frozen(unpickled: VecNormalize) -> VecNormalize:
    """Make unpickled statistics usable (and picklable) without an env; stop them updating."""
    unpickled.training = False
    unpickled.class_attributes = {}
    unpickled.returns = np.zeros(1)
    return unpickled


def _algorithm_class(name: str) -> type[BaseAlgorithm]:
    from stable_baselines3 import PPO, SAC, TD3

    classes: dict[str, type[BaseAlgorithm]] = {"PPO": PPO, "SAC": SAC, "TD3": TD3}
    if name not in classes:
        raise ValueError(f"unknown algorithm {name!r} (known: {sorted(classes)})")
    return classes[name]


class LearnedPolicy:
    """A trained SB3 model acting on snapshots (see the module doc). Deterministic: the mean action.

    ``vecnormalize`` holds the observation statistics the model was trained with (None: raw
    observations). ``site`` is the configuration it was trained for, kept for reference and serving.
    """

    def __init__(
        self,
        model: BaseAlgorithm,
        meta: PolicyMeta,
        vecnormalize: VecNormalize | None = None,
        site: SiteConfig | None = None,
    ) -> None:
        self.model = model
        self.meta = meta
        self.vecnormalize = vecnormalize
        self.trained_site = site
        self.name = meta.name
        self._observer: SnapshotObserver | None = None
        self._adapter: ActionAdapter | None = None

    def without_discharge(self) -> LearnedPolicy:
        """The same trained policy with V2G and battery discharge disabled (to measure what V2G adds)."""
        from dataclasses import replace

        meta = replace(self.meta, name=f"{self.meta.name}-no-discharge", allow_discharge=False)
        return LearnedPolicy(self.model, meta, self.vecnormalize, self.trained_site)

    # ------------------------------------------------------------------ persistence

    @classmethod
    def from_bundle(cls, path: str | Path) -> LearnedPolicy:
        folder = Path(path)
        meta_path = folder / BUNDLE_META
        if not meta_path.exists():
            raise FileNotFoundError(f"{folder}: not a learned-policy bundle (no {BUNDLE_META})")
        meta = PolicyMeta.from_json_dict(json.loads(meta_path.read_text()), str(meta_path))
        model = _algorithm_class(meta.algorithm).load(folder / MODEL_FILE, device="cpu")
        vecnorm = None
        if (folder / VECNORM_FILE).exists():
            with open(folder / VECNORM_FILE, "rb") as fh:
                vecnorm = _frozen(pickle.load(fh))
        site = load_site(folder / SITE_FILE) if (folder / SITE_FILE).exists() else None
        return cls(model, meta, vecnorm, site)

    def save_bundle(self, path: str | Path) -> Path:
        """Write the bundle folder (model, statistics, site, ``policy.json``)."""
        folder = Path(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.model.save(folder / MODEL_FILE)
        if self.vecnormalize is not None:
            with open(folder / VECNORM_FILE, "wb") as fh:
                pickle.dump(self.vecnormalize, fh)
        if self.trained_site is not None:
            dump_site(self.trained_site, folder / SITE_FILE)
        (folder / BUNDLE_META).write_text(
            json.dumps(self.meta.to_json_dict(), indent=2, sort_keys=True) + "\n"
        )
        return folder

    # ------------------------------------------------------------------ acting

    def predict_observation(self, obs: np.ndarray) -> F32Array:
        """Actions ``(B, act_dim)`` (float32, in ``[-1, 1]``) for raw observations ``(B, obs_dim)``."""
        x = np.asarray(obs, dtype=np.float32)
        x2 = x.reshape(1, -1) if x.ndim == 1 else x
        if x2.shape[-1] != self.meta.obs_dim:
            raise SiteMismatchError(
                f"{self.name}: observation has {x2.shape[-1]} entries, the policy was trained on "
                f"{self.meta.obs_dim}"
            )
        if self.vecnormalize is not None:
            x2 = np.asarray(self.vecnormalize.normalize_obs(x2), dtype=np.float32)
        action, _ = self.model.predict(x2, deterministic=True)
        return np.clip(np.asarray(action, dtype=np.float32).reshape(len(x2), -1), -1.0, 1.0)

    def check_site(self, site: SiteArrays) -> None:
        """Raise :class:`SiteMismatchError` unless ``site`` has the charger count and observation layout
        this policy was trained for."""
        m = self.meta
        if site.n != m.n_chargers:
            raise SiteMismatchError(
                f"policy {m.name!r} was trained for a site with {m.n_chargers} chargers; site "
                f"{site.config.name!r} has {site.n}"
            )
        layout = layout_for(site, m.observation)
        fp = layout_fingerprint(layout, m.action_mode, action_dim(site, m.action_mode))
        if fp != m.layout_fingerprint:
            why = []
            if site.has_battery != m.has_battery:
                why.append(f"stationary battery: trained {m.has_battery}, site {site.has_battery}")
            if layout.size != m.obs_dim:
                why.append(f"observation size: trained {m.obs_dim}, site {layout.size}")
            raise SiteMismatchError(
                f"policy {m.name!r} does not fit site {site.config.name!r}: observation layout fingerprint "
                f"{fp} != trained {m.layout_fingerprint}" + (f" ({'; '.join(why)})" if why else "")
            )

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self.check_site(site)
        m = self.meta
        self._observer = SnapshotObserver(site, m.observation)
        self._adapter = ActionAdapter(site, m.action_mode, m.allow_discharge, m.residual_scale)
        self._adapter.reset(None if scenario is None else scenario.end)

    def act(self, snapshot: Snapshot) -> Decision:
        if self._observer is None or self._adapter is None:
            raise RuntimeError(f"{self.name}: call reset(site) before act()")
        observed = self._observer.observe(snapshot)
        action = self.predict_observation(observed.obs)[0]
        return self._adapter.decide(snapshot, observed, action)


def is_learned_spec(spec: str) -> bool:
    """True for a spec that names a learned policy: an MLflow URI or a folder holding one."""
    if spec.startswith(("models:/", "runs:/")):
        return True
    path = Path(spec)
    return path.is_dir() and ((path / BUNDLE_META).exists() or (path / "MLmodel").exists())


def learned_loader(spec: str) -> LearnedPolicy | None:
    """Registry loader (:mod:`agents.registry`): a learned policy by bundle folder, MLflow model folder or
    ``models:/`` / ``runs:/`` URI; None for any other spec."""
    if not is_learned_spec(spec):
        return None
    if (Path(spec) / BUNDLE_META).exists():
        return LearnedPolicy.from_bundle(spec)
    from training.mlflow_model import load_learned_policy

    return load_learned_policy(spec)
