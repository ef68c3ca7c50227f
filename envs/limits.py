"""An independent checker of every site limit, written plainly and sharing no code with the projection.

:func:`limit_violations` counts, kind by kind, how an allocation breaks the limits of a site in a state.
Tests use it to check the projection and evaluation uses it to check every policy's output, so it is
deliberately simple: each limit is computed from the configuration and the state the obvious way.

Sign convention as everywhere: kW at the grid side, positive = charging, negative = discharging.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from envs.core import FloatArray, SiteArrays, SiteState


@dataclass(frozen=True)
class Violations:
    """How many times each limit is broken (summed over chargers, nodes, phases and the batch)."""

    no_ev: int = 0
    """power at a charger without an EV"""
    charger_max: int = 0
    """charging above the charger's rating"""
    ev_max: int = 0
    """charging above the EV's own limit"""
    overfill: int = 0
    """charging past full within the step"""
    discharge_not_allowed: int = 0
    """discharging where the charger is not bidirectional or the session does not allow V2G"""
    discharge_max: int = 0
    """discharging above the charger's or the EV's discharge limit"""
    soc_floor: int = 0
    """discharging below the EV's SoC floor within the step"""
    departure: int = 0
    """discharging so much that the EV can no longer reach its departure energy"""
    min_current: int = 0
    """charging above zero but below the minimum current (where the EV could take the minimum)"""
    node_kw: int = 0
    """a node's net kW above its limit in either direction"""
    node_phase_a: int = 0
    """a node's net current on one phase above its limit in either direction"""
    site_import: int = 0
    """net import above the import limit"""
    site_export: int = 0
    """net export above the export limit"""
    curtailment: int = 0
    """curtailment below zero, above the PV available, or of PV that cannot be curtailed"""
    battery: int = 0
    """battery power outside what its rating and state of charge allow (or any without a battery)"""

    @property
    def total(self) -> int:
        """All violations together."""
        return sum(int(getattr(self, f.name)) for f in fields(self))

    def nonzero(self) -> dict[str, int]:
        """The kinds that are violated, with their counts."""
        return {f.name: int(getattr(self, f.name)) for f in fields(self) if getattr(self, f.name)}


def _count(mask: np.ndarray) -> int:
    return int(np.count_nonzero(mask))


def limit_violations(
    site: SiteArrays,
    state: SiteState,
    charger_kw: FloatArray,
    battery_kw: FloatArray | float,
    pv_curtailed_kw: FloatArray | float,
    tol_kw: float = 1e-6,
) -> Violations:
    """Count the limits that ``charger_kw`` (``(n,)`` or ``(B, n)``) breaks in ``state``.

    ``battery_kw`` and ``pv_curtailed_kw`` are scalars or ``(B,)``. ``tol_kw`` is the slack allowed on
    every comparison, in kW (energy limits are compared as the kW they allow over the step; phase currents
    get the current that ``tol_kw`` draws on a phase).
    """
    cfg = site.config
    x = np.atleast_2d(np.asarray(charger_kw, dtype=np.float64))
    batch, n = x.shape
    dt = float(state.dt_h)

    def per_charger(v: object) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (batch, n))

    def per_site(v: object) -> np.ndarray:
        return np.broadcast_to(np.asarray(v, dtype=np.float64), (batch,))

    present = np.broadcast_to(np.asarray(state.ev_present, dtype=bool), (batch, n))
    ev_max = per_charger(state.ev_max_charge_kw)
    ev_dis = per_charger(state.ev_max_discharge_kw)
    need = per_charger(state.energy_needed_kwh)
    room = per_charger(state.energy_room_kwh)
    above_floor = per_charger(state.energy_dischargeable_kwh)
    time_left = per_charger(state.time_left_h)
    # an EV plugged in for part of the step takes at most that part of its rates on average over it
    frac = per_charger(1.0 if state.present_fraction is None else state.present_fraction)

    rated = np.array([c.rated_power_kw for c in cfg.chargers])
    min_kw = np.array([c.min_power_kw for c in cfg.chargers])
    eff = np.array([c.efficiency for c in cfg.chargers])
    bidirectional = np.array([c.bidirectional for c in cfg.chargers])
    dis_rating = np.array([c.max_discharge_kw if c.bidirectional else 0.0 for c in cfg.chargers])
    step_kw = np.array([c.resolution_a * c.kw_per_a if c.rate_unit == "A" else 0.001 for c in cfg.chargers])

    charging = x > tol_kw
    discharging = x < -tol_kw
    out: dict[str, int] = {}
    out["no_ev"] = _count(~present & (np.abs(x) > tol_kw))
    out["charger_max"] = _count(x > rated + tol_kw)
    out["ev_max"] = _count(present & (x > np.minimum(ev_max, rated) * frac + tol_kw))
    out["overfill"] = _count(present & charging & (x * dt * eff > room + tol_kw * dt))
    v2g_ok = bidirectional & (ev_dis > 0)
    out["discharge_not_allowed"] = _count(discharging & ~v2g_ok)
    out["discharge_max"] = _count(
        discharging & ((-x > dis_rating + tol_kw) | (-x > np.minimum(ev_dis, dis_rating) * frac + tol_kw))
    )
    out["soc_floor"] = _count(discharging & (-x * dt / eff > above_floor + tol_kw * dt))
    # after discharging d kW for the step the EV needs need + d*dt/eff, and can then take at most
    # min(rated, EV max) * eff per hour for the time that is left
    max_rate = np.minimum(rated, ev_max)
    need_after = need + (-x) * dt / eff
    reachable = max_rate * eff * np.maximum(time_left - dt, 0.0)
    out["departure"] = _count(discharging & (need_after > reachable + tol_kw * dt / eff))
    # the minimum holds while the EV is plugged in: on average over the step, the minimum times that part;
    # below it is allowed only where the EV itself takes less: then at the EV's limit (on the grid)
    ev_cap = np.maximum(np.minimum(np.minimum(rated, ev_max) * frac, room / (eff * dt)), 0.0)
    ev_cap_on_grid = np.floor(ev_cap / step_kw + 1e-9) * step_kw
    out["min_current"] = _count(
        present & charging & (x < min_kw * frac - tol_kw) & (x < np.minimum(ev_cap, ev_cap_on_grid) - tol_kw)
    )

    charger_nodes = [set(cfg.ancestors(c.node)) for c in cfg.chargers]
    node_kw = out_node_a = 0
    for nd in cfg.nodes:
        below = np.array([nd.id in anc for anc in charger_nodes])
        total_kw = x[:, below].sum(axis=1)
        node_kw += _count(np.abs(total_kw) > nd.max_power_kw + tol_kw)
        if nd.max_current_a is None:
            continue
        for phase in ("L1", "L2", "L3"):
            amps = np.zeros(batch)
            tol_a = 0.0
            for i, c in enumerate(cfg.chargers):
                if not below[i] or (c.phases == 1 and c.phase != phase):
                    continue
                a_per_kw = 1000.0 / (c.phases * c.voltage_v)
                amps = amps + x[:, i] * a_per_kw
                tol_a = max(tol_a, tol_kw * a_per_kw)
            out_node_a += _count(np.abs(amps) > nd.max_current_a + tol_a)
    out["node_kw"] = node_kw
    out["node_phase_a"] = out_node_a

    base = per_site(state.base_load_kw)
    pv = per_site(state.pv_kw)
    bat = per_site(battery_kw)
    curt = per_site(pv_curtailed_kw)
    net_import = base + x.sum(axis=1) + bat - (pv - curt)
    out["site_import"] = _count(net_import > cfg.grid.import_limit_kw + tol_kw)
    out["site_export"] = _count(net_import < -cfg.grid.export_limit_kw - tol_kw)
    curtailable = cfg.pv is None or cfg.pv.curtailable
    bad_curt = (curt < -tol_kw) | (curt > np.maximum(pv, 0.0) + tol_kw)
    if not curtailable:
        bad_curt = bad_curt | (curt > tol_kw)
    out["curtailment"] = _count(bad_curt)

    b = cfg.battery
    if b is None:
        out["battery"] = _count(np.abs(bat) > tol_kw)
    else:
        soc = per_site(state.battery_soc_kwh)
        space_kwh = np.maximum(b.soc_max * b.capacity_kwh - soc, 0.0)
        stored_kwh = np.maximum(soc - b.soc_min * b.capacity_kwh, 0.0)
        too_much_in = (bat > b.max_charge_kw + tol_kw) | (bat * dt * b.efficiency > space_kwh + tol_kw * dt)
        too_much_out = (-bat > b.max_discharge_kw + tol_kw) | (
            -bat * dt / b.efficiency > stored_kwh + tol_kw * dt
        )
        out["battery"] = _count(too_much_in | too_much_out)
    return Violations(**out)


__all__ = ["Violations", "limit_violations"]
