"""Rule-based allocators steered by a few site-level numbers: the rules under the learned setpoint actions.

:class:`SetpointAllocator` fills a site import level deadline-first; :class:`RuleSetpoint` lifts the
rule-based DLM's (:mod:`agents.rule_based`) import toward the billing-period peak and adds V2G. A learned
policy (:mod:`agents.learned.actions`) sets the numbers; these classes are the arithmetic below them, kept
beside the rule-based DLM they build on.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import cast

import numpy as np
import pandas as pd

from agents.base import Decision
from agents.rule_based import RuleBasedDLM
from envs import physics
from envs.core import FloatArray, SiteArrays, Snapshot
from envs.scenario import Scenario


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
    """The rule under the learned ``setpoint`` action: a few site-level numbers, the allocation a rule.

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
        """Per-charger need, steps left, activity, deadline-forced kW and laxity of a snapshot: the core's
        deadline terms (:func:`envs.physics.ev_terms`, at ``hedge`` of the holdable rate), laxity in steps."""
        st = snapshot.state
        need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
        terms = physics.ev_terms(self.site, st, need_kwh=need, hedge=self.hedge)
        active = np.asarray(st.ev_present, dtype=bool) & (hi_kw > 0) & (need > 1e-9)
        must = np.where(active, np.minimum(terms.must_kw, hi_kw), 0.0)
        with np.errstate(over="ignore"):  # laxity_h is clipped at +-BIG hours; in steps that may be inf
            laxity = np.where(active, terms.laxity_h / float(st.dt_h), np.inf)
        return _EVTerms(need, np.asarray(terms.steps_left, dtype=np.int64), active, must, laxity)

    @staticmethod
    def fill_kw(budget_kw: float, room_kw: FloatArray, laxity: FloatArray) -> FloatArray:
        """``budget_kw`` spread over ``room_kw`` (per charger), least laxity first."""
        order = np.argsort(laxity, kind="stable")
        before = np.cumsum(room_kw[order]) - room_kw[order]
        out = np.zeros(len(room_kw))
        out[order] = np.clip(budget_kw - before, 0.0, room_kw[order])
        return out

    def decide(self, snapshot: Snapshot, lo_kw: FloatArray, hi_kw: FloatArray, a: FloatArray) -> Decision:
        """The decision for the action ``a`` (entries in [-1, 1]); ``lo_kw``, ``hi_kw`` ``(n,)``: each
        charger's feasible range now (:func:`envs.projection.charger_bounds`)."""
        site = self.site
        st = snapshot.state
        dt = float(st.dt_h)
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
        # the round trip pays per charger (each EV's energy goes through its own charger both ways)
        pays = physics.round_trip_pays(
            snapshot.import_price_per_kwh,
            float(prices.min()) + self.v2g_min_gain_per_kwh,
            site.efficiency,
            site.config.tariff.ev_degradation_per_kwh,
        )
        out = np.zeros(site.n)
        if not pays.any() or import_kw <= 0 or fraction <= 0:
            return out
        # what each EV can give and still finish at ``v2g_hedge`` of its full power: the recharge spreads
        # over the rest of its stay instead of raising the peak
        st = snapshot.state
        dt = float(st.dt_h)
        present = np.asarray(st.ev_present, dtype=bool)
        need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
        terms = physics.ev_terms(site, st, need_kwh=need, hedge=self.v2g_hedge)
        steps_left = np.asarray(terms.steps_left, dtype=np.int64)
        spare_kw = np.where(pays, np.maximum(terms.spare_kwh, 0.0) * site.efficiency / dt, 0.0)
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
            if self.min_level_kw(need + extra_kwh, steps_left, active, net_h, dt) <= paid_kw:
                lo_s = scale
            else:
                hi_s = scale
            scale = lo_s if hi_s - lo_s < 1e-3 else 0.5 * (lo_s + hi_s)
        out = lo_s * out
        return np.where(out < site.min_kw - 1e-9, 0.0, out)


class RuleSetpoint:
    """The rule under the learned ``rule_setpoint`` action: site-level corrections of the rule-based DLM.

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

    def __init__(self, site: SiteArrays, allow_discharge: bool = True, early_prior: float = 0.0) -> None:
        self.site = site
        self.allow_discharge = allow_discharge
        # V2G is the agent's (entry 1, gated as in :class:`SetpointAllocator`), not the base's.
        # early_prior 0 (trust the declared departures from the start) is what the shipped policies were
        # trained on; 1 is the registered rule-based DLM's (see :class:`agents.rule_based.RuleBasedDLM`)
        self.base = RuleBasedDLM(v2g=False, use_battery=True, early_prior=early_prior)
        self.rule = SetpointAllocator(site, allow_discharge)

    def reset(self, episode_end: pd.Timestamp | None) -> None:
        self.base.reset(self.site, known_end(episode_end))

    @classmethod
    def _dead_zone(cls, a: float) -> float:
        return max(a - cls.DEAD_ZONE, 0.0) / (1.0 - cls.DEAD_ZONE)

    def decide(self, snapshot: Snapshot, lo_kw: FloatArray, hi_kw: FloatArray, a: FloatArray) -> Decision:
        """As :meth:`SetpointAllocator.decide`."""
        base = self.base.act(snapshot)
        kw = np.asarray(base.charger_kw, dtype=float).copy()
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


def known_end(episode_end: pd.Timestamp | None) -> Scenario | None:
    """What :meth:`RuleBasedDLM.reset` reads of a scenario (its end), from the end alone (None: unknown)."""
    return None if episode_end is None else cast("Scenario", _EpisodeEnd(episode_end))
