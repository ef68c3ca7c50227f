"""The physical side of the simulated site: installed profiles, the EVs' draw, the limit checks.

:class:`PhysicalSite` knows nothing of OCPP messaging: :mod:`stationsim.simulator` hands it the profiles
stations receive and asks it to advance time. Each charging EV draws the minimum of what its profiles
allow (the station maximum profile, the transaction profile or else the TxDefault profile; OCPP 1.6
section 3.13) and what the EV can take, which is the core's charger box
(:func:`envs.projection.charger_bounds`: rating, the EV's own limit, no charging past its need), so the
double draws with the same physics as the simulator of ``envs/``. Energy goes in at ``p * efficiency *
dt``. The site (base load + chargers - PV from the scenario) is checked against the import limit and
every node's limit at every tick.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from envs.core import FloatArray, SiteArrays, SiteState
from envs.projection import charger_bounds
from envs.scenario import Scenario
from envs.share import profile_to_kw_one


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
    seq_no: int = 0


class StationProfiles:
    """Installed profiles of one station: purpose/connector -> limit in kW (converted at receipt)."""

    def __init__(self) -> None:
        self.max_kw: float | None = None
        self.tx_default_kw: dict[int, float] = {}
        self.tx_kw: dict[int, tuple[str | None, float]] = {}
        self.received = 0


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
        self.site_import_kw = 0.0
        self.pv_kw = 0.0
        self._unprotected_since: dict[tuple[str, int, str], float] = {}
        """charging transactions with no profile in force yet -> monotonic time first seen charging"""
        self._protected: set[tuple[str, int, str]] = set()
        self.worst_profile_delay_s = 0.0
        """longest wall time a transaction charged before any profile (max, TxDefault, Tx) limited it"""
        self.transactions_seen = 0
        self.battery_kw = 0.0
        """the site battery's power now (kW, + charge; :mod:`stationsim.battery`), part of the import"""

    def protected(self, sid: str, c: SimConnector) -> bool:
        """A profile is in force for ``c``'s transaction: station maximum, TxDefault or its TxProfile."""
        prof = self.profiles[sid]
        tx = prof.tx_kw.get(c.connector_id)
        return (
            prof.max_kw is not None
            or c.connector_id in prof.tx_default_kw
            or (tx is not None and tx[0] == c.tx_id)
        )

    def _track_protection(self, sid: str, c: SimConnector, wall: float) -> None:
        key = (sid, c.connector_id, c.tx_id or "")
        if key in self._protected:
            return
        since = self._unprotected_since.setdefault(key, wall)
        if since == wall:
            self.transactions_seen += 1
        if self.protected(sid, c):
            self._protected.add(key)
            del self._unprotected_since[key]
        self.worst_profile_delay_s = max(self.worst_profile_delay_s, wall - since)

    @property
    def unprotected_now(self) -> int:
        """charging transactions that have had no profile in force so far"""
        return len(self._unprotected_since)

    def series_at(self, t: pd.Timestamp) -> tuple[float, float]:
        k = int(np.clip(self._ts_index.searchsorted(t, side="right") - 1, 0, len(self._base) - 1))
        return float(self._base[k]), float(self._pv[k])

    def to_kw(self, station: str, connector_id: int, unit: str, limit: float) -> float:
        conns = self.stations[station]
        c = next((x for x in conns if x.connector_id == connector_id), conns[0])
        return profile_to_kw_one(self.site, c.charger, limit, "A" if unit == "A" else "W")

    def install_profile(self, station: str, connector_id: int, profile: dict[str, Any], version: str) -> bool:
        prof = self.profiles[station]
        prof.received += 1
        purpose = profile["charging_profile_purpose"]
        schedule = profile["charging_schedule"]
        if version == "2.0.1":
            schedule = schedule[0]
        period = schedule["charging_schedule_period"][0]
        kw = self.to_kw(station, connector_id, schedule["charging_rate_unit"], float(period["limit"]))
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
            prof.tx_kw[connector_id] = (c.tx_id, kw)
        else:
            return False
        return True

    def allowed_kw(self, station: str) -> dict[int, float]:
        """Per connector of ``station``: what its profiles allow now, kW (inf without a profile)."""
        prof = self.profiles[station]
        out: dict[int, float] = {}
        for c in self.stations[station]:
            lim = np.inf
            tx = prof.tx_kw.get(c.connector_id)
            if tx is not None and tx[0] == c.tx_id:
                lim = tx[1]
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
        for sid, conns in self.stations.items():
            for c in conns:
                if c.session is None and c.sessions and now >= c.sessions[0]["arrival"]:
                    c.session = c.sessions.pop(0)
                    c.delivered_kwh = 0.0
                    emit(sid, "arrive", c)
                s = c.session
                if s is None:
                    continue
                if now >= s["departure"]:
                    if c.tx_id is not None:
                        emit(sid, "depart", c)
                    c.session = None
                    c.power_kw = 0.0
                    continue
                if c.tx_id is not None:
                    charging.setdefault(sid, []).append(c)
                    self._track_protection(sid, c, time.monotonic())
        can_take_kw = self.can_take_kw([c for conns in charging.values() for c in conns], dt_h)
        for sid, conns in charging.items():
            allowed = self.allowed_kw(sid)
            ignore = sid in self.ignore_profiles
            draws: list[tuple[SimConnector, float]] = []
            for c in conns:
                p = float(can_take_kw[c.charger])
                if not ignore:
                    p = min(p, allowed[c.connector_id])
                draws.append((c, max(p, 0.0)))
            prof = self.profiles[sid]
            total = sum(p for _, p in draws)
            scale = 1.0
            if not ignore and prof.max_kw is not None and total > prof.max_kw:
                scale = prof.max_kw / total
            for c, p in draws:
                c.power_kw = p * scale
                s = c.session
                assert s is not None
                eff = float(site.efficiency[c.charger])
                c.delivered_kwh += c.power_kw * dt_h * eff
                c.register_wh += c.power_kw * dt_h * 1000.0
                self.delivered[str(s["session_id"])] = c.delivered_kwh
                power[c.charger] = c.power_kw
        base, pv = self.series_at(now)
        imp = float(site.site_import_kw(power, base, pv, self.battery_kw))
        self.max_import = max(self.max_import, imp)
        excess = imp - site.import_limit_kw
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

    def can_take_kw(self, conns: list[SimConnector], dt_h: float) -> FloatArray:
        """(n,) what each charging EV can take this tick, kW: the core's charger box
        (:func:`envs.projection.charger_bounds`: rating, the EV's own limit, no charging past its need).
        A tick of no duration (``dt_h`` 0) only bounds by rating and EV limit."""
        n = self.site.n
        present = np.zeros(n, dtype=bool)
        ev_max = np.zeros(n)
        need = np.zeros(n)
        for c in conns:
            s = c.session
            assert s is not None
            present[c.charger] = True
            ev_max[c.charger] = float(s["max_power_kw"]) if np.isfinite(s["max_power_kw"]) else np.inf
            need[c.charger] = max(float(s["energy_kwh"]) - c.delivered_kwh, 0.0)
        room = need if dt_h > 0 else np.where(present, np.inf, 0.0)
        state = SiteState(
            ev_present=present,
            ev_max_charge_kw=ev_max,
            ev_max_discharge_kw=np.zeros(n),
            energy_needed_kwh=need,
            energy_room_kwh=room,
            energy_dischargeable_kwh=np.zeros(n),
            time_left_h=np.full(n, 1e3),  # no departure bound on the draw
            base_load_kw=0.0,
            pv_kw=0.0,
            dt_h=dt_h if dt_h > 0 else 1.0,
        )
        return charger_bounds(self.site, state)[1]
