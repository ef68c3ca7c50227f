"""The V2G serving benchmark's scenario (``python -m benchmarks.serving --v2g``): the site, the tariff and
the EVs, drawn from a seeded rng so that the EVs differ as a real site's do (what each asks, its state of
charge, when it leaves) and the same seed gives the same scenario."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from envs.config import site_from_dict
from envs.scenario import make_scenario, save_scenario

V2G_STEP_S = 10
V2G_CYCLE_PHASE_S = 1.0
"""cycles this long after each step starts: EVs arriving on the step are known to it (at 0.1 s none of 50)"""
V2G_LEAD_S = 100.0
"""s from the scenario's build to its start (+ 0.1 s a station): a simulated clock started later (all stations
booted: 75 s at 50) runs behind the service's (20 s lead: 52 s behind, every live decision 5 steps early)"""
V2G_ASK_SHARE = (0.15, 0.35)
"""each EV asks this share (uniform) of what its charger could give it in its stay"""
V2G_ARRIVAL_SOC = (0.3, 0.7)
"""each EV's state of charge on arrival (uniform)"""
V2G_DEPARTURE_SPREAD = 0.2
"""each EV leaves 0 to round(this share) of the run's steps before its end (uniform integer)"""
V2G_BATTERY_SHARE = 0.04
"""the site battery's power, a share of the chargers' installed power (``battery=True``), kW"""
V2G_BATTERY_HOURS = 0.5
"""the site battery's capacity, in hours at its power"""


def build_v2g_scenario(
    folder: Path, n: int, start: pd.Timestamp, minutes: float, seed: int | None = 0, battery: bool = False
) -> Path:
    """``n`` bidirectional chargers in groups of 20 on feeders (60 %), all EVs V2X and arriving at ``start``;
    from ``seed``, each EV leaves 0 to ``round(20 %)`` of the run's 10 s steps before ``start + minutes``
    (on a step), asks 15-35 % of what its charger could give it in its stay and
    arrives at a state of charge of 0.3-0.7 (uniform draws; ``seed=None``: identical EVs, as in Rounds
    1-11 of docs/serving.md: each asks a quarter, arrives at 0.5 and leaves at ``start + minutes``); the
    tariff is expensive (import 0.60, export 0.50) from 25 % to 60 % of the run, cheap (0.10 / 0.02)
    otherwise; the export limit is a quarter of the installed discharge power. ``battery``: a site battery
    of 4 % of the chargers' installed power, half an hour of it, at half charge (the live run serves it
    over Modbus)."""
    groups = max(1, (n + 19) // 20)
    charger_kw = 11.04
    nodes: list[dict[str, Any]] = [{"id": "transformer", "max_power_kw": 0.5 * n * charger_kw + 50}]
    for g in range(groups):
        nodes.append({"id": f"g{g:03d}", "parent": "transformer", "max_power_kw": 20 * charger_kw * 0.6})
    chargers = [
        {
            "id": f"S{i + 1:04d}-1", "node": f"g{i // 20:03d}", "max_current_a": 16.0, "rate_unit": "A",
            "bidirectional": True, "max_discharge_kw": 11.0,
        }
        for i in range(n)
    ]  # fmt: skip
    grid = {
        "import_limit_kw": round(0.45 * n * charger_kw + 20, 1),
        "export_limit_kw": round(0.25 * n * 11.0, 1),
    }
    doc: dict[str, Any] = {"name": f"bench-v2g-{n}", "grid": grid, "nodes": nodes, "chargers": chargers}
    if battery:
        kw = round(V2G_BATTERY_SHARE * n * charger_kw, 1)
        doc["battery"] = {
            "capacity_kwh": round(kw * V2G_BATTERY_HOURS, 1), "max_charge_kw": kw, "max_discharge_kw": kw,
        }  # fmt: skip
    site = site_from_dict(doc)
    steps = int(minutes * 60 / V2G_STEP_S)
    idx = pd.date_range(start, periods=steps + 12, freq=f"{V2G_STEP_S}s")
    frac = (idx - start) / pd.Timedelta(minutes=minutes)
    expensive = (frac >= 0.25) & (frac < 0.6)
    ts = pd.DataFrame(
        {
            "timestamp": idx, "base_load_kw": 20.0, "pv_kw": 0.0,
            "import_price_per_kwh": np.where(expensive, 0.60, 0.10),
            "export_price_per_kwh": np.where(expensive, 0.50, 0.02),
        }
    )  # fmt: skip
    if seed is None:
        stay_steps, share, soc = np.full(n, steps), np.full(n, 0.25), np.full(n, 0.5)
    else:
        rng = np.random.default_rng(seed)
        early = round(V2G_DEPARTURE_SPREAD * steps)
        stay_steps = steps - rng.integers(0, early + 1, size=n)  # on the step grid
        share = rng.uniform(*V2G_ASK_SHARE, size=n)
        soc = rng.uniform(*V2G_ARRIVAL_SOC, size=n)
    stay_h = stay_steps * V2G_STEP_S / 3600.0
    sessions = pd.DataFrame(
        {
            "session_id": [f"v{i}" for i in range(n)],
            "charger_id": [c["id"] for c in chargers],
            "arrival": [start] * n,
            "departure": [start + pd.Timedelta(seconds=int(s) * V2G_STEP_S) for s in stay_steps],
            "energy_kwh": np.round(share * charger_kw * 0.95 * stay_h, 3),
            "battery_kwh": 60.0,
            "arrival_soc": np.round(soc, 3),
            "v2g": True,
        }
    )
    return save_scenario(make_scenario(site, sessions, ts, "bench-v2g"), folder)


def sim_clock_behind_s(trace_csv: Path) -> float:
    """How far the simulated clock ran behind the wall clock, s (the trace's first tick; 0 is needed)."""
    first = pd.read_csv(trace_csv, nrows=1).iloc[0]
    return float((pd.Timestamp(first["wall_utc"]) - pd.Timestamp(first["sim_time"])).total_seconds())


def live_step_kw(trace_csv: Path, start: pd.Timestamp, steps: int) -> tuple[list[float], list[float]]:
    """Per scenario step from ``start`` (``V2G_STEP_S``, simulated time): the simulated site's mean charging
    and discharging power over the step's ticks (the ``--trace-csv``), kW, rounded to 0.1 (NaN: no tick)."""
    trace = pd.read_csv(trace_csv)
    at = pd.to_datetime(trace["sim_time"], format="ISO8601", utc=True)
    step = ((at - start).dt.total_seconds() // V2G_STEP_S).astype(int)
    mean = trace.groupby(step)[["charging_kw", "discharging_kw"]].mean().reindex(range(steps))
    return rounded_kw(mean["charging_kw"]), rounded_kw(mean["discharging_kw"])


def rounded_kw(kw: pd.Series | np.ndarray) -> list[float]:
    """A per-step series as the benchmark's JSON gives it: kW rounded to 0.1."""
    return [round(float(x), 1) for x in kw]
