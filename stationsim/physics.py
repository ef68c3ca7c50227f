"""The physical side of the simulated site: installed profiles, the EVs' draw, the limit checks.

:class:`PhysicalSite` knows nothing of OCPP messaging: :mod:`stationsim.simulator` hands it the profiles
stations receive and asks it to advance time. Each charging EV draws the minimum of what its profiles
allow (the station maximum profile, the transaction profile or else the TxDefault profile; OCPP 1.6
section 3.13) and what the EV can take, which is the core's charger box
(:func:`envs.projection.charger_bounds`: rating, the EV's own limit, no charging past its room: a full
battery where the session gives its battery and arrival SoC, else what it asked for), so the double draws
with the same physics as the simulator of ``envs/``. Energy goes in at ``p * efficiency *
dt``. The site (base load + chargers - PV from the scenario) is checked against the import limit and
every node's limit at every tick.

Schedules: an ``Absolute`` profile with several periods is followed on the wall clock from its
``startSchedule`` (the central system plans in wall time) and lapses after its ``duration``; then the
station falls back to the profiles below it (TxDefault, the station maximum), as OCPP says. A 2.1 EV that
may discharge (the session's ``v2g`` flag on a bidirectional charger of a 2.1 station) follows
``CentralSetpoint`` periods' ``setpoint`` and, in ``ExternalLimits`` periods with no charging allowed,
discharges at ``dischargeLimit``; it never goes below its own SoC floor (``v2g_min_soc``, or its arrival
SoC if lower; without a known battery, only what it received in this session). Net energy (charged at
``efficiency``, discharged over it) is what the EV keeps.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from envs.core import FloatArray, SiteArrays, SiteState
from envs.episode import battery_energies_kwh
from envs.projection import charger_bounds
from envs.scenario import Scenario
from envs.share import profile_to_kw_one


class TraceRow(NamedTuple):
    """One tick of the physical site (``evdlm simulate --trace-csv``): what the limits saw."""

    wall_utc: str
    sim_time: str
    import_kw: float
    """the site's net import (negative: export)"""
    charging_kw: float
    """the chargers drawing, together"""
    discharging_kw: float
    """the chargers giving back, together (>= 0)"""
    discharging: int
    """chargers giving back"""
    battery_kw: float
    excess_kw: float
    """above the import or export limit (<= 0: within)"""
    node_excess_kw: float
    """the worst node above its limit (<= 0: within)"""


def write_trace(rows: list[TraceRow], path: str) -> None:
    """The ticks as CSV, one row each, with a header."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(",".join(TraceRow._fields) + "\n")
        for r in rows:
            f.write(",".join(f"{v:.4f}" if isinstance(v, float) else str(v) for v in r) + "\n")


@dataclass
class SimConnector:
    charger: int
    station: str
    connector_id: int
    sessions: list[dict[str, Any]]
    session: dict[str, Any] | None = None
    tx_id: str | None = None
    starting: bool = False
    delivered_kwh: float = 0.0
    register_wh: float = 0.0
    power_kw: float = 0.0
    """signed: negative while discharging"""
    seq_no: int = 0
    v2x: bool = False
    """this session may discharge (set at arrival by the simulator)"""
    export_wh: float = 0.0
    """export energy register (V2G), Wh"""


@dataclass
class Period:
    """One schedule period in kW (converted at receipt)."""

    start_s: float
    limit_kw: float
    discharge_kw: float = 0.0
    """discharge limit, kW (<= 0)"""
    setpoint_kw: float | None = None


@dataclass
class Schedule:
    """An installed profile's schedule: periods from ``start`` (wall clock; None: from now on, as a
    relative single-period profile), until ``duration_s`` (None: open-ended)."""

    periods: list[Period]
    start: datetime | None = None
    duration_s: float | None = None
    tx_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        starts = [p.start_s for p in self.periods]
        self._starts = starts if starts == sorted(starts) else None
        """the periods' starts where in order (OCPP's): the period now is then a bisection"""

    def at(self, now: datetime) -> Period | None:
        """The period in force at ``now``; None before the start or after the end."""
        if self.start is None:
            return self.periods[0]
        t = (now - self.start).total_seconds()
        if t < -1.0 or (self.duration_s is not None and t >= self.duration_s):
            return None
        if self._starts is not None:
            return self.periods[max(bisect.bisect_right(self._starts, t) - 1, 0)]
        current = self.periods[0]
        for p in self.periods:
            if p.start_s <= t:
                current = p
        return current


class StationProfiles:
    """Installed profiles of one station: purpose/connector -> schedule in kW (converted at receipt)."""

    def __init__(self) -> None:
        self.max_kw: float | None = None
        self.tx_default_kw: dict[int, float] = {}
        self.tx: dict[int, Schedule] = {}
        self.received = 0

    @property
    def tx_kw(self) -> dict[int, tuple[str | None, float]]:
        """connector -> (transaction, first period's limit kW) of each TxProfile"""
        return {k: (s.tx_id, s.periods[0].limit_kw) for k, s in self.tx.items()}


class ProtectionTracker:
    """How long charging transactions went before a profile (max, TxDefault, Tx) was in force for them."""

    def __init__(self) -> None:
        self._unprotected_since: dict[tuple[str, int, str], float] = {}
        """charging transactions with no profile in force yet -> monotonic time first seen charging"""
        self._protected: set[tuple[str, int, str]] = set()
        self.worst_profile_delay_s = 0.0
        """longest wall time a transaction charged before any profile (max, TxDefault, Tx) limited it"""
        self.transactions_seen = 0

    def track(self, key: tuple[str, int, str], protected: Callable[[], bool], wall: float) -> None:
        """One tick of the charging transaction ``key`` (station, connector, transaction) at ``wall``."""
        if key in self._protected:
            return
        since = self._unprotected_since.setdefault(key, wall)
        if since == wall:
            self.transactions_seen += 1
        if protected():
            self._protected.add(key)
            del self._unprotected_since[key]
        self.worst_profile_delay_s = max(self.worst_profile_delay_s, wall - since)

    @property
    def unprotected_now(self) -> int:
        """charging transactions that have had no profile in force so far"""
        return len(self._unprotected_since)


def ev_energies_kwh(conns: list[SimConnector], v2g_min_soc: float) -> tuple[FloatArray, FloatArray]:
    """``(room, dischargeable)`` of the EVs on ``conns`` now, kWh on their battery side, as the environment
    counts them (:func:`envs.episode.battery_energies_kwh`): room to a full battery where the session gives
    its battery and arrival SoC (at least what it asked for), else what it asked for; a V2X session's
    energy above its SoC floor (``v2g_min_soc``, or its arrival SoC if lower; without a known battery, only
    what it received). Both moved by the net energy it received."""
    sessions = [c.session or {} for c in conns]
    battery = np.array([float(s.get("battery_kwh", np.nan)) for s in sessions])
    soc = np.array([float(s.get("arrival_soc", np.nan)) for s in sessions])
    asked = np.array([float(s.get("energy_kwh", 0.0)) for s in sessions])
    got = np.array([c.delivered_kwh for c in conns])
    v2x = np.array([c.session is not None and c.v2x for c in conns], dtype=bool)
    with np.errstate(invalid="ignore"):
        full, above = battery_energies_kwh(battery, soc, asked, v2g_min_soc)
    room = np.maximum(np.where(np.isfinite(full), full, asked) - got, 0.0)
    held = np.where(np.isfinite(above), above, 0.0)
    return room, np.where(v2x, np.maximum(held + got, 0.0), 0.0)


class PhysicalSite:
    """Profiles, draws and limit statistics of the simulated site (one event loop)."""

    def __init__(
        self,
        scenario: Scenario,
        site: SiteArrays,
        stations: dict[str, list[SimConnector]],
        ignore_profiles: frozenset[str],
    ) -> None:
        self.site = site
        self._efficiency: list[float] = site.efficiency.tolist()
        self._max_discharge_kw: list[float] = site.max_discharge_kw.tolist()
        self.stations = stations
        self.connectors = {(c.station, c.connector_id): c for conns in stations.values() for c in conns}
        self.ignore_profiles = ignore_profiles
        self.profiles = {sid: StationProfiles() for sid in sorted(stations)}
        ts = scenario.timeseries
        self._ts_index = ts.index
        self._base = ts["base_load_kw"].to_numpy(float)
        self._pv = ts["pv_kw"].to_numpy(float)
        sessions = scenario.sessions.sort_values("arrival")
        self.asked: dict[str, float] = {
            str(r["session_id"]): float(r["energy_kwh"]) for r in sessions.to_dict("records")
        }
        self.delivered: dict[str, float] = dict.fromkeys(self.asked, 0.0)
        self.violation_ticks = self.node_violation_ticks = 0
        self.max_import = -np.inf
        self.max_excess = 0.0
        self.longest_violation_s = 0.0
        self._violation_since: float | None = None
        self.last_violation_at = -np.inf
        """monotonic time of the last tick with the site import above its limit"""
        self.last_node_violation_at = -np.inf
        """monotonic time of the last tick with a node above its kW limit"""
        self.ticks = 0
        self.exported_kwh = 0.0
        """energy the EVs gave back (V2G), kWh at the grid side"""
        self.v2g_min_soc = 0.2
        self.site_import_kw = 0.0
        self.pv_kw = 0.0
        self.protection = ProtectionTracker()
        """how long transactions charged before a profile limited them"""
        self.battery_kw = 0.0
        """the site battery's power now (kW, + charge; :mod:`stationsim.battery`), part of the import"""
        self.trace: list[TraceRow] | None = None
        """one row per tick where a list is given (``evdlm simulate --trace-csv``), else nothing kept"""

    def protected(self, sid: str, c: SimConnector) -> bool:
        """A profile is in force for ``c``'s transaction: station maximum, TxDefault or its TxProfile."""
        prof = self.profiles[sid]
        tx = prof.tx_kw.get(c.connector_id)
        return (
            prof.max_kw is not None
            or c.connector_id in prof.tx_default_kw
            or (tx is not None and tx[0] == c.tx_id)
        )

    def series_at(self, t: pd.Timestamp) -> tuple[float, float]:
        k = int(np.clip(self._ts_index.searchsorted(t, side="right") - 1, 0, len(self._base) - 1))
        return float(self._base[k]), float(self._pv[k])

    def to_kw(self, station: str, connector_id: int, unit: str, limit: float) -> float:
        return limit * self._kw_per_unit(station, connector_id, unit)

    def _kw_per_unit(self, station: str, connector_id: int, unit: str) -> float:
        """kW per unit of a limit in ``unit`` on the station's connector (its first for connector 0)."""
        conns = self.stations[station]
        c = next((x for x in conns if x.connector_id == connector_id), conns[0])
        return profile_to_kw_one(self.site, c.charger, 1.0, "A" if unit == "A" else "W")

    def install_profile(self, station: str, connector_id: int, profile: dict[str, Any], version: str) -> bool:
        prof = self.profiles[station]
        prof.received += 1
        purpose = profile["charging_profile_purpose"]
        schedule = profile["charging_schedule"]
        if version != "1.6":
            schedule = schedule[0]
        per = self._kw_per_unit(station, connector_id, schedule["charging_rate_unit"])
        periods = []
        for p in schedule["charging_schedule_period"]:
            lim = p.get("limit")
            setpoint = p.get("setpoint")
            periods.append(
                Period(
                    start_s=float(p["start_period"]),
                    limit_kw=np.inf if lim is None else float(lim) * per,
                    discharge_kw=float(p.get("discharge_limit") or 0.0) * per,
                    setpoint_kw=None
                    if setpoint is None or p.get("operation_mode") != "CentralSetpoint"
                    else float(setpoint) * per,
                )
            )
        if not periods:
            return False
        kw = periods[0].limit_kw
        if purpose in ("ChargePointMaxProfile", "ChargingStationMaxProfile"):
            if connector_id != 0:
                return False
            prof.max_kw = kw
        elif purpose == "TxDefaultProfile":
            targets = (
                [c.connector_id for c in self.stations[station]] if connector_id == 0 else [connector_id]
            )
            for k in targets:
                prof.tx_default_kw[k] = kw
        elif purpose == "TxProfile":
            c = self.connectors.get((station, connector_id))
            tx = profile.get("transaction_id")
            if c is None or c.tx_id is None or (tx is not None and str(tx) != c.tx_id):
                return False
            start = None
            if profile.get("charging_profile_kind") == "Absolute" and schedule.get("start_schedule"):
                start = datetime.fromisoformat(str(schedule["start_schedule"]).replace("Z", "+00:00"))
            duration = schedule.get("duration")
            prof.tx[connector_id] = Schedule(
                periods, start, None if duration is None else float(duration), c.tx_id
            )
        else:
            return False
        return True

    def period_now(self, station: str, c: SimConnector, now: datetime | None = None) -> Period | None:
        """The TxProfile period in force for ``c``'s transaction (None: none, or it lapsed)."""
        sched = self.profiles[station].tx.get(c.connector_id)
        if sched is None or sched.tx_id != c.tx_id:
            return None
        return sched.at(now or datetime.now(UTC))

    def allowed_kw(self, station: str) -> dict[int, float]:
        """Per connector of ``station``: what its profiles allow now, kW (inf without a profile)."""
        prof = self.profiles[station]
        now = datetime.now(UTC)
        out: dict[int, float] = {}
        for c in self.stations[station]:
            lim = np.inf
            period = self.period_now(station, c, now)
            if period is not None:
                lim = period.limit_kw
            elif c.connector_id in prof.tx_default_kw:
                lim = prof.tx_default_kw[c.connector_id]
            out[c.connector_id] = lim
        return out

    def tick(self, now: pd.Timestamp, dt_h: float, emit: Callable[[str, str, SimConnector], None]) -> None:
        """Advance ``dt_h`` hours at simulated time ``now``: arrivals and departures (``emit(station,
        'arrive' | 'depart', connector)``), every charging EV's draw, and the limit checks."""
        site = self.site
        power = np.zeros(site.n)
        charging: dict[str, list[SimConnector]] = {}
        now_ns = now.value  # UTC ns: compared as ints, a thousand connectors every tick
        for sid, conns in self.stations.items():
            for c in conns:
                if c.session is None and c.sessions and now_ns >= c.sessions[0]["arrival"].value:
                    c.session = c.sessions.pop(0)
                    c.delivered_kwh = 0.0
                    emit(sid, "arrive", c)
                s = c.session
                if s is None:
                    continue
                if now_ns >= s["departure"].value:
                    if c.tx_id is not None:
                        emit(sid, "depart", c)
                    c.session = None
                    c.power_kw = 0.0
                    continue
                if c.tx_id is not None:
                    charging.setdefault(sid, []).append(c)
                    key = (sid, c.connector_id, c.tx_id or "")
                    self.protection.track(key, partial(self.protected, sid, c), time.monotonic())
        all_charging = [c for conns in charging.values() for c in conns]
        lo_kw, hi_kw = self.ev_box_kw(all_charging, dt_h)
        ev_lo, can_take_kw = lo_kw.tolist(), hi_kw.tolist()
        wall_now = datetime.now(UTC)
        for sid, conns in charging.items():
            prof = self.profiles[sid]
            ignore = sid in self.ignore_profiles
            draws: list[tuple[SimConnector, float]] = []
            for c in conns:
                p = can_take_kw[c.charger]
                if not ignore:  # the TxProfile's period now, else the TxDefault (as allowed_kw)
                    period = self.period_now(sid, c, wall_now)
                    tx_default = prof.tx_default_kw.get(c.connector_id, np.inf)
                    p = min(p, period.limit_kw if period is not None else tx_default)
                    if period is not None and c.v2x:
                        p = self._v2x_draw(period, p, ev_lo[c.charger])
                draws.append((c, p if c.v2x else max(p, 0.0)))
            total = sum(max(p, 0.0) for _, p in draws)
            scale = 1.0
            if not ignore and prof.max_kw is not None and total > prof.max_kw:
                scale = prof.max_kw / total
            for c, p in draws:
                c.power_kw = p * scale if p > 0 else p
                s = c.session
                assert s is not None
                eff = self._efficiency[c.charger]
                if c.power_kw >= 0:
                    c.delivered_kwh += c.power_kw * dt_h * eff
                    c.register_wh += c.power_kw * dt_h * 1000.0
                else:
                    c.delivered_kwh += c.power_kw * dt_h / eff
                    c.export_wh -= c.power_kw * dt_h * 1000.0
                    self.exported_kwh -= c.power_kw * dt_h
                self.delivered[str(s["session_id"])] = c.delivered_kwh
                power[c.charger] = c.power_kw
        base, pv = self.series_at(now)
        imp = float(site.site_import_kw(power, base, pv, self.battery_kw))
        self.max_import = max(self.max_import, imp)
        excess = max(imp - site.import_limit_kw, -imp - site.export_limit_kw)
        node_excess = np.abs(site.node_power_kw(power)) - site.node_limit_kw
        self.ticks += 1
        wall = time.monotonic()
        over = excess > 1e-3 or bool(np.any(node_excess > 1e-3))
        if excess > 1e-3:
            self.violation_ticks += 1
            self.last_violation_at = wall
        if np.any(node_excess > 1e-3):
            self.node_violation_ticks += 1
            self.last_node_violation_at = wall
        self.max_excess = max(self.max_excess, excess, float(node_excess.max(initial=0.0)))
        if over:
            if self._violation_since is None:
                self._violation_since = wall
            self.longest_violation_s = max(self.longest_violation_s, wall - self._violation_since)
        else:
            self._violation_since = None
        self.site_import_kw = imp
        self.pv_kw = pv
        if self.trace is not None:
            self.trace.append(
                TraceRow(
                    datetime.now(UTC).isoformat(), str(now), imp, float(power[power > 0].sum()),
                    float(-power[power < 0].sum()), int((power < 0).sum()), self.battery_kw, float(excess),
                    float(node_excess.max(initial=-np.inf)),
                )
            )  # fmt: skip

    @staticmethod
    def _v2x_draw(period: Period, charge_cap_kw: float, ev_lo_kw: float) -> float:
        """A V2X EV's power in a period: the setpoint (CentralSetpoint) within the period's limits and
        its own box; in ExternalLimits with no charging allowed, discharge at the discharge limit."""
        lo = max(period.discharge_kw, ev_lo_kw)
        if period.setpoint_kw is not None:
            return float(min(max(period.setpoint_kw, lo), charge_cap_kw))
        if period.discharge_kw < 0 and period.limit_kw <= 0:
            return float(min(lo, 0.0))
        return charge_cap_kw

    def can_take_kw(self, conns: list[SimConnector], dt_h: float) -> FloatArray:
        """(n,) what each charging EV can take this tick, kW (the upper side of :meth:`ev_box_kw`)."""
        return self.ev_box_kw(conns, dt_h)[1]

    def ev_box_kw(self, conns: list[SimConnector], dt_h: float) -> tuple[FloatArray, FloatArray]:
        """``(lo, hi)`` (n,) of each charging EV this tick, kW: the core's charger box
        (:func:`envs.projection.charger_bounds`: rating, the EV's own limit, no charging past its room
        (:func:`ev_energies_kwh`), discharge only for a V2X session down to its SoC floor). A tick of no
        duration (``dt_h`` 0) only bounds by rating and EV limit."""
        n = self.site.n
        present = np.zeros(n, dtype=bool)
        ev_max = np.zeros(n)
        need = np.zeros(n)
        room = np.zeros(n)
        dis_max = np.zeros(n)
        dischargeable = np.zeros(n)
        for c in conns:
            s = c.session
            assert s is not None
            i = c.charger
            present[i] = True
            top = float(s["max_power_kw"])
            ev_max[i] = top if math.isfinite(top) else np.inf
            need[i] = max(float(s["energy_kwh"]) - c.delivered_kwh, 0.0)
            if c.v2x:
                dis_max[i] = min(self._max_discharge_kw[i], ev_max[i])
        at = [c.charger for c in conns]
        room[at], dischargeable[at] = ev_energies_kwh(conns, self.v2g_min_soc)
        room = room if dt_h > 0 else np.where(present, np.inf, 0.0)
        state = SiteState(
            ev_present=present,
            ev_max_charge_kw=ev_max,
            ev_max_discharge_kw=dis_max,
            energy_needed_kwh=need,
            energy_room_kwh=room,
            energy_dischargeable_kwh=dischargeable if dt_h > 0 else dis_max * 1e3,
            time_left_h=np.full(n, 1e3),  # no departure bound on the draw
            base_load_kw=0.0,
            pv_kw=0.0,
            dt_h=dt_h if dt_h > 0 else 1.0,
        )
        lo, hi = charger_bounds(self.site, state)
        return np.asarray(lo, dtype=float), np.asarray(hi, dtype=float)
