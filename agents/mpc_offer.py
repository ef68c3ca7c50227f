"""The MPC's top-up beyond the declared energy (:class:`agents.mpc.ModelPredictiveControl`): the rule-based
DLM's (:func:`agents.rule_based.top_up_kw`), offered under the peak the MPC planned for this step.

Why: the MPC plans the energy drivers declared, and some EVs take more than their drivers declared (on the
real week jpl-2021-08-02, declared mode: 8 EVs, 67 kWh). Stopped at the declaration, the MPC left 68.6 kWh
of them short, against the rule's 24.4 kWh, which offers every EV whose declared energy is in up to a
quantile of that excess seen in the site's log (:func:`agents.rule_drivers.under_declared_kwh`)."""

from __future__ import annotations

import numpy as np

from agents.allocate import Resources, resource_use, site_headroom_kw
from agents.rule_based import top_up_kw
from envs.core import FloatArray, SiteArrays, SiteState
from envs.physics import EVTerms


def mpc_top_up_kw(
    site: SiteArrays,
    res: Resources,
    top_up_kwh: float,
    st: SiteState,
    charger_kw: FloatArray,
    terms: EVTerms,
    price_h: FloatArray,
    peak_kw: float,
    battery_kw: float,
    offered_kwh: FloatArray,
) -> FloatArray:
    """What the MPC offers beyond the declared energy (kW per charger, >= 0), added to its ``charger_kw``:
    :func:`agents.rule_based.top_up_kw` with each resource's room left once ``charger_kw`` is served,
    the connection's under the planned ``peak_kw`` (the top-up never raises the peak), and the PV surplus
    left. None while any EV discharges (its energy would go round trip into another); none where
    ``top_up_kwh`` is 0 (no log, or drivers who declare what their EVs take)."""
    if top_up_kwh <= 0 or (charger_kw < 0).any():
        return np.zeros(site.n)
    use = resource_use(res, charger_kw)
    hard = np.maximum(res.limits(site_headroom_kw(site, st, battery_kw)) - use, 0.0)
    soft = np.maximum(res.limits(site_headroom_kw(site, st, battery_kw, cap_kw=peak_kw)) - use, 0.0)
    net_now = float(np.asarray(st.base_load_kw)) - float(np.asarray(st.pv_kw))
    surplus = max(-net_now - battery_kw - float(charger_kw.sum()), 0.0)
    offer = top_up_kw(
        site,
        res,
        top_up_kwh,
        st,
        charger_kw,
        terms,
        price_h,
        np.minimum(soft, hard),
        surplus,
        len(price_h),
        offered_kwh,
    )
    return np.minimum(offer, np.maximum(terms.hi_kw - charger_kw, 0.0))
