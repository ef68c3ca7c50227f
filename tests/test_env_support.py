"""Small hand-built and random scenarios for the environment tests (no tests here)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from envs.config import site_from_dict
from envs.scenario import Scenario, make_scenario

START = "2025-06-02T00:00:00+02:00"


def tiny_site(
    *,
    import_limit_kw: float = 20.0,
    export_limit_kw: float = 0.0,
    demand_charge_per_kw: float = 0.0,
    penalty_per_kwh: float = 1.0,
    battery: bool = False,
    billing_period: str = "month",
) -> dict[str, object]:
    """Two 11 kW three-phase chargers (W resolution, no minimum current), the second bidirectional (5 kW
    discharge); efficiency 0.9 and 1.0."""
    site: dict[str, object] = {
        "name": "tiny",
        "timezone": "Europe/Amsterdam",
        "grid": {"import_limit_kw": import_limit_kw, "export_limit_kw": export_limit_kw},
        "nodes": [{"id": "root", "max_power_kw": 100.0}],
        "chargers": [
            {
                "id": "c0",
                "node": "root",
                "max_power_kw": 11.0,
                "min_current_a": 0.0,
                "efficiency": 0.9,
                "rate_unit": "W",
            },
            {
                "id": "c1",
                "node": "root",
                "max_power_kw": 11.0,
                "min_current_a": 0.0,
                "efficiency": 1.0,
                "rate_unit": "W",
                "bidirectional": True,
                "max_discharge_kw": 5.0,
            },
        ],
        "tariff": {
            "demand_charge_per_kw": demand_charge_per_kw,
            "missing_energy_penalty_per_kwh": penalty_per_kwh,
            "ev_degradation_per_kwh": 0.05,
            "battery_degradation_per_kwh": 0.02,
            "billing_period": billing_period,
        },
    }
    if battery:
        site["battery"] = {
            "capacity_kwh": 20.0,
            "max_charge_kw": 8.0,
            "max_discharge_kw": 8.0,
            "soc_min": 0.1,
            "soc_max": 0.9,
            "initial_soc": 0.5,
            "efficiency": 1.0,
        }
    return site


def flat_timeseries(
    n_steps: int, *, base_kw: float = 2.0, pv_kw: float = 0.0, price: float = 0.2, export_price: float = 0.05
) -> pd.DataFrame:
    idx = pd.date_range(START, periods=n_steps, freq="15min")
    return pd.DataFrame(
        {
            "timestamp": idx,
            "base_load_kw": base_kw,
            "pv_kw": pv_kw,
            "import_price_per_kwh": price,
            "export_price_per_kwh": export_price,
        }
    )


def at(step: float) -> pd.Timestamp:
    """The time of step boundary ``step`` (15-minute steps from :data:`START`)."""
    return pd.Timestamp(START) + pd.Timedelta(minutes=15 * step)


def tiny_scenario(
    n_steps: int = 8, sessions: list[dict[str, object]] | None = None, **site_kw: object
) -> Scenario:
    """The tiny site with the given sessions (``arrival``/``departure`` as step numbers)."""
    rows = []
    for k, s in enumerate(sessions or []):
        row = dict(s)
        row.setdefault("session_id", f"s{k}")
        row["arrival"] = at(float(row["arrival"]))  # type: ignore[arg-type]
        row["departure"] = at(float(row["departure"]))  # type: ignore[arg-type]
        rows.append(row)
    cols = ["session_id", "charger_id", "arrival", "departure", "energy_kwh"]
    frame = pd.DataFrame(rows) if rows else pd.DataFrame(columns=cols)
    return make_scenario(site_from_dict(tiny_site(**site_kw)), frame, flat_timeseries(n_steps), "tiny")  # type: ignore[arg-type]


def random_scenario(
    seed: int,
    *,
    n_chargers: int = 6,
    days: int = 1,
    v2g: bool = False,
    single_phase: bool = False,
    battery: bool = False,
    pv: bool = True,
    demand_charge_per_kw: float = 5.0,
) -> Scenario:
    """A random but valid scenario: two groups under a transformer, sessions with random SoC knowledge."""
    rng = np.random.default_rng(seed)
    chargers = []
    for i in range(n_chargers):
        c: dict[str, object] = {
            "id": f"c{i:02d}",
            "node": f"g{i % 2}",
            "max_current_a": 16.0 + 16.0 * (i % 2),
        }
        if single_phase and i % 3 == 0:
            c.update({"phases": 1, "phase": ("L1", "L2", "L3")[i % 3], "max_current_a": 32.0})
        if v2g and i % 2 == 1:
            c.update({"bidirectional": True, "max_discharge_kw": 7.0})
        chargers.append(c)
    site: dict[str, object] = {
        "name": f"random{seed}",
        "grid": {"import_limit_kw": 8.0 * n_chargers, "export_limit_kw": 4.0 * n_chargers},
        "nodes": [
            {"id": "tr", "max_power_kw": 9.0 * n_chargers, "max_current_a": 14.0 * n_chargers},
            {"id": "g0", "parent": "tr", "max_power_kw": 6.0 * n_chargers},
            {"id": "g1", "parent": "tr", "max_power_kw": 6.0 * n_chargers},
        ],
        "chargers": chargers,
        "tariff": {"demand_charge_per_kw": demand_charge_per_kw},
    }
    if battery:
        site["battery"] = {"capacity_kwh": 50.0, "max_charge_kw": 20.0, "max_discharge_kw": 20.0}
    if pv:
        site["pv"] = {"peak_kw": 5.0 * n_chargers}
    n_steps = 96 * days
    idx = pd.date_range(START, periods=n_steps, freq="15min")
    hours = idx.hour + idx.minute / 60.0
    sun = np.clip(np.sin(np.pi * (np.asarray(hours) - 6) / 14), 0, None) if pv else np.zeros(n_steps)
    ts = pd.DataFrame(
        {
            "timestamp": idx,
            "base_load_kw": 2.0 * n_chargers * (0.5 + rng.random(n_steps)),
            "pv_kw": 5.0 * n_chargers * sun * rng.random(n_steps),
            "import_price_per_kwh": 0.1 + 0.3 * rng.random(n_steps),
            "export_price_per_kwh": 0.05 * rng.random(n_steps),
        }
    )
    rows = []
    k = 0
    for i in range(n_chargers):
        t = float(rng.uniform(0, 8))  # hours from the start
        while t < 24 * days - 0.2:
            stay = min(float(rng.uniform(0.1, 12)), 24 * days - t)
            battery_kwh = float(rng.uniform(40, 90))
            known = rng.random() < 0.6
            arr_soc = float(rng.uniform(0.05, 0.6))
            energy = float(rng.uniform(0, min((1 - arr_soc) * battery_kwh, 3 * 7.4 * stay)))
            rows.append(
                {
                    "session_id": f"s{k}",
                    "charger_id": f"c{i:02d}",
                    "arrival": pd.Timestamp(START) + pd.Timedelta(hours=t),
                    "departure": pd.Timestamp(START) + pd.Timedelta(hours=t + stay),
                    "energy_kwh": energy,
                    "battery_kwh": battery_kwh if known else np.nan,
                    "arrival_soc": arr_soc if known else np.nan,
                    "max_power_kw": float(rng.choice([np.nan, 7.4, 50.0])),
                    "v2g": bool(v2g and rng.random() < 0.7),
                }
            )
            k += 1
            t += stay + float(rng.uniform(0.0, 6))
    return make_scenario(site_from_dict(site), pd.DataFrame(rows), ts, f"random{seed}")
