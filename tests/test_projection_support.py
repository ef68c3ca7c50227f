"""Hypothesis builders of random sites, states and requests for the projection tests (no tests here),
and an independent reference solver of the exact Euclidean projection (the QP)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from scipy.optimize import minimize

from envs.config import site_from_dict
from envs.core import SiteArrays, SiteState

PHASE_NAMES = ("L1", "L2", "L3")


@st.composite
def sites(draw: st.DrawFn, max_chargers: int = 6, allow_battery: bool = True) -> SiteArrays:
    """A random site: a tree of 1-3 levels, 1- and 3-phase chargers, phase current limits, V2G, PV."""
    levels = draw(st.integers(1, 3))
    nodes: list[dict[str, object]] = []
    leaves: list[str] = []

    def limits() -> dict[str, object]:
        out: dict[str, object] = {"max_power_kw": draw(st.floats(4.0, 60.0))}
        if draw(st.booleans()):
            out["max_current_a"] = draw(st.floats(8.0, 80.0))
        return out

    nodes.append({"id": "n0", **limits()})
    frontier = ["n0"]
    for level in range(1, levels):
        nxt = []
        for parent in frontier:
            for k in range(draw(st.integers(1, 2))):
                nid = f"{parent}_{level}{k}"
                nodes.append({"id": nid, "parent": parent, **limits()})
                nxt.append(nid)
        frontier = nxt
    leaves = frontier
    all_nodes = [str(nd["id"]) for nd in nodes]
    n = draw(st.integers(1, max_chargers))
    chargers = []
    for i in range(n):
        on = draw(st.sampled_from(leaves)) if draw(st.integers(0, 3)) else draw(st.sampled_from(all_nodes))
        single = draw(st.booleans())
        spec: dict[str, object] = {
            "id": f"c{i}",
            "node": on,
            "phases": 1 if single else 3,
            "max_current_a": draw(st.sampled_from([10.0, 16.0, 32.0])),
            "min_current_a": draw(st.sampled_from([0.0, 6.0, 6.0])),
            "efficiency": draw(st.sampled_from([0.9, 0.95, 1.0])),
            "rate_unit": draw(st.sampled_from(["A", "A", "W"])),
            "resolution_a": draw(st.sampled_from([0.1, 1.0])),
        }
        if single:
            spec["phase"] = draw(st.sampled_from(PHASE_NAMES))
        if draw(st.integers(0, 2)) == 0:
            spec.update(bidirectional=True, max_discharge_kw=draw(st.sampled_from([3.0, 7.0, 11.0])))
        chargers.append(spec)
    grid = {
        "import_limit_kw": draw(st.floats(5.0, 80.0)),
        "export_limit_kw": draw(st.sampled_from([0.0, 5.0, 20.0])),
    }
    cfg: dict[str, object] = {"name": "random", "grid": grid, "nodes": nodes, "chargers": chargers}
    if allow_battery and draw(st.booleans()):
        cfg["battery"] = {
            "capacity_kwh": draw(st.floats(5.0, 50.0)),
            "max_charge_kw": draw(st.floats(2.0, 20.0)),
            "max_discharge_kw": draw(st.floats(2.0, 20.0)),
        }
    if draw(st.booleans()):
        cfg["pv"] = {"peak_kw": 30.0, "curtailable": draw(st.integers(0, 4)) > 0}
    return SiteArrays.from_config(site_from_dict(cfg))


@st.composite
def states(draw: st.DrawFn, site: SiteArrays, batch: int | None = None) -> SiteState:
    """A random state of ``site`` (``(n,)``, or ``(batch, n)`` when ``batch`` is given)."""
    shape = (site.n,) if batch is None else (batch, site.n)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    present = rng.random(shape) < 0.85
    v2g = present & (rng.random(shape) < 0.7)
    need = np.where(present, rng.choice([0.0, 1.0, 5.0, 20.0, 60.0], shape), 0.0)
    site_shape = () if batch is None else (batch,)
    capacity = float(site.battery_capacity_kwh) if site.has_battery else 0.0
    soc = rng.uniform(0.05, 0.95, site_shape) * capacity

    def site_value(v: np.ndarray) -> np.ndarray | float:
        return float(v) if batch is None else v

    return SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(rng.random(shape) < 0.3, rng.choice([1.0, 3.7, 7.0], shape), np.inf),
        ev_max_discharge_kw=np.where(v2g, rng.choice([2.0, 5.0, 11.0], shape), 0.0),
        energy_needed_kwh=need,
        energy_room_kwh=np.where(present, need + rng.choice([0.0, 0.3, 10.0], shape), 0.0),
        energy_dischargeable_kwh=np.where(v2g, rng.choice([0.0, 0.5, 30.0], shape), 0.0),
        time_left_h=np.where(present, rng.choice([0.1, 0.5, 2.0, 8.0], shape), 0.0),
        base_load_kw=site_value(rng.choice([0.0, 5.0, 20.0, 40.0, 90.0], site_shape)),
        pv_kw=site_value(rng.choice([0.0, 0.0, 10.0, 40.0], site_shape)),
        battery_soc_kwh=site_value(soc),
        dt_h=float(draw(st.sampled_from([0.25, 1.0 / 12.0]))),
    )


@st.composite
def requests(draw: st.DrawFn, site: SiteArrays, batch: int | None = None) -> np.ndarray:
    """Requested kW per charger: charging, discharging and zeros, often beyond every limit."""
    shape = (site.n,) if batch is None else (batch, site.n)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kw = rng.uniform(-15.0, 30.0, shape)
    kw = np.where(rng.random(shape) < 0.15, 0.0, kw)
    return np.round(kw, draw(st.sampled_from([0, 3])))


@st.composite
def cases(
    draw: st.DrawFn, max_chargers: int = 6, batch: int | None = None, allow_battery: bool = True
) -> tuple[SiteArrays, SiteState, np.ndarray, np.ndarray | float]:
    site = draw(sites(max_chargers=max_chargers, allow_battery=allow_battery))
    state = draw(states(site, batch))
    req = draw(requests(site, batch))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    bat: np.ndarray | float
    if not site.has_battery:
        bat = 0.0 if batch is None else np.zeros(batch)
    else:
        bat = float(rng.uniform(-25, 25)) if batch is None else rng.uniform(-25, 25, batch)
    return site, state, req, bat


# ------------------------------------------------------------------------------------ reference QP


@dataclass(frozen=True)
class QPSolution:
    charger_kw: np.ndarray
    battery_kw: float
    distance_kw: float


def reference_qp(site: SiteArrays, state: SiteState, request_kw: np.ndarray, battery_kw: float) -> QPSolution:
    """The exact Euclidean projection of ``(request, battery)`` onto the continuous feasible set, built
    from the configuration (not from the projection's plan) and solved with SLSQP from several starts."""
    cfg = site.config
    n = site.n
    dt = state.dt_h
    lo = np.zeros(n)
    hi = np.zeros(n)
    for i, c in enumerate(cfg.chargers):
        if not state.ev_present[i]:
            continue
        rate = min(c.rated_power_kw, float(state.ev_max_charge_kw[i]))
        hi[i] = max(0.0, min(rate, float(state.energy_room_kwh[i]) / (c.efficiency * dt)))
        if c.bidirectional:
            reach = rate * c.efficiency * max(float(state.time_left_h[i]) - dt, 0.0)
            d = min(
                c.max_discharge_kw,
                float(state.ev_max_discharge_kw[i]),
                float(state.energy_dischargeable_kwh[i]) * c.efficiency / dt,
                (reach - float(state.energy_needed_kwh[i])) * c.efficiency / dt,
            )
            lo[i] = -max(d, 0.0)
    b_lo = b_hi = 0.0
    if cfg.battery is not None:
        bt = cfg.battery
        soc = float(state.battery_soc_kwh)
        b_hi = min(bt.max_charge_kw, max(bt.soc_max * bt.capacity_kwh - soc, 0.0) / (bt.efficiency * dt))
        b_lo = -min(bt.max_discharge_kw, max(soc - bt.soc_min * bt.capacity_kwh, 0.0) * bt.efficiency / dt)
    rows: list[tuple[np.ndarray, float, float]] = []
    for nd in cfg.nodes:
        below = np.array([nd.id in cfg.ancestors(c.node) for c in cfg.chargers], dtype=float)
        rows.append((np.append(below, 0.0), -nd.max_power_kw, nd.max_power_kw))
        if nd.max_current_a is not None:
            for ph in PHASE_NAMES:
                a = np.array(
                    [
                        below[i] * 1000.0 / (c.phases * c.voltage_v)
                        if c.phases == 3 or c.phase == ph
                        else 0.0
                        for i, c in enumerate(cfg.chargers)
                    ]
                )
                rows.append((np.append(a, 0.0), -nd.max_current_a, nd.max_current_a))
    base = float(state.base_load_kw)
    pv = float(state.pv_kw)
    curtailable = cfg.pv is None or cfg.pv.curtailable
    site_hi = cfg.grid.import_limit_kw - base + pv
    site_lo = -cfg.grid.export_limit_kw - base + (0.0 if curtailable else pv)
    rows.append((np.ones(n + 1), site_lo, site_hi))
    target = np.append(request_kw, battery_kw)
    bounds = [*zip(lo, hi, strict=True), (b_lo, b_hi)]
    cons = []
    for w, rl, rh in rows:
        cons.append({"type": "ineq", "fun": lambda v, w=w, rh=rh: rh - w @ v, "jac": lambda v, w=w: -w})
        cons.append({"type": "ineq", "fun": lambda v, w=w, rl=rl: w @ v - rl, "jac": lambda v, w=w: w})
    best: np.ndarray | None = None
    box_lo = np.array([b[0] for b in bounds])
    box_hi = np.array([b[1] for b in bounds])
    for start in (np.clip(target, box_lo, box_hi), 0.5 * (box_lo + box_hi), np.zeros(n + 1)):
        res = minimize(
            lambda v: float(np.sum((v - target) ** 2)),
            start,
            jac=lambda v: 2.0 * (v - target),
            bounds=bounds,
            constraints=cons,
            method="SLSQP",
            options={"ftol": 1e-12, "maxiter": 500},
        )
        v = np.clip(res.x, box_lo, box_hi)
        worst = max(max(w @ v - rh, rl - w @ v) for w, rl, rh in rows)
        if worst > 1e-5:
            continue
        if best is None or np.sum((v - target) ** 2) < np.sum((best - target) ** 2):
            best = v
    if best is None:
        raise RuntimeError("reference QP found no feasible point")
    return QPSolution(best[:n], float(best[n]), float(np.linalg.norm(best - target)))
