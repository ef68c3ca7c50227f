"""The storage rules of the rule-based DLM (:mod:`agents.rule_based`): V2G discharge of EVs and the
stationary battery, both in expensive hours and only where the round trip pays."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from agents.allocate import Resources
from agents.rule_deadlines import Deadlines, shortfall_kwh
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, Snapshot
from envs.physics import EVTerms, battery_box, round_trip_pays


@dataclass(frozen=True, eq=False)
class RefillRoom:
    """What the deadline rule (:func:`agents.rule_deadlines.forced_kw`) counts on to bring energy back, for
    :func:`ev_discharge_kw`: the limit tree ``res``, the need each EV is planned on (kWh, battery side), the
    connection's room under the peak target (``target_kw`` over the forecast net load ``net_h``, at
    ``target_margin``), each node's at ``node_margin`` of its limit, and what the EVs expected to arrive
    want by each departure step (``arrivals_due(ks)``, kWh)."""

    res: Resources
    need_kwh: FloatArray
    net_h: FloatArray
    target_kw: float
    target_margin: float
    node_margin: float
    arrivals_due: Callable[[IntArray], FloatArray]


def v2g_pays(
    site: SiteArrays, snapshot: Snapshot, terms: EVTerms, imp_h: FloatArray, import_kw: float
) -> BoolArray:
    """Per EV: present, allowed to discharge, not in its last step, and giving back a kWh now (at the
    import price while the site imports, else the export price) and buying it back at the cheapest
    import price before it leaves earns more than the round trip and the wear cost."""
    st = snapshot.state
    dis_max = np.minimum(site.max_discharge_kw, np.asarray(st.ev_max_discharge_kw, dtype=float))
    stay = np.minimum(terms.steps_left, len(imp_h))
    recharge = np.minimum.accumulate(imp_h)[stay - 1]  # its cheapest recharge price
    value_now = snapshot.import_price_per_kwh if import_kw > 0 else snapshot.export_price_per_kwh
    worth = round_trip_pays(value_now, recharge, site.efficiency, site.config.tariff.ev_degradation_per_kwh)
    return np.asarray(st.ev_present, bool) & (dis_max > 0) & worth & (terms.steps_left > 1)


def ev_discharge_kw(
    site: SiteArrays,
    snapshot: Snapshot,
    charger_kw: FloatArray,
    terms: EVTerms,
    imp_h: FloatArray,
    import_kw: float,
    hedge: float = 1.0,
    room: RefillRoom | None = None,
) -> FloatArray:
    """Discharge power per EV (>= 0) for V2G in an expensive hour: where the round trip to the
    cheapest recharge before it leaves pays, as much as it can spare and still finish at the hedged
    rate (``terms``: the deadline terms of the planned need, at ``hedge``) charging only in the later
    steps whose recharge pays, and (with ``room``) only what every node of the limit tree and the
    connection under the peak target can bring back in those steps by each EV's departure, as the deadline
    rule counts it (:func:`_refill_fits`).

    Why only those steps: the deadline rule (:func:`agents.rule_deadlines.forced_kw`) counts every later
    step as charging time. An EV emptied down to that looser spare must charge again in the expensive
    window the step after (its spare shrinks by a step of its rate each step), while another EV
    discharges: energy goes EV -> grid -> EV and loses the round trip every step (and live dispatch
    cannot follow +-rate swaps of every EV). Left with enough to finish in the paying steps, an EV the
    rule discharged is never forced to charge before them."""
    st = snapshot.state
    dt = float(st.dt_h)
    eff = site.efficiency
    steps_left = terms.steps_left
    deg = site.config.tariff.ev_degradation_per_kwh
    dis_max = np.minimum(site.max_discharge_kw, np.asarray(st.ev_max_discharge_kw, dtype=float))
    stay = np.minimum(steps_left, len(imp_h))
    recharge = np.minimum.accumulate(imp_h)[stay - 1]  # its cheapest recharge price
    value_now = snapshot.import_price_per_kwh if import_kw > 0 else snapshot.export_price_per_kwh
    # later steps (1 .. stay - 1) in which buying back what it gives now pays
    later = np.arange(len(imp_h)) >= 1
    pays_h = round_trip_pays(value_now, imp_h, float(np.mean(eff)), deg) & later
    paying = np.concatenate([[0], np.cumsum(pays_h)])[stay]
    # energy it can give and still make its departure energy at (hedged) full power in those steps only
    step_kwh = hedge * terms.rate_kw * eff * dt
    spare = terms.spare_kwh - step_kwh * np.maximum(steps_left - 1 - paying, 0)
    dis_kw = np.minimum(dis_max, np.maximum(spare, 0.0) * eff / dt)
    dis_kw = np.minimum(dis_kw, np.asarray(st.energy_dischargeable_kwh, dtype=float) * eff / dt)
    ok = v2g_pays(site, snapshot, terms, imp_h, import_kw) & (charger_kw <= 0)
    dis_kw = np.where(ok, np.maximum(dis_kw, 0.0), 0.0)
    if room is not None:
        dis_kw = _refill_fits(room, site, snapshot, dis_kw, terms, hedge, pays_h)
    export_pays = round_trip_pays(snapshot.export_price_per_kwh, recharge, eff, deg)
    if not (export_pays & (dis_kw > 0)).any():
        # exporting does not pay: discharge at most what the site imports
        total = float(dis_kw.sum())
        if total > max(import_kw, 0.0) and total > 0:
            dis_kw *= max(import_kw, 0.0) / total
    dis_kw = np.where(dis_kw < site.min_kw - 1e-9, 0.0, dis_kw)
    return _within_export(dis_kw, site.export_limit_kw + max(import_kw, 0.0), site.min_kw)


def _within_export(dis_kw: FloatArray, cap_kw: float, min_kw: FloatArray) -> FloatArray:
    """``dis_kw`` with its total within ``cap_kw`` (the export limit plus what the site draws without
    it): whole EVs, most first, then a last one at no less than its minimum (asked beyond the export
    limit, the projection would cut every EV's discharge alike, some below their minimum)."""
    if float(dis_kw.sum()) <= cap_kw + 1e-9:
        return dis_kw
    order = np.argsort(-dis_kw, kind="stable")
    before = np.concatenate([[0.0], np.cumsum(dis_kw[order])[:-1]])
    got = np.clip(cap_kw - before, 0.0, dis_kw[order])
    got = np.where(got < min_kw[order] - 1e-9, 0.0, got)
    out = np.zeros_like(dis_kw)
    out[order] = got
    return out


def _refill_fits(
    room: RefillRoom,
    site: SiteArrays,
    snapshot: Snapshot,
    dis_kw: FloatArray,
    terms: EVTerms,
    hedge: float,
    pays_h: BoolArray,
) -> FloatArray:
    """``dis_kw`` cut to what the deadline rule can bring back in the steps whose recharge pays (``pays_h``):
    for every resource (node of the limit tree, the connection under the peak target) and every departure
    step ``k``, what the EVs below it must have by ``k`` (their planned need plus what they give now, less
    what each can get after ``k`` at the hedged rate in paying steps) must fit in the paying steps before
    ``k`` as :func:`agents.rule_deadlines.forced_kw` counts them, no worse than without the discharge.

    Why per departure step and under the target: checked as a whole against the longest stay at the
    connection's full limit, the EVs that leave first could not all be brought back under the target by
    their departures; on the V2G benchmark with EVs that differ the deadline rule then forced 0.21 kWh
    through the connection in the window's last step (price 0.60) though no EV's own deadline did. Whole
    EVs, most to spare first, then the next one at what still fits (at least its minimum)."""
    if not (dis_kw > 0).any():
        return dis_kw
    st = snapshot.state
    dt = float(st.dt_h)
    eff = site.efficiency
    need_grid = np.maximum(room.need_kwh, 0.0) / eff
    on = np.asarray(st.ev_present, bool) & ((need_grid > 1e-9) | (dis_kw > 0))
    steps_left = np.asarray(terms.steps_left, dtype=np.int64)
    longest = int(steps_left[on].max()) + 1

    def upto(per_step: FloatArray) -> FloatArray:
        """[j]: the sum over steps 0 .. j - 1 (nothing counted past the horizon)"""
        c = np.concatenate([[0.0], np.cumsum(per_step)])
        return np.pad(c, (0, max(longest - len(c), 0)), mode="edge")

    usable = upto(pays_h.astype(float))
    site_room = upto(
        np.where(pays_h, np.maximum(room.target_kw - room.net_h, 0.0), 0.0) * dt * room.target_margin
    )
    later = hedge * terms.rate_kw * dt
    dl = Deadlines.of(need_grid, later, steps_left, np.zeros(site.n), on, usable)
    room_k = site_room[dl.ks] - room.arrivals_due(dl.ks)
    short0 = shortfall_kwh(room.res, dl, room_k, dt, room.node_margin, usable[dl.ks])
    # what each resource may carry by each departure step: no more short than without the discharge
    coef_t = room.res.coef[dl.idx].T.tocsr()
    cap = np.maximum(short0, 0.0) + 1e-9 + (np.asarray(coef_t @ dl.by_k) - short0)
    g = need_grid[dl.idx]
    after_k = later[dl.idx][:, None] * np.maximum(usable[dl.steps][:, None] - usable[dl.ks][None, :], 0.0)
    per_kw = dt / np.broadcast_to(np.asarray(eff, dtype=float), (site.n,))[dl.idx] ** 2  # kWh back per kW

    def fits(x_kw: FloatArray) -> bool:  # by_k with what it gives added to each EV's need
        by_k = np.maximum((g + x_kw[dl.idx] * per_kw)[:, None] - after_k, 0.0)
        return bool((np.asarray(coef_t @ by_k) <= cap).all())

    if fits(dis_kw):
        return dis_kw
    order = np.argsort(-dis_kw, kind="stable")
    order = order[dis_kw[order] > 0]

    def first(m: int) -> FloatArray:
        out = np.zeros_like(dis_kw)
        out[order[:m]] = dis_kw[order[:m]]
        return out

    lo, hi = 0, len(order)  # the first ``lo`` EVs fit whole, the first ``hi`` do not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(first(mid)) else (lo, mid)
    out = first(lo)
    i = order[lo]
    a, b = 0.0, float(dis_kw[i])
    for _ in range(12):
        out[i] = 0.5 * (a + b)
        a, b = (out[i], b) if fits(out) else (a, out[i])
    out[i] = a if a >= site.min_kw[i] - 1e-9 else 0.0
    return out


def battery_setpoint_kw(
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
