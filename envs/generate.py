"""Generated scenarios: a plausible site, EV sessions and time series of a given kind.

Four kinds, each with its own charger mix and arrival / dwell / energy distributions:

- ``depot``: a fleet of vans, one per charger, back in the evening (about 17:30) on working days and
  out again the next working morning (about 06:30); predictable energy from a daily mileage.
- ``workplace``: commuters on weekdays, arriving in the morning (about 08:30) and staying the working
  day, so charging overlaps with PV; a few afternoon visitors and weekend visits.
- ``residential``: residents every day, arriving in the evening (about 18:30) and leaving the next
  morning (later at weekends); mostly single-phase chargers spread over the three phases.
- ``public``: short stays at high power (DC 50 and 150 kW and 22 kW AC) from 07:00 to 23:00, with
  lunch and evening peaks.

The time series holds a building load with a weekday/weekend shape, PV from a pvlib clear-sky model times
a random cloud factor per day with intra-day noise, a time-of-use import price (cheap at night, dear in
the evening peak) and a lower flat export price. The site's limit tree (transformer -> feeders -> groups)
and import limit are sized from the sessions: below what uncontrolled charging would draw, so that load
management matters, but above what charging each EV at a constant power over its stay needs (plus 5 %),
so that every session's energy can be delivered. Every session asks at most 95 % of what its charger
(and EV) can deliver during its stay, and a charger holds one EV at a time.

All randomness comes from one ``numpy.random.Generator`` seeded with ``seed``: the same arguments give
the same scenario and, through :func:`~envs.scenario.save_scenario`, the same bytes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from envs.config import (
    PHASES,
    Charger,
    GridConnection,
    LimitNode,
    PVSystem,
    SiteConfig,
    StationaryBattery,
    Tariff,
)
from envs.core import SiteArrays
from envs.generate_timeseries import KINDS, Kind, _timeseries, generate_timeseries
from envs.scenario import (
    SESSION_OPTIONAL,
    SESSION_REQUIRED,
    Scenario,
    charger_load_kw,
    make_scenario,
)

__all__ = ["KINDS", "Kind", "generate_scenario", "generate_timeseries"]

_NS_PER_H = 3_600_000_000_000
_DEFAULT_DEMAND_CHARGE_PER_KW: dict[str, float] = {
    "depot": 9.0,
    "workplace": 7.0,
    "residential": 3.0,
    "public": 9.0,
}
_BASE_KW_PER_CHARGER = {"depot": 1.5, "workplace": 3.0, "residential": 1.2, "public": 1.0}
_BASE_KW_FIXED = {"depot": 10.0, "workplace": 20.0, "residential": 5.0, "public": 15.0}
_PV_KWP_PER_CHARGER = {"depot": 4.0, "workplace": 6.0, "residential": 2.0, "public": 3.0}
_CHARGERS_PER_GROUP = 6
_CHARGERS_PER_FEEDER = 12


@dataclass(frozen=True)
class _Sessions:
    """Sessions as parallel arrays (times in ns since the epoch, UTC)."""

    charger: np.ndarray
    arrival_ns: np.ndarray
    departure_ns: np.ndarray
    energy_kwh: np.ndarray
    ev_max_kw: np.ndarray
    battery_kwh: np.ndarray
    arrival_soc: np.ndarray
    departure_soc: np.ndarray
    v2g: np.ndarray
    priority: np.ndarray


# --------------------------------------------------------------------------- chargers and tree


def _chargers(kind: Kind, n: int, v2g: bool) -> list[Charger]:
    """The charger mix of ``kind``; single-phase chargers take the phases in turn."""
    width = max(2, len(str(n)))
    out: list[Charger] = []
    single = 0
    for i in range(n):
        cid = f"c{i + 1:0{width}d}"
        if kind == "depot":
            spec = ("1ph", 32.0) if i % 5 == 4 else ("3ph", 32.0)
        elif kind == "workplace":
            spec = ("1ph", 32.0) if i % 4 == 3 else ("3ph", 16.0)
        elif kind == "residential":
            spec = ("3ph", 16.0) if i % 4 == 3 else ("1ph", 32.0)
        else:
            spec = ("dc", 150.0) if i % 6 == 3 else ("dc", 50.0) if i % 3 == 0 else ("3ph", 32.0)
        if spec[0] == "1ph":
            out.append(Charger(id=cid, node="?", phases=1, phase=PHASES[single % 3], max_current_a=spec[1]))
            single += 1
        elif spec[0] == "3ph":
            bidi = v2g and kind != "public"
            out.append(
                Charger(
                    id=cid,
                    node="?",
                    phases=3,
                    max_current_a=spec[1],
                    bidirectional=bidi,
                    max_discharge_kw=min(11.0, spec[1] * 0.69) if bidi else 0.0,
                )
            )
        else:
            out.append(
                Charger(id=cid, node="?", phases=3, max_power_kw=spec[1], rate_unit="W", efficiency=0.93)
            )
    return out


def _tree(chargers: list[Charger]) -> tuple[list[tuple[str, str | None]], list[Charger]]:
    """Nodes (id, parent) transformer -> feeders -> groups, and the chargers hung on the groups."""
    n = len(chargers)
    n_feeders = max(1, math.ceil(n / _CHARGERS_PER_FEEDER))
    nodes: list[tuple[str, str | None]] = [("transformer", None)]
    placed: list[Charger] = []
    bounds = np.linspace(0, n, n_feeders + 1).round().astype(int)
    for f in range(n_feeders):
        fid = f"feeder{f + 1}"
        nodes.append((fid, "transformer"))
        members = chargers[bounds[f] : bounds[f + 1]]
        n_groups = max(1, math.ceil(len(members) / _CHARGERS_PER_GROUP))
        gb = np.linspace(0, len(members), n_groups + 1).round().astype(int)
        for g in range(n_groups):
            gid = f"{fid}-g{g + 1}"
            nodes.append((gid, fid))
            placed.extend(c.model_copy(update={"node": gid}) for c in members[gb[g] : gb[g + 1]])
    return nodes, placed


# --------------------------------------------------------------------------- sessions


def _local_midnights(start: pd.Timestamp, days: int, timezone: str) -> np.ndarray:
    """UTC ns of local midnight for day -1 .. days + 8 (DST-aware); day ``d`` is entry ``d + 1``."""
    first = start.tz_convert(timezone).normalize() - pd.Timedelta(days=1)
    local = pd.date_range(first.tz_localize(None), periods=days + 10, freq="D").tz_localize(timezone)
    return np.asarray(local.tz_convert("UTC").as_unit("ns").asi8)


def _sessions(
    kind: Kind,
    rng: np.random.Generator,
    chargers: list[Charger],
    midnights_ns: np.ndarray,
    weekdays: np.ndarray,
    start_ns: int,
) -> _Sessions:
    """Draw sessions for each charger and day; ``weekdays[d]`` is 0=Monday for day index d (0 = start).

    Overnight kinds (depot, residential) also draw the evening before the start: those EVs are already
    plugged in when the scenario starts (their arrival is the start).
    """
    n = len(chargers)
    n_days = len(weekdays)
    rated = np.array([c.rated_power_kw for c in chargers])
    eff = np.array([c.efficiency for c in chargers])
    bidi = np.array([c.bidirectional for c in chargers])
    rows: list[tuple[int, float, float, float, float, float, float, int]] = []
    # (charger, arrival h since day-0 midnight, departure h, energy asked, ev max kW, battery kWh,
    #  target departure soc, priority); arrival/departure in local clock hours from midnight of day 0.

    def day_of_week(day: int) -> int:
        return int(weekdays[0] + day) % 7

    def hours(day: int, clock_h: float) -> float:
        return float((midnights_ns[day + 1] - midnights_ns[1]) / _NS_PER_H + clock_h)

    if kind == "depot":
        ev_max = rng.choice([11.0, 22.0], size=n, p=[0.65, 0.35])
        battery = rng.choice([75.0, 90.0], size=n, p=[0.7, 0.3])
        prio = (rng.random(n) < 0.2).astype(int)
        daily_km = np.clip(rng.normal(110.0, 20.0, size=n), 40.0, 220.0)  # each van's usual round
        for d in range(-1, n_days):
            if day_of_week(d) >= 5:
                continue
            nxt = d + 1 if day_of_week(d) < 4 else d + 3  # Friday evening -> Monday morning
            arr = np.clip(rng.normal(17.5, 0.5, size=n), 15.5, 20.0)
            dep = np.clip(rng.normal(6.5, 0.33, size=n), 5.0, 8.0)
            km = np.clip(daily_km * rng.normal(1.0, 0.1, size=n), 20.0, 260.0)
            target = rng.uniform(0.85, 1.0, size=n)
            for i in range(n):
                rows.append(
                    (
                        i,
                        hours(d, arr[i]),
                        hours(nxt, dep[i]),
                        km[i] * 0.22,
                        ev_max[i],
                        battery[i],
                        target[i],
                        prio[i],
                    )
                )
    elif kind == "workplace":
        for d in range(n_days):
            weekend = day_of_week(d) >= 5
            use = rng.random(n) < (0.08 if weekend else 0.88)
            arr = np.clip(rng.normal(11.0, 2.0, n) if weekend else rng.normal(8.5, 0.9, n), 6.0, 15.0)
            dwell = np.clip(rng.normal(4.0, 1.5, n) if weekend else rng.normal(8.3, 1.3, n), 1.0, 11.0)
            energy = np.clip(rng.lognormal(math.log(10.0), 0.5, n), 2.0, 45.0)
            ev_max = rng.choice([7.4, 11.0, 22.0], size=n, p=[0.25, 0.6, 0.15])
            battery = rng.choice([40.0, 60.0, 77.0, 82.0], size=n)
            target = rng.uniform(0.8, 1.0, size=n)
            second = rng.random(n) < 0.5
            gap = rng.uniform(0.25, 1.5, n)
            dwell2 = rng.uniform(2.0, 4.0, n)
            energy2 = np.clip(rng.lognormal(math.log(8.0), 0.5, n), 2.0, 30.0)
            for i in range(n):
                if not use[i]:
                    continue
                a = hours(d, arr[i])
                rows.append((i, a, a + dwell[i], energy[i], ev_max[i], battery[i], target[i], 0))
                if not weekend and second[i] and arr[i] + dwell[i] < 14.0:
                    a2 = a + dwell[i] + gap[i]
                    rows.append((i, a2, a2 + dwell2[i], energy2[i], ev_max[i], battery[i], target[i], 0))
    elif kind == "residential":
        for d in range(-1, n_days):
            weekend_next = (day_of_week(d) + 1) % 7 >= 5
            use = rng.random(n) < (0.55 if day_of_week(d) >= 5 else 0.75)
            arr = np.clip(rng.normal(18.3, 1.5, n), 15.0, 23.5)
            dep = (
                np.clip(rng.normal(10.0, 2.0, n), 7.0, 14.0)
                if weekend_next
                else np.clip(rng.normal(7.5, 0.8, n), 5.5, 10.0)
            )
            energy = np.clip(rng.lognormal(math.log(11.0), 0.55, n), 2.0, 60.0)
            ev_max = rng.choice([3.7, 7.4, 11.0], size=n, p=[0.15, 0.55, 0.3])
            battery = rng.choice([40.0, 58.0, 64.0, 77.0], size=n)
            target = rng.uniform(0.8, 1.0, size=n)
            for i in range(n):
                if use[i]:
                    rows.append(
                        (
                            i,
                            hours(d, arr[i]),
                            hours(d + 1, dep[i]),
                            energy[i],
                            ev_max[i],
                            battery[i],
                            target[i],
                            0,
                        )
                    )
    else:  # public: a Poisson stream per charger between 07:00 and 23:00, peaks at lunch and evening
        knots_h = np.array([7.0, 10.0, 12.0, 14.0, 16.0, 17.5, 19.5, 21.0, 23.0])
        rate = np.array([0.25, 0.35, 0.55, 0.45, 0.35, 0.55, 0.55, 0.3, 0.2])  # arrivals per hour
        rate_max = float(rate.max())
        dc = rated > 25.0
        for i in range(n):
            free_h = hours(0, 0.0)
            for d in range(n_days):
                t = 7.0
                while True:
                    t += rng.exponential(1.0 / rate_max)
                    if t >= 23.0:
                        break
                    if rng.random() > np.interp(t, knots_h, rate) / rate_max:
                        continue  # thinning
                    a = hours(d, t)
                    if a < free_h:
                        continue  # the charger is still busy: this driver goes elsewhere
                    if dc[i]:
                        stay_h = float(np.clip(rng.lognormal(math.log(0.55), 0.4), 0.15, 1.5))
                        ev = float(rng.choice([50.0, 100.0, 150.0, 250.0], p=[0.2, 0.35, 0.3, 0.15]))
                    else:
                        stay_h = float(np.clip(rng.lognormal(math.log(1.5), 0.5), 0.3, 4.0))
                        ev = float(rng.choice([11.0, 22.0], p=[0.7, 0.3]))
                    bat = float(rng.choice([50.0, 60.0, 77.0, 100.0]))
                    share = float(rng.uniform(0.3, 0.7))
                    asked_kwh = share * min(rated[i], ev) * eff[i] * stay_h
                    rows.append((i, a, a + stay_h, asked_kwh, ev, bat, float(rng.uniform(0.7, 0.9)), 0))
                    free_h = a + stay_h + 5.0 / 60.0
                    t = free_h - hours(d, 0.0)

    arr_rows = np.array(rows, dtype=float).reshape(-1, 8)
    charger = arr_rows[:, 0].astype(int)
    t0 = midnights_ns[1]
    arrival_ns = np.maximum(t0 + np.round(arr_rows[:, 1] * 60.0).astype(np.int64) * 60_000_000_000, start_ns)
    departure_ns = t0 + np.round(arr_rows[:, 2] * 60.0).astype(np.int64) * 60_000_000_000
    ev_max_kw = arr_rows[:, 4]
    battery_kwh = arr_rows[:, 5]
    target_soc = arr_rows[:, 6]
    dwell_h = (departure_ns - arrival_ns) / _NS_PER_H
    deliverable = 0.95 * np.minimum(rated[charger], ev_max_kw) * eff[charger] * np.maximum(dwell_h, 0.0)
    room = (target_soc - 0.05) * battery_kwh
    energy = np.floor(np.minimum(arr_rows[:, 3], np.minimum(deliverable, room)) * 1000.0) / 1000.0
    # arrival SoC rounded down and departure SoC up, so the room the battery has always holds the request
    arrival_soc = np.maximum(np.floor((target_soc - energy / battery_kwh) * 1e4) / 1e4, 0.0)
    departure_soc = np.minimum(np.ceil((arrival_soc + energy / battery_kwh) * 1e4) / 1e4, 1.0)
    v2g_share = {"depot": 0.8, "workplace": 0.6, "residential": 0.6, "public": 0.0}[kind]
    v2g = bidi[charger] & (rng.random(len(rows)) < v2g_share)
    return _Sessions(
        charger=charger,
        arrival_ns=arrival_ns,
        departure_ns=departure_ns,
        energy_kwh=energy,
        ev_max_kw=ev_max_kw,
        battery_kwh=battery_kwh,
        arrival_soc=arrival_soc,
        departure_soc=departure_soc,
        v2g=v2g,
        priority=arr_rows[:, 7].astype(int),
    )


def _one_per_charger(s: _Sessions, start_ns: int, end_ns: int) -> np.ndarray:
    """Mask of sessions kept: inside the window, at least 15 min, not overlapping the previous one."""
    keep = (s.arrival_ns >= start_ns) & (s.departure_ns <= end_ns)
    keep &= (s.departure_ns - s.arrival_ns) >= 15 * 60_000_000_000
    order = np.lexsort((s.arrival_ns, s.charger))
    last_dep: dict[int, int] = {}
    for k in order:
        if not keep[k]:
            continue
        c = int(s.charger[k])
        if s.arrival_ns[k] < last_dep.get(c, -(2**62)) + 5 * 60_000_000_000:
            keep[k] = False
            continue
        last_dep[c] = int(s.departure_ns[k])
    return keep


# --------------------------------------------------------------------------- limits


def _ceil_to(value: float, unit: float) -> float:
    return float(math.ceil(value / unit - 1e-9) * unit)


def _size_limits(
    draft: Scenario, share_node: float = 0.5, share_site: float = 0.3
) -> tuple[dict[str, tuple[float, float]], float]:
    """Node (kW, A) limits and the import limit, between the spread and the uncontrolled peaks.

    Every node gets ``max(1.05 * spread, spread + share * (uncontrolled - spread), largest charger)``,
    capped at the sum of its chargers' ratings; its per-phase current limit is the balanced equivalent
    of that kW limit, raised where needed to 1.05 times the spread profile's worst phase and to the largest
    charger's current. The import limit is the same rule over the net import base load + EVs - PV.
    """
    arrays = SiteArrays.from_config(draft.site)
    uncontrolled = charger_load_kw(draft, "uncontrolled")  # (n, K)
    spread = charger_load_kw(draft, "spread")
    node_unc = (arrays.membership.T @ uncontrolled).max(axis=1)  # (m,)
    node_spread = (arrays.membership.T @ spread).max(axis=1)
    phase_spread = np.einsum("nk,np,nm->mpk", spread, arrays.phase_a_per_kw, arrays.membership).max(
        axis=(1, 2)
    )
    limits: dict[str, tuple[float, float]] = {}
    for j, nid in enumerate(arrays.node_ids):
        under = arrays.membership[:, j] > 0
        largest_kw = float(arrays.rated_kw[under].max())
        largest_a = float((arrays.rated_kw[under] / arrays.kw_per_a[under]).max())
        kw = max(
            1.05 * node_spread[j], node_spread[j] + share_node * (node_unc[j] - node_spread[j]), largest_kw
        )
        kw = _ceil_to(min(kw, float(arrays.rated_kw[under].sum())), 1.0)
        amps = max(kw * 1000.0 / (3.0 * 230.0), 1.05 * phase_spread[j], largest_a)
        limits[nid] = (kw, _ceil_to(amps, 1.0))
    base = (draft.timeseries["base_load_kw"] - draft.timeseries["pv_kw"]).to_numpy(float)
    site_spread = float((base + spread.sum(axis=0)).max())
    site_unc = float((base + uncontrolled.sum(axis=0)).max())
    import_kw = _ceil_to(max(1.05 * site_spread, site_spread + share_site * (site_unc - site_spread)), 5.0)
    return limits, import_kw


# --------------------------------------------------------------------------- entry point


def generate_scenario(
    kind: Kind = "depot",
    chargers: int = 20,
    days: int = 7,
    seed: int = 0,
    step: str = "15min",
    start: str = "2025-06-02T00:00:00+02:00",
    v2g: bool = False,
    pv: bool = True,
    battery: bool = False,
    demand_charge_per_kw: float | None = None,
    timezone: str = "Europe/Amsterdam",
    latitude: float = 52.1,
    longitude: float = 5.1,
) -> Scenario:
    """A plausible scenario of ``kind``; the same arguments give the same scenario (and bytes).

    Args:
        kind: ``depot``, ``workplace``, ``residential`` or ``public`` (see the module docstring).
        chargers: number of chargers (>= 1).
        days: length in days (>= 1), from ``start``.
        seed: seeds the one ``numpy.random.Generator`` everything is drawn from.
        step: time-series resolution (a pandas offset such as ``"15min"``).
        start: first instant, ISO 8601 with offset.
        v2g: make the three-phase AC chargers bidirectional (11 kW discharge) and let most sessions on
            them allow V2G.
        pv: install PV (kWp scaled to the site) and fill ``pv_kw``; without it ``pv_kw`` is 0.
        battery: add a stationary battery (2 h at a quarter of the import limit).
        demand_charge_per_kw: per kW of the monthly peak import; default by kind (residential 3, else 7-9).
        timezone: the site's IANA time zone; local clock times drive the profiles.
        latitude, longitude: the site's location in degrees, for the PV model.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
    if chargers < 1:
        raise ValueError(f"chargers must be at least 1, got {chargers}")
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    step_td = pd.Timedelta(step)
    if step_td <= pd.Timedelta(0) or step_td > pd.Timedelta(hours=1):
        raise ValueError(f"step must lie in (0, 1h], got {step!r}")
    t0 = pd.Timestamp(start)
    if t0.tzinfo is None:
        raise ValueError(f"start must carry a UTC offset, got {start!r}")
    rng = np.random.default_rng(seed)
    step_h = step_td.total_seconds() / 3600.0
    n_steps = int(days * 86400 // step_td.total_seconds())
    index = pd.date_range(t0.tz_convert("UTC"), periods=n_steps, freq=step_td).as_unit("ns")

    nodes, placed = _tree(_chargers(kind, chargers, v2g))
    pv_kwp = _ceil_to(_PV_KWP_PER_CHARGER[kind] * chargers, 1.0) if pv else 0.0

    midnights = _local_midnights(t0, days, timezone)
    weekdays = np.asarray(pd.to_datetime(midnights[1 : days + 1], utc=True).tz_convert(timezone).day_of_week)
    drawn = _sessions(kind, rng, placed, midnights, weekdays, int(index[0].value))
    end_ns = int(index[-1].value) + int(step_td.value)
    keep = _one_per_charger(drawn, int(index[0].value), end_ns)
    order = np.lexsort((drawn.charger[keep], drawn.arrival_ns[keep]))

    def pick(a: np.ndarray) -> np.ndarray:
        return a[keep][order]

    charger_ids = np.array([c.id for c in placed])
    n_sessions = int(keep.sum())
    width = max(4, len(str(n_sessions)))
    sessions = pd.DataFrame(
        {
            "session_id": [f"s{k + 1:0{width}d}" for k in range(n_sessions)],
            "charger_id": charger_ids[pick(drawn.charger)],
            "arrival": pd.to_datetime(pick(drawn.arrival_ns), utc=True),
            "departure": pd.to_datetime(pick(drawn.departure_ns), utc=True),
            "energy_kwh": pick(drawn.energy_kwh),
            "max_power_kw": pick(drawn.ev_max_kw),
            "battery_kwh": pick(drawn.battery_kwh),
            "arrival_soc": pick(drawn.arrival_soc),
            "departure_soc": pick(drawn.departure_soc),
            "v2g": pick(drawn.v2g),
            "priority": pick(drawn.priority),
        },
        columns=list(SESSION_REQUIRED + SESSION_OPTIONAL),
    )
    base_peak_kw = _BASE_KW_FIXED[kind] + _BASE_KW_PER_CHARGER[kind] * chargers
    ts = _timeseries(kind, rng, index, timezone, step_h, base_peak_kw, pv_kwp, latitude, longitude)

    tariff = Tariff(
        demand_charge_per_kw=_DEFAULT_DEMAND_CHARGE_PER_KW[kind]
        if demand_charge_per_kw is None
        else demand_charge_per_kw
    )
    big = 1e6
    draft_site = SiteConfig(
        name=f"generated-{kind}-{chargers}",
        timezone=timezone,
        grid=GridConnection(import_limit_kw=big),
        nodes=tuple(LimitNode(id=nid, parent=par, max_power_kw=big) for nid, par in nodes),
        chargers=tuple(placed),
        tariff=tariff,
    )
    name = f"{kind}-{chargers}c-{days}d-s{seed}"
    draft = make_scenario(draft_site, sessions, ts, name)
    node_limits, import_kw = _size_limits(draft)
    site = SiteConfig(
        name=draft_site.name,
        timezone=timezone,
        grid=GridConnection(
            import_limit_kw=import_kw,
            export_limit_kw=min(import_kw, _ceil_to(0.6 * pv_kwp, 1.0)) if pv else 0.0,
        ),
        nodes=tuple(
            LimitNode(id=nid, parent=par, max_power_kw=node_limits[nid][0], max_current_a=node_limits[nid][1])
            for nid, par in nodes
        ),
        chargers=tuple(placed),
        battery=StationaryBattery(
            capacity_kwh=2.0 * _ceil_to(0.25 * import_kw, 5.0),
            max_charge_kw=_ceil_to(0.25 * import_kw, 5.0),
            max_discharge_kw=_ceil_to(0.25 * import_kw, 5.0),
        )
        if battery
        else None,
        pv=PVSystem(peak_kw=pv_kwp) if pv else None,
        tariff=tariff,
    )
    return Scenario(site, draft.sessions, draft.timeseries, name)
