"""The storage rules of the rule-based DLM (:mod:`agents.rule_based`): V2G discharge of EVs and the
stationary battery, both in expensive hours and only where the round trip pays."""

from __future__ import annotations

import numpy as np

from agents.allocate import Resources, greedy_fill, resource_use, site_headroom_kw
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, Snapshot
from envs.physics import EVTerms, battery_box, round_trip_pays


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
    res: Resources | None = None,
    node_margin: float = 1.0,
) -> FloatArray:
    """Discharge power per EV (>= 0) for V2G in an expensive hour: where the round trip to the
    cheapest recharge before it leaves pays, as much as it can spare and still finish at the hedged
    rate (``terms``: the deadline terms of the planned need, at ``hedge``) charging only in the later
    steps whose recharge pays, and (with ``res``) only what every node of the limit tree and the
    connection can bring back in those steps at ``node_margin`` of its limit.

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
    if res is not None:
        dis_kw = _refill_fits(res, site, snapshot, dis_kw, paying, node_margin)
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
    res: Resources,
    site: SiteArrays,
    snapshot: Snapshot,
    dis_kw: FloatArray,
    paying: IntArray,
    node_margin: float,
) -> FloatArray:
    """``dis_kw`` cut where a resource (node of the limit tree, or the connection under its import limit
    less the base load) cannot bring back in the paying steps, at ``node_margin`` of its limit, what the
    EVs below it still need plus what they would give now (grid side)."""
    st = snapshot.state
    dt = float(st.dt_h)
    eff = site.efficiency
    need_grid = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0) / eff
    on = (dis_kw > 0) | (need_grid > 0)
    steps = np.where(on, paying, 0)
    ei, er, _ = res.entries
    R = res.shape[1]
    n_res = np.zeros(R)
    np.maximum.at(n_res, er, steps[ei].astype(float))
    limit = res.limits(site_headroom_kw(site, st))
    room = node_margin * limit * dt * n_res - resource_use(res, need_grid)
    # whole EVs at no less than the minimum power, most to spare first (scaled all alike, each would fall
    # below the minimum and give nothing)
    per_kw = dt / float(np.mean(eff)) ** 2  # grid-side kWh to bring back per kW given now
    order = np.argsort(-dis_kw, kind="stable")
    order = order[dis_kw[order] > 0]
    return greedy_fill(res, np.maximum(room, 0.0) / per_kw, dis_kw, order, site.min_kw)


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
