"""The storage rules of the rule-based DLM (:mod:`agents.rule_based`): V2G discharge of EVs and the
stationary battery, both in expensive hours and only where the round trip pays."""

from __future__ import annotations

import numpy as np

from envs.core import FloatArray, SiteArrays, Snapshot
from envs.physics import EVTerms, battery_box, round_trip_pays


def ev_discharge_kw(
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
