"""Time the safety projection: ``python -m benchmarks.projection [--json] [--repeat N]``.

Sites of 10, 100 and 1,000 chargers on a three-level tree (transformer -> feeders -> groups of about six
chargers) with three phases: a quarter of the chargers are single-phase (spread over L1..L3), every group
and feeder has a per-phase current limit, a fifth of the chargers are bidirectional, and the site has PV, a
stationary battery and an export limit. Requests are a realistic mix that violates limits: most EVs ask
for their full rate, some for less, V2G sessions sometimes discharge, so groups, feeders, phases and the
site import limit all bind. Prints the time per :func:`~envs.projection.project` call (one state) and the
batched throughput (B = 64 states per call); targets: <= 100 us at 100 chargers, <= 2 ms at 1,000.

Times are process CPU time, the best of ``CHUNKS`` equal chunks of the calls (other load on a shared
machine inflates a mean far more than the best chunk).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from envs.config import site_from_dict
from envs.core import SiteArrays, SiteState
from envs.projection import ProjectionPlan, charger_bounds, project

SIZES = (10, 100, 1000)
BATCH = 64
CHUNKS = 5


def benchmark_site(n_chargers: int, rng: np.random.Generator) -> SiteArrays:
    """A three-level site with ``n_chargers`` chargers (see the module docstring)."""
    n_groups = max(1, math.ceil(n_chargers / 6))
    n_feeders = max(1, math.ceil(n_groups / 4))
    chargers = []
    group_kw = np.zeros(n_groups)
    for i in range(n_chargers):
        g = i % n_groups
        single = rng.random() < 0.25
        bidir = rng.random() < 0.2
        spec: dict[str, object] = {"id": f"c{i}", "node": f"g{g}"}
        if single:
            spec.update(phases=1, phase=("L1", "L2", "L3")[i % 3], max_current_a=32.0)
            group_kw[g] += 32 * 0.23
        else:
            amps = 16.0 if rng.random() < 0.6 else 32.0
            spec.update(phases=3, max_current_a=amps)
            group_kw[g] += amps * 0.69
        if bidir:
            spec.update(bidirectional=True, max_discharge_kw=11.0)
        chargers.append(spec)
    nodes: list[dict[str, object]] = [{"id": "tr", "max_power_kw": 0.55 * float(group_kw.sum())}]
    feeder_kw = np.zeros(n_feeders)
    for g in range(n_groups):
        feeder_kw[g % n_feeders] += group_kw[g]
    for f in range(n_feeders):
        lim = 0.7 * float(feeder_kw[f])
        nodes.append({"id": f"f{f}", "parent": "tr", "max_power_kw": lim, "max_current_a": lim / 0.69 * 0.9})
    for g in range(n_groups):
        lim = 0.75 * float(group_kw[g])
        nodes.append(
            {
                "id": f"g{g}",
                "parent": f"f{g % n_feeders}",
                "max_power_kw": lim,
                "max_current_a": max(lim / 0.69 * 0.8, 40.0),
            }
        )
    total = 0.55 * float(group_kw.sum())
    cfg = site_from_dict(
        {
            "name": f"bench-{n_chargers}",
            "grid": {"import_limit_kw": 0.9 * total, "export_limit_kw": 0.1 * total},
            "nodes": nodes,
            "chargers": chargers,
            "battery": {
                "capacity_kwh": 0.5 * total,
                "max_charge_kw": 0.2 * total,
                "max_discharge_kw": 0.2 * total,
            },
            "pv": {"peak_kw": 0.3 * total},
        }
    )
    return SiteArrays.from_config(cfg)


def benchmark_cases(
    site: SiteArrays, rng: np.random.Generator, batch: int
) -> tuple[SiteState, np.ndarray, np.ndarray]:
    """``batch`` random states of ``site`` with requests that violate its limits."""
    n = site.n
    shape = (batch, n)
    present = rng.random(shape) < 0.8
    v2g = present & site.bidirectional & (rng.random(shape) < 0.7)
    need = rng.uniform(2.0, 60.0, shape)
    total = site.import_limit_kw / 0.9
    state = SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(rng.random(shape) < 0.3, rng.uniform(3.7, 11.0, shape), np.inf),
        ev_max_discharge_kw=np.where(v2g, 10.0, 0.0),
        energy_needed_kwh=np.where(present, need, 0.0),
        energy_room_kwh=np.where(present, need + rng.uniform(0.0, 20.0, shape), 0.0),
        energy_dischargeable_kwh=np.where(v2g, rng.uniform(0.0, 40.0, shape), 0.0),
        time_left_h=np.where(present, rng.uniform(0.5, 12.0, shape), 0.0),
        base_load_kw=rng.uniform(0.05, 0.4, batch) * total,
        pv_kw=rng.uniform(0.0, 0.3, batch) * total,
        battery_soc_kwh=rng.uniform(0.1, 0.9, batch) * 0.5 * total,
    )
    lo, hi = charger_bounds(site, state)
    kind = rng.random(shape)
    request = np.where(kind < 0.6, hi, rng.uniform(0.0, 1.0, shape) * hi)
    request = np.where((kind > 0.9) & (lo < 0), lo * rng.uniform(0.2, 1.0, shape), request)
    battery = rng.uniform(-0.2, 0.2, batch) * total
    return state, request, battery


def _row(state: SiteState, b: int) -> SiteState:
    def pick(v: object) -> object:
        a = np.asarray(v)
        return a[b] if a.ndim else v

    return SiteState(
        ev_present=state.ev_present[b],
        ev_max_charge_kw=state.ev_max_charge_kw[b],
        ev_max_discharge_kw=state.ev_max_discharge_kw[b],
        energy_needed_kwh=state.energy_needed_kwh[b],
        energy_room_kwh=state.energy_room_kwh[b],
        energy_dischargeable_kwh=state.energy_dischargeable_kwh[b],
        time_left_h=state.time_left_h[b],
        base_load_kw=float(pick(state.base_load_kw)),  # type: ignore[arg-type]
        pv_kw=float(pick(state.pv_kw)),  # type: ignore[arg-type]
        battery_soc_kwh=float(pick(state.battery_soc_kwh)),  # type: ignore[arg-type]
        dt_h=state.dt_h,
    )


def run(repeat: int = 200, seed: int = 0) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(seed)
    out: dict[str, dict[str, float]] = {}
    for n in SIZES:
        site = benchmark_site(n, rng)
        plan = ProjectionPlan.from_site(site)
        state, request, battery = benchmark_cases(site, rng, BATCH)
        singles = [(_row(state, b), request[b], float(battery[b])) for b in range(BATCH)]
        moved = [float(project(site, s, r, bk, plan=plan).moved_kw) for s, r, bk in singles]
        reps = max(1, repeat // (10 if n >= 1000 else 1) // CHUNKS)
        per_call = math.inf
        for c in range(CHUNKS):
            t0 = time.process_time()
            for k in range(c * reps, (c + 1) * reps):
                s, r, bk = singles[k % BATCH]
                project(site, s, r, bk, plan=plan)
            per_call = min(per_call, (time.process_time() - t0) / reps)
        breps = max(1, reps // 16)
        per_batch = math.inf
        for _ in range(CHUNKS):
            t0 = time.process_time()
            for _ in range(breps):
                project(site, state, request, battery, plan=plan)
            per_batch = min(per_batch, (time.process_time() - t0) / breps)
        out[str(n)] = {
            "chargers": float(n),
            "rows": float(plan.n_rows),
            "us_per_call": per_call * 1e6,
            "batch_us_per_call": per_batch * 1e6,
            "batch_states_per_s": BATCH / per_batch,
            "mean_moved_kw": float(np.mean(moved)),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--repeat", type=int, default=400, help="calls timed per size (1/10 at 1,000)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    res = run(args.repeat, args.seed)
    if args.json:
        print(json.dumps({"benchmark": "projection", "batch": BATCH, "results": res}))
        return
    print(
        f"{'chargers':>9} {'rows':>5} {'us/call':>10} {'B=64 us/call':>13} {'states/s':>10} {'moved kW':>9}"
    )
    for r in res.values():
        print(
            f"{int(r['chargers']):>9} {int(r['rows']):>5} {r['us_per_call']:>10.1f} "
            f"{r['batch_us_per_call']:>13.1f} {r['batch_states_per_s']:>10.0f} {r['mean_moved_kw']:>9.1f}"
        )


if __name__ == "__main__":
    main()
