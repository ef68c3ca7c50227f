"""The rule-based DLM: the operator's dependable default and the live fallback.

No learning and no solver: a handful of vectorised rules over the snapshot, fast enough to run every
second for 1,000 chargers. Each step it

1. **keeps every deadline** (laxity): an EV that could no longer finish at a conservative fraction
   ``hedge`` of its full power later gets what it *must* have now, first, within the hard limits, least
   laxity first;
2. **uses PV surplus first**: surplus the site would export is offered to every EV that still needs energy;
3. **schedules by price** (time-based): an EV also charges now when now is among the cheapest steps of its
   remaining stay (from the price forecast) that it needs, counting the power it can expect to get when
   the site is shared, so flexible energy goes to cheap hours when the deadline allows;
4. **shaves the peak**: all charging beyond what deadlines force stays under a billing-period peak
   target. The target starts at the level that minimises demand charge plus the energy cost of the
   present EVs (deadline-feasible "valley filling" of the forecast net load, priced by the forecast) and is
   raised only when forced charging pushes the import above it (then the new peak is the target);
5. **discharges** the stationary battery and, where the session allows V2G, EVs only in expensive hours
   (price above the cheapest recharge price in the window divided by the round-trip efficiency, plus
   degradation) and only so much that every EV can still reach its departure energy at full power; the
   battery also shaves import above the target and charges from PV surplus and in the cheapest hours.

Every request still goes through the safety projection.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from agents.allocate import Resources, fair_fill, greedy_fill, resource_use, site_headroom_kw
from agents.base import Decision
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState, Snapshot
from envs.physics import EVTerms, battery_box, ev_terms, round_trip_pays
from envs.projection import ceil_to_grid, charger_bounds
from envs.scenario import Scenario

_LEVELS = 48


@dataclass(frozen=True, eq=False)
class _Deadlines:
    """What deadlines force, per present EV that still needs energy (``idx``) and per departure step ``k``
    among them (``ks``): the grid-side energy each must have had by step ``k``, i.e. what it could not get
    after ``k`` at its hedged full power."""

    idx: IntArray
    pos: IntArray
    """(n,) position of each charger in ``idx``, -1 where not active"""
    steps: IntArray
    """(a,) steps to departure"""
    ks: IntArray
    """(K,) distinct departure steps (the shortfall through a resource peaks at one of them)"""
    by_k: FloatArray
    """(a, K) kWh each EV must have by step ``k``"""
    own_kw: FloatArray
    """(a,) kW each EV must draw now on its own (``must_kw`` of :func:`envs.physics.ev_terms`)"""
    site_kwh: FloatArray
    """(K,) the sum over EVs of ``by_k``"""

    @classmethod
    def of(
        cls,
        need_grid_kwh: FloatArray,
        later_step_kwh: FloatArray,
        steps_left: IntArray,
        must_kw: FloatArray,
        active: BoolArray,
    ) -> _Deadlines:
        idx = np.flatnonzero(active)
        pos = np.full(len(active), -1, dtype=np.int64)
        pos[idx] = np.arange(len(idx))
        g, later, sl = need_grid_kwh[idx], later_step_kwh[idx], steps_left[idx]
        ks = np.unique(sl)
        by_k = np.maximum(g[:, None] - later[:, None] * np.maximum(sl[:, None] - ks[None, :], 0), 0.0)
        return cls(idx, pos, sl, ks, by_k, must_kw[idx], by_k.sum(axis=0))


class RuleBasedDLM:
    """Deadline-aware, price-aware, peak-shaving rule-based allocator.

    Arguments:
        hedge: fraction of its full power an EV is assumed to get in future steps when deciding what it
            must charge now (lower = earlier, safer, dearer).
        v2g: allow V2G discharge of EVs whose session allows it.
        use_battery: operate the stationary battery.
        period_scaling: weigh the window's energy cost by the windows left in the billing period when
            choosing the peak target (a peak is paid once per period, energy every day).
        target_margin: the energy due by each deadline must fit in this fraction of the room under the
            peak target (lower = a higher, safer target).
        node_margin: the energy deadlines force through a node of the limit tree (or through the connection
            under the peak target) must fit in this fraction of its capacity in the later steps; the rest
            is charged now (lower = earlier, safer).
    """

    name = "rule_based"

    def __init__(
        self,
        hedge: float = 0.9,
        v2g: bool = True,
        use_battery: bool = True,
        period_scaling: bool = True,
        target_margin: float = 0.95,
        node_margin: float = 0.9,
    ) -> None:
        if not 0 < hedge <= 1:
            raise ValueError("hedge must lie in (0, 1]")
        self.hedge = hedge
        self.v2g = v2g
        self.use_battery = use_battery
        self.period_scaling = period_scaling
        self.target_margin = target_margin
        self.node_margin = node_margin
        self._site: SiteArrays | None = None
        self._res: Resources | None = None
        self._min_grid_kw: FloatArray | None = None
        self._episode_end: pd.Timestamp | None = None
        self._month_end: np.datetime64 | None = None

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self._site = site
        self._res = Resources.from_site(site)
        # each charger's minimum power on its resolution grid (kW), the least the projection lets it draw
        self._min_grid_kw = ceil_to_grid(site.min_kw, site.resolution_kw)
        self._episode_end = scenario.end if scenario is not None else None
        self._month_end = None

    # ------------------------------------------------------------------ helpers

    def _period_left_h(self, snapshot: Snapshot, horizon_h: float) -> float:
        """Hours left in the billing period (and the episode, when known), at least the forecast horizon."""
        site = self._site
        assert site is not None
        now = snapshot.timestamp.astype("datetime64[s]")
        ends: list[float] = []
        if site.config.tariff.billing_period == "month":
            if (
                self._month_end is None
                or now >= self._month_end
                or now < self._month_end - np.timedelta64(32, "D")
            ):  # computed once per month, not every step
                tz = site.config.timezone
                local = pd.Timestamp(now, tz="UTC").tz_convert(tz).tz_localize(None)
                end = (local.to_period("M") + 1).to_timestamp().tz_localize(tz).tz_convert("UTC")
                self._month_end = end.tz_localize(None).to_datetime64().astype("datetime64[s]")
            ends.append(float((self._month_end - now) / np.timedelta64(1, "s")) / 3600.0)
        if self._episode_end is not None:
            end_s = (
                self._episode_end.tz_convert("UTC").tz_localize(None).to_datetime64().astype("datetime64[s]")
            )
            ends.append(float((end_s - now) / np.timedelta64(1, "s")) / 3600.0)
        left = min(ends) if ends else horizon_h
        return max(left, horizon_h)

    def _planned_need(self, state: SiteState, hi_kw: FloatArray) -> FloatArray:
        """Energy each EV is planned on, kWh (>= 0): its need, except that a remainder ``0 < need <
        min(min power on the grid, hi) * eff * dt`` counts as one such minimum-power step.

        Why: no charger draws less than its minimum, so a smaller request is changed by the projection:
        switched off (the EV leaves short) or, where it covers the whole need, lifted to the minimum in
        whatever step the rule put it, past the peak target the rule planned for. Planned as one whole
        minimum-power step, the remainder is delivered (with a little extra) in the step the price / peak
        rules choose. ``hi_kw`` (the projection's upper bound, which counts the EV's room) caps the step.
        """
        site, min_grid = self._site, self._min_grid_kw
        assert site is not None and min_grid is not None
        need = np.maximum(np.asarray(state.energy_needed_kwh, dtype=float), 0.0)
        step_kwh = np.minimum(min_grid, np.maximum(hi_kw, 0.0)) * site.efficiency * float(state.dt_h)
        return np.where((need > 1e-9) & (need < step_kwh), step_kwh, need)

    # ------------------------------------------------------------------ policy

    def act(self, snapshot: Snapshot) -> Decision:
        site, res = self._site, self._res
        if site is None or res is None:
            raise RuntimeError("rule_based: call reset(site) before act()")
        st = snapshot.state
        fc = snapshot.forecast
        dt = float(st.dt_h)
        base_now = float(np.asarray(st.base_load_kw))
        pv_now = float(np.asarray(st.pv_kw))
        H = max(fc.horizon, 1)
        net_h = np.asarray(fc.base_load_kw, dtype=float) - np.asarray(fc.pv_kw, dtype=float)
        net_h[0] = base_now - pv_now
        imp_h = np.asarray(fc.import_price_per_kwh, dtype=float).copy()
        exp_h = np.asarray(fc.export_price_per_kwh, dtype=float).copy()
        imp_h[0], exp_h[0] = snapshot.import_price_per_kwh, snapshot.export_price_per_kwh
        # marginal price of charging: what surplus PV would earn exported, else the import price
        price_h = np.where(net_h < 0, exp_h, imp_h)

        # every rule plans on the need with small remainders rounded up to a minimum-power step
        _, hi_kw = charger_bounds(site, st)
        need = self._planned_need(st, hi_kw)
        present = np.asarray(st.ev_present, dtype=bool)
        eff = site.efficiency
        # the box, never above the need; the need's power rounded up to the grid, so that the projection's
        # rounding toward zero does not leave the EV a sliver short when it finishes
        caps = np.maximum(np.minimum(hi_kw, ceil_to_grid(need / (eff * dt), site.resolution_kw)), 0.0)
        # the deadline terms on the planned need: the rate each charger can hold, steps left, laxity, what
        # each EV must draw now and what it could spare at the hedged rate
        terms = ev_terms(site, st, need, self.hedge)
        rate, steps_left = terms.rate_kw, terms.steps_left
        active = present & (caps > 0) & (need > 1e-9)
        idx = np.flatnonzero(active)

        dl = _Deadlines.of(need / eff, self.hedge * rate * dt, steps_left, terms.must_kw, active)

        # ---- 4. peak target (demand charge): the cheapest deadline-feasible level, never below the peak
        peak_so_far = float(snapshot.peak_import_kw)
        target = self._peak_target(
            site, snapshot, need, eff, steps_left, active, net_h, price_h, peak_so_far, dl
        )
        expect_kw = _expected_kw(need, rate, steps_left, active, net_h, target, H)

        # ---- 1. deadlines: what must be charged now so that every EV, and every node of the limit tree
        # and the connection under the peak target, can still deliver what deadlines force through it
        must = _forced_kw(res, dl, caps, self._room_kwh(net_h, target, dt, dl.ks)[1], dt, self.node_margin)
        order = idx[np.argsort(terms.laxity_h[idx], kind="stable")]
        hard = res.limits(site_headroom_kw(site, st))
        a_must = greedy_fill(res, hard, must, order)
        forced_import = base_now - pv_now + float(a_must.sum())
        target = max(target, forced_import)

        # ---- 2 + 3. PV surplus and cheap hours, under the target
        rem_caps = np.maximum(caps - a_must, 0.0)
        soft = np.maximum(
            res.limits(site_headroom_kw(site, st, cap_kw=target)) - resource_use(res, a_must), 0.0
        )
        hard_left = np.maximum(hard - resource_use(res, a_must), 0.0)
        soft = np.minimum(soft, hard_left)
        surplus = max(pv_now - base_now - float(a_must.sum()), 0.0)
        a_pv = np.zeros(site.n)
        if surplus > 0 and len(idx):
            pv_lim = soft.copy()
            pv_lim[-1] = min(pv_lim[-1], surplus)
            a_pv = fair_fill(res, pv_lim, np.where(active, rem_caps, 0.0))
            rem_caps -= a_pv
            soft = np.maximum(soft - resource_use(res, a_pv), 0.0)
        want = _cheap_now(need, rate, expect_kw, eff, dt, steps_left, active, price_h, H)
        want = np.minimum(want, rem_caps)
        a_cheap = greedy_fill(res, soft, want, order, site.min_kw)
        charger_kw = a_must + a_pv + a_cheap
        # optional charging the fills left below the minimum goes off (what deadlines force stays: the
        # projection lifts it to the minimum where there is room)
        low = (
            (charger_kw > 0) & (charger_kw < site.min_kw - 1e-9) & (charger_kw < caps - 1e-9) & (a_must <= 0)
        )
        charger_kw[low] = 0.0

        import_kw = base_now - pv_now + float(charger_kw.sum())
        cheapest = float(imp_h.min())
        # ---- 5. V2G in expensive hours, only from EVs that keep their departure energy
        if self.v2g and site.bidirectional.any():
            v2g_kw = _v2g(site, snapshot, charger_kw, terms, imp_h, import_kw)
            charger_kw = charger_kw - v2g_kw
            import_kw -= float(v2g_kw.sum())
        battery_kw = 0.0
        if self.use_battery and site.has_battery:
            battery_kw = _battery(site, snapshot, import_kw, target, imp_h, price_h, cheapest)
        return Decision(charger_kw, battery_kw)

    # ------------------------------------------------------------------ the rules

    def _peak_target(
        self,
        site: SiteArrays,
        snapshot: Snapshot,
        need: FloatArray,
        eff: FloatArray,
        steps_left: np.ndarray,
        active: np.ndarray,
        net_h: FloatArray,
        price_h: FloatArray,
        peak_so_far: float,
        dl: _Deadlines,
    ) -> float:
        """The import level to stay under: the cheapest of a grid of levels that still lets every present
        EV finish (cumulative energy by deadline under the forecast net load), counting the demand charge
        once and the window's energy cost once per window left in the billing period."""
        tariff = site.config.tariff
        H = len(net_h)
        dt = float(snapshot.state.dt_h)
        grid_kwh = np.where(active, need / eff, 0.0)
        deadline = np.minimum(steps_left, H) - 1
        share = np.where(steps_left > H, H / np.maximum(steps_left, 1), 1.0)
        due = np.cumsum(np.bincount(deadline[active], weights=(grid_kwh * share)[active], minlength=H)[:H])
        if due[-1] <= 1e-9:
            return peak_so_far
        lo = max(peak_so_far, float(net_h.min()), 0.0)
        hi = site.import_limit_kw
        if hi <= lo:
            return peak_so_far
        levels = np.linspace(lo, hi, _LEVELS)
        room = np.maximum(levels[:, None] - net_h[None, :], 0.0) * dt  # (G, H) kWh per step under each level
        # feasible: what deadlines force by each departure step fits under the level (times the margin)
        feasible = (self._room_kwh(net_h, levels, dt, dl.ks)[0] >= dl.site_kwh[None, :] - 1e-6).all(axis=1)
        if not feasible.any():
            return hi
        if tariff.demand_charge_per_kw <= 0:
            return hi
        order = np.argsort(price_h, kind="stable")
        room_sorted = room[:, order]
        before = np.cumsum(room_sorted, axis=1) - room_sorted
        take = np.clip(due[-1] - before, 0.0, room_sorted)
        energy_cost = take @ price_h[order]
        windows = self._period_left_h(snapshot, H * dt) / (H * dt) if self.period_scaling else 1.0
        cost = tariff.demand_charge_per_kw * np.maximum(levels - peak_so_far, 0.0) + windows * energy_cost
        cost = np.where(feasible, cost, np.inf)
        return float(levels[int(np.argmin(cost))])

    def _room_kwh(
        self, net_h: FloatArray, level: float | FloatArray, dt: float, ks: IntArray
    ) -> tuple[FloatArray, FloatArray]:
        """Room under import ``level`` (scalar or ``(G,)``) times ``target_margin``, summed over the first
        ``k`` steps (from now) and over the ``k - 1`` steps after now, for each ``k`` of ``ks``; past the
        forecast horizon the window's mean room per step is assumed. Shapes ``(K,)`` or ``(G, K)``."""
        lv = np.asarray(level, dtype=float)[..., None]
        H = net_h.shape[-1]
        room = np.maximum(lv - net_h, 0.0) * (dt * self.target_margin)  # (..., H)
        cum = np.concatenate([np.zeros(lv.shape), np.cumsum(room, axis=-1)], axis=-1)  # (..., H + 1)
        mean = cum[..., -1:] / H
        kk = np.minimum(ks, H)
        beyond = np.maximum(ks - H, 0)
        with_now = cum[..., kk] + beyond * mean
        return with_now, with_now - room[..., :1]


# ------------------------------------------------------------------ the rules without state


def _forced_kw(
    res: Resources,
    dl: _Deadlines,
    caps: FloatArray,
    site_room_kwh: FloatArray,
    dt: float,
    node_margin: float,
) -> FloatArray:
    """What deadlines force now (kW per charger).

    Each EV that could not finish at ``hedge`` of its full power in its later steps must charge the
    difference now. That is not enough where EVs share a node of the limit tree (or the connection
    under the peak target): for every resource and every departure step ``k`` among the present EVs,
    the energy the EVs below it must have by step ``k`` (what they cannot get after ``k`` at hedged
    full power) has to fit through the resource in the ``k - 1`` later steps at ``node_margin`` of its
    limit (the connection: under the peak target, ``site_room_kwh``); what does not fit must flow now,
    and goes to the EVs below the resource that leave first.
    """
    n = len(caps)
    forced = np.zeros(n)
    idx = dl.idx
    if len(idx) == 0:
        return forced
    forced[idx] = np.minimum(dl.own_kw, caps[idx])
    ei, er, ec = res.entries
    keep = dl.pos[ei] >= 0
    ei, er, ec = ei[keep], er[keep], ec[keep]
    pe = dl.pos[ei]
    R = len(res.static_limit) + 1
    # (R, K) energy forced through each resource by each departure step, minus the room after now
    short = np.asarray(res.coef[idx].T @ dl.by_k)
    short[:-1] -= (node_margin * res.static_limit * dt)[:, None] * (dl.ks - 1)[None, :]
    short[-1] -= site_room_kwh
    k_star = np.argmax(short, axis=1)
    need_now = np.max(short, axis=1) / dt  # (R,) resource units that must flow now
    # hand each resource's shortfall to its EVs that leave first, twice (a parent sees its children's)
    srt = np.lexsort((dl.steps[pe], er))
    ei, er, ec, pe = ei[srt], er[srt], ec[srt], pe[srt]
    useful_kw = np.minimum(caps[ei], dl.by_k[pe, k_star[er]] / dt)
    for _ in range(2):
        deficit = need_now - np.bincount(er, weights=forced[ei] * ec, minlength=R)
        on = deficit[er] > 1e-9
        if not on.any():
            break
        e_i, e_r, e_c = ei[on], er[on], ec[on]
        extra = np.maximum(useful_kw[on] - forced[e_i], 0.0) * e_c
        cs = np.cumsum(extra)
        first = np.flatnonzero(np.r_[True, e_r[1:] != e_r[:-1]])
        start = np.repeat(cs[first] - extra[first], np.diff(np.r_[first, len(e_r)]))
        take = np.clip(deficit[e_r] - (cs - extra - start), 0.0, extra) / e_c
        add = np.zeros(n)
        np.maximum.at(add, e_i, take)
        forced += add
    return np.minimum(forced, caps)


def _expected_kw(
    need: FloatArray,
    rate: FloatArray,
    steps_left: np.ndarray,
    active: np.ndarray,
    net_h: FloatArray,
    target: float,
    H: int,
) -> FloatArray:
    """The power each EV can expect on average for the rest of its stay: its rate, or, when the site
    is crowded, its need-weighted share of the average room under the target over its stay."""
    room_h = np.maximum(target - net_h, 0.0)
    mean_room = np.cumsum(room_h) / np.arange(1, H + 1)
    stay = np.minimum(steps_left, H)
    total_need = float(need[active].sum())
    share = need / total_need if total_need > 0 else np.zeros_like(need)
    share_kw = mean_room[stay - 1] * share
    return np.where(active, np.maximum(np.minimum(rate, share_kw), 1e-6), 0.0)


def _cheap_now(
    need: FloatArray,
    rate: FloatArray,
    expect_kw: FloatArray,
    eff: FloatArray,
    dt: float,
    steps_left: np.ndarray,
    active: np.ndarray,
    price_h: FloatArray,
    H: int,
) -> FloatArray:
    """Power each EV wants now because now is among the cheapest steps of its stay that it needs
    (counted at the power it can expect)."""
    stay = np.minimum(steps_left, H)
    steps_needed = np.ceil(need / (np.maximum(expect_kw, 1e-6) * eff * dt) - 1e-9)
    cheaper = np.concatenate([[0], np.cumsum(price_h[1:] < price_h[0] - 1e-12)])  # (H,)
    n_cheaper = cheaper[stay - 1].astype(float)
    beyond = steps_left > H
    if beyond.any() and H > 1:
        n_cheaper = np.where(beyond, n_cheaper * (steps_left - 1) / (H - 1), n_cheaper)
    return np.where(active & (n_cheaper < steps_needed), rate, 0.0)


def _v2g(
    site: SiteArrays,
    snapshot: Snapshot,
    charger_kw: FloatArray,
    terms: EVTerms,
    imp_h: FloatArray,
    import_kw: float,
) -> FloatArray:
    """Discharge power per EV (>= 0) for V2G in an expensive hour: where the round trip to the
    cheapest recharge before it leaves pays, as much as it can spare and still finish at the hedged
    rate (``terms``: the deadline terms of the planned need)."""
    st = snapshot.state
    dt = float(st.dt_h)
    eff = site.efficiency
    steps_left = terms.steps_left
    deg = site.config.tariff.ev_degradation_per_kwh
    dis_max = np.minimum(site.max_discharge_kw, np.asarray(st.ev_max_discharge_kw, dtype=float))
    stay = np.minimum(steps_left, len(imp_h))
    # cheapest import price before each EV leaves (its recharge price)
    run_min = np.minimum.accumulate(imp_h)
    recharge = run_min[stay - 1]
    value_now = snapshot.import_price_per_kwh if import_kw > 0 else snapshot.export_price_per_kwh
    worth = round_trip_pays(value_now, recharge, eff, deg)
    # energy it can give and still make its departure energy at (hedged) full power later
    dis_kw = np.minimum(dis_max, np.maximum(terms.spare_kwh, 0.0) * eff / dt)
    dis_kw = np.minimum(dis_kw, np.asarray(st.energy_dischargeable_kwh, dtype=float) * eff / dt)
    ok = np.asarray(st.ev_present, bool) & worth & (charger_kw <= 0) & (steps_left > 1)
    dis_kw = np.where(ok, np.maximum(dis_kw, 0.0), 0.0)
    export_pays = round_trip_pays(snapshot.export_price_per_kwh, recharge, eff, deg)
    if not (export_pays & (dis_kw > 0)).any():
        # exporting does not pay: discharge at most what the site imports
        total = float(dis_kw.sum())
        if total > max(import_kw, 0.0) and total > 0:
            dis_kw *= max(import_kw, 0.0) / total
    small = dis_kw < site.min_kw - 1e-9
    return np.where(small, 0.0, dis_kw)


def _battery(
    site: SiteArrays,
    snapshot: Snapshot,
    import_kw: float,
    target: float,
    imp_h: FloatArray,
    price_h: FloatArray,
    cheapest: float,
) -> float:
    """Battery kW (+ charge): shave above the target, discharge in expensive hours, charge from PV
    surplus and in the cheapest hours under the target."""
    st = snapshot.state
    dt = float(st.dt_h)
    eta = site.battery_efficiency
    tariff = site.config.tariff
    lo_kw, can_chg = battery_box(site, float(np.asarray(st.battery_soc_kwh)), dt)
    can_dis = -lo_kw
    price = snapshot.import_price_per_kwh
    if import_kw > target:
        return -min(can_dis, import_kw - target)
    if import_kw < 0:  # surplus would be exported: store it if that beats exporting
        if round_trip_pays(price_h.max(), snapshot.export_price_per_kwh, eta, 0.0):
            return min(can_chg, -import_kw)
        return 0.0
    pays = round_trip_pays(price, cheapest, eta, tariff.battery_degradation_per_kwh)
    if pays and price >= np.quantile(imp_h, 0.75):
        return -min(can_dis, import_kw)
    if price <= np.quantile(imp_h, 0.25):
        return min(can_chg, max(target - import_kw, 0.0))
    return 0.0
