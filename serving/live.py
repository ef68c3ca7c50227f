"""Live state of the site as the central system sees it, and the frozen snapshot the policy acts on.

Mutable per-connector and per-station records are updated only by the OCPP handlers and the control loop
(one event loop, no threads). :func:`build_snapshot` freezes them into the same
:class:`~envs.core.Snapshot` the simulation produces, so a policy cannot tell live from simulated.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import numpy as np

from envs.core import BoolArray, FloatArray, ForecastWindow, SiteArrays, SiteState, Snapshot
from serving.at_meter import DrawsAtMeter, draws_at_meter
from serving.base_ahead import base_ahead_kw
from serving.config import ServingConfig
from serving.events import V2XNeeds
from serving.taken import reading_slack_s

if TYPE_CHECKING:
    from serving.battery import BatteryStatus
    from serving.forecast import LiveForecast

BIG_ENERGY_KWH = 1e6
BIG_TIME_H = 1e3
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
LIMIT_LOG_LEN = 32
"""limits kept per connector to judge its draw at the time of a site meter reading"""
READING_LOG_LEN = 8
"""power readings kept per connector for the same (:meth:`ConnectorLive.draw_bounds_kw`)"""


@dataclass
class ConnectorLive:
    """One connector (= one site charger) of a station."""

    charger_id: str
    station_id: str
    connector_id: int
    index: int
    status: str = "Unknown"
    tx_pk: int | None = None
    ocpp_tx_id: str | None = None
    id_tag: str | None = None
    tx_start: datetime | None = None
    meter_start_wh: float = 0.0
    meter_last_wh: float = 0.0
    power_kw: float | None = None
    power_at: float = -np.inf
    """monotonic time of the last power measurement"""
    power_from: float | None = None
    """the earliest monotonic time it may have been taken (:mod:`serving.taken`); None: the reading slack
    before ``power_at``"""
    energy_asked_kwh: float | None = None
    departure: datetime | None = None
    ev_max_kw: float | None = None
    limit_kw: float | None = None
    """last limit sent and accepted for the running transaction, kW"""
    limit_value: float | None = None
    """the same in the unit of the profile (A or W)"""
    limit_sent_at: float = -np.inf
    offender: bool = False
    offender_cycles: int = 0
    offender_since: float = -np.inf
    """monotonic time the current offender flag was raised"""
    export_start_wh: float | None = None
    """export energy register at the transaction's first reading of it (V2G), Wh"""
    export_last_wh: float = 0.0
    v2x: V2XNeeds | None = None
    """the EV's declared V2X parameters (2.1), None where it declared none"""
    v2x_declared_net_kwh: float = 0.0
    """net energy delivered when ``v2x`` was declared, kWh (its energies are relative to that moment)"""
    v2g_mode: str = "charge_only"
    """``charge_only``, ``CentralSetpoint`` or ``ExternalLimits`` (:func:`serving.v2g.choose_mode`)"""
    v2g_reason: str = "no_ev_needs"
    plan_kw: FloatArray | None = None
    """the schedule last accepted (kW per period, the first one now), None before any"""
    plan_start: float = -np.inf
    """monotonic time its first period began"""
    pending_kw: tuple[float, float] | None = None
    """(lowest, highest) kW of the profiles of a batch still on its way to it, now and in their next
    period (the station may be on them or on its last accepted one); None when none is"""
    meter_fault: str | None = None
    """kind of the last implausible reading (:mod:`serving.plausibility`), None once one is plausible"""
    meter_fault_since: float = -np.inf
    register_wh: float | None = None
    """last accepted import energy register, Wh (any transaction)"""
    register_at: float = -np.inf
    started_at: float = -np.inf
    """monotonic time the central system learnt of the running transaction (it drew nothing before)"""
    needs_at: float = -np.inf
    """monotonic time the EV's needs (``NotifyEVChargingNeeds``) arrived in this transaction, -inf before"""
    limit_log: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=LIMIT_LOG_LEN))
    """(monotonic time it took effect, kW) of the last limits, for :meth:`draw_floor_kw`"""
    readings: deque[tuple[float, float, float]] = field(default_factory=lambda: deque(maxlen=READING_LOG_LEN))
    """(monotonic time it arrived, kW, time it was taken after: its TriggerMessage's or its own time's
    (:mod:`serving.taken`), else -inf) of the last power readings in this transaction, for
    :meth:`draw_bounds_kw`"""
    trigger_sent_at: float | None = None
    """monotonic time the oldest TriggerMessage not answered by a triggered reading went out, or None"""

    @property
    def active(self) -> bool:
        return self.tx_pk is not None

    @property
    def exported_kwh(self) -> float:
        """energy the EV gave back to the site in this transaction (V2G), kWh"""
        if self.export_start_wh is None:
            return 0.0
        return max(0.0, (self.export_last_wh - self.export_start_wh) / 1000.0)

    @property
    def delivered_kwh(self) -> float:
        """net energy delivered to the EV (import minus V2G export), kWh, never below 0"""
        return max(0.0, (self.meter_last_wh - self.meter_start_wh) / 1000.0 - self.exported_kwh)

    def received_kwh(self, efficiency: float) -> float:
        """net energy the EV's battery received in this transaction, kWh: the meter's import at
        ``efficiency`` less its export over it (the meter is on the grid side; an EV's declared energy
        request and the core's need are on its battery's). Below 0 where a V2G EV gave back more than it
        took: what it gave is then owed on top of its request, as the environment counts it."""
        imported = (self.meter_last_wh - self.meter_start_wh) / 1000.0
        return imported * efficiency - self.exported_kwh / efficiency

    @property
    def discharging(self) -> bool:
        return self.v2g_mode != "charge_only"

    def note_limit(self, at: float) -> None:
        """Log the limit now in force (``limit_kw``), in force since monotonic time ``at``."""
        if self.limit_kw is not None:
            self.limit_log.append((at, self.limit_kw))

    def limits_in_force(self, since: float, until: float) -> list[float]:
        """The limits in force at some time in ``[since, until]``: the one at ``since`` and every later
        one up to ``until`` (monotonic times)."""
        before = [lim for at, lim in self.limit_log if at <= since]
        return before[-1:] + [lim for at, lim in self.limit_log if since < at <= until]

    def _span_kw(self, kw: float, since: float, until: float) -> tuple[float, float]:
        """A reading of ``kw`` with every limit in force in ``[since, until]``: the lowest and highest the
        draw may have been then (a station follows a lower limit at once; an EV may draw up to one)."""
        limits = self.limits_in_force(since, until)
        return min([kw, *limits]), max([kw, *limits])

    def draw_floor_kw(self, since: float, until: float = np.inf) -> float | None:
        """The lowest the charger's draw may have been at any time in ``[since, until]``: its last
        measurement, but no more than any limit in force in that time (a station follows a lower limit
        at once). None without a measurement.

        A site meter reading and a charger's MeterValues are taken at different times; a charger whose
        limit went down and up again between them may have drawn far less when the site meter read than
        its measurement says, and subtracting the measurement would make the base load look smaller than
        it is."""
        return None if self.power_kw is None else self._span_kw(self.power_kw, since, until)[0]

    def draw_ceiling_kw(self, since: float, until: float = np.inf) -> float | None:
        """The other side of :meth:`draw_floor_kw`: its last measurement, or any limit in force in
        ``[since, until]`` where that is more (it may have drawn up to it). None without a measurement."""
        return None if self.power_kw is None else self._span_kw(self.power_kw, since, until)[1]

    def power_taken_from(self, slack: float) -> float:
        """The earliest monotonic time the last power measurement may have been taken."""
        return self.power_at - slack if self.power_from is None else self.power_from

    def draw_bounds_kw(
        self, at: float, slack: float, at_from: float | None = None
    ) -> tuple[float, float] | None:
        """The lowest and highest the draw may have been when a site meter reading arriving at monotonic
        ``at`` was taken (readings arrive up to ``slack`` after they are taken; the site meter's no earlier
        than ``at_from``, ``at - slack`` where None: :mod:`serving.taken`). From the reading nearest
        to it with no limit taking effect between the two: that reading (and the limit then in force,
        where the EV drew less). Where every reading of this transaction has a limit change between it
        and the site meter's, or the meter is implausible (its power is then the assumed limit), the last
        measurement with every limit in force between the two (:meth:`draw_floor_kw`,
        :meth:`draw_ceiling_kw`). None without a measurement.

        The last reading alone, taken after a cut the site meter read before, made the charger maybe
        drawing nothing: the base load a charger too high, another cut, and so on each cycle (chargers
        flapping 0 <-> 6.2 kW); a reading asked for after a change (:mod:`serving.calls`) is after it."""
        if self.power_kw is None:
            return None
        at_from = at - slack if at_from is None else at_from
        best: tuple[float, float, float] | None = None
        # nearest first, stopping past the first clean one (an equally near one only breaks a tie)
        readings = self.readings if self.meter_fault is None else ()
        nearest = sorted((abs(at - t), t, kw, ta) for t, kw, ta in readings)
        for dist, t, kw, taken_after in nearest:
            if best is not None and dist > best[0]:
                break
            # taken up to the slack before it arrived, and after the TriggerMessage it answers
            since, until = min(at_from, max(t - slack, taken_after)), max(at, t) + slack
            if not any(since < t_lim <= until for t_lim, _ in self.limit_log):
                span = (dist, *self._span_kw(kw, since, until))
                best = span if best is None else min(best, span)
        if best is not None:
            return best[1], best[2]
        since, until = min(at_from, self.power_taken_from(slack)), max(at, self.power_at) + slack
        return self._span_kw(self.power_kw, since, until)

    def clear_transaction(self) -> None:
        self.tx_pk = None
        self.ocpp_tx_id = None
        self.id_tag = None
        self.tx_start = None
        self.energy_asked_kwh = None
        self.departure = None
        self.ev_max_kw = None
        self.limit_kw = None
        self.limit_value = None
        self.limit_sent_at = -np.inf
        self.offender = False
        self.offender_cycles = 0
        self.offender_since = -np.inf
        self.export_start_wh = None
        self.export_last_wh = 0.0
        self.v2x = None
        self.v2x_declared_net_kwh = 0.0
        self.v2g_mode = "charge_only"
        self.v2g_reason = "no_ev_needs"
        self.plan_kw = None
        self.plan_start = -np.inf
        self.limit_log.clear()
        self.readings.clear()
        self.trigger_sent_at = None
        self.started_at = -np.inf
        self.needs_at = -np.inf

    def dischargeable_kwh(self, efficiency: float) -> float:
        """Energy the EV may still give back, kWh on its battery side: what it declared above the bottom of
        its V2X range (``-evMinV2XEnergyRequest``), moved by the net energy since (charged energy at
        ``efficiency``, discharged energy over it); without that declaration only what it received in
        this transaction."""
        ev = self.v2x
        if ev is None or ev.min_v2x_energy_wh is None:
            return max(0.0, self.delivered_kwh) * efficiency
        return max(0.0, -ev.min_v2x_energy_wh / 1000.0 + self._moved_since_declared(efficiency))

    def room_kwh(self, efficiency: float) -> float | None:
        """Energy the EV may still take before it is full, kWh on its battery side: what it declared to its
        maximum state of charge (``evMaxEnergyRequest``), less the net energy since; None where it declared
        none (its room is then its need, as the environment counts an EV of unknown battery). An EV with a
        known battery takes more than its request where the plan gives it (the rule-based DLM's top-up,
        a V2G EV charged for the expensive hours), in the environment and live alike."""
        ev = self.v2x
        if ev is None or ev.max_energy_wh is None:
            return None
        return max(0.0, ev.max_energy_wh / 1000.0 - self._moved_since_declared(efficiency))

    def _moved_since_declared(self, efficiency: float) -> float:
        """Net energy into the EV's battery since it declared its V2X energies, kWh (charged energy at
        ``efficiency``, discharged energy over it)."""
        net = (self.meter_last_wh - self.meter_start_wh) / 1000.0 - self.exported_kwh
        delta = net - self.v2x_declared_net_kwh
        return delta * efficiency if delta > 0 else delta / efficiency


@dataclass
class StationLive:
    id: str
    connectors: dict[int, ConnectorLive]
    ocpp_version: str | None = None
    connected: bool = False
    booted: bool = False
    vendor: str | None = None
    model: str | None = None
    registered: bool = False
    """registered on its current connection (BootNotification answered Accepted, or another request)"""
    failsafe: str | None = None
    """profile purpose the station holds as its failsafe (None until it accepted one on this connection)"""
    failsafe_attempts: int = 0
    """failsafe installations tried on the current connection (retried with backoff until accepted)"""
    last_seen: float = -np.inf
    operation_modes: tuple[str, ...] | None = None
    """2.1: the V2X operation modes the station reported (None until asked)"""
    clock_ahead_s: float = 0.0
    """how far its clock has shown itself ahead of ours, s (a reading stamped after it arrived)"""


@dataclass
class SiteMeterReading:
    import_kw: float
    pv_kw: float | None
    at: float
    """monotonic time it arrived"""
    taken_from: float | None = None
    """the earliest monotonic time it may have been taken (:mod:`serving.taken`); None: the reading slack
    before ``at``"""

    def earliest(self, cfg: ServingConfig) -> float:
        """The earliest monotonic time the reading may have been taken."""
        return self.at - reading_slack_s(cfg) if self.taken_from is None else self.taken_from


@dataclass
class LiveSite:
    """Everything the service knows now; one per service."""

    site: SiteArrays
    stations: dict[str, StationLive]
    connectors: list[ConnectorLive]
    """in site charger order"""
    meter: SiteMeterReading | None = None
    site_meter_fault: str | None = None
    """kind of the last implausible site meter reading, None once one is plausible"""
    meter_clock_ahead_s: float = 0.0
    """how far the site meter's clock has shown itself ahead of ours, s (:mod:`serving.taken`)"""
    peak_import_kw: float = 0.0
    base_settled_kw: float | None = None  # the last base load read in a narrow bracket (serving.base_ahead)
    by_tx: dict[tuple[str, str], ConnectorLive] = field(default_factory=dict)
    needs_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    """set when an EV's needs arrive (:mod:`serving.needs`: a held transaction is decided again)"""

    @classmethod
    def build(cls, site: SiteArrays, mapping: dict[tuple[str, int], str], station_ids: list[str]) -> LiveSite:
        index = {cid: i for i, cid in enumerate(site.charger_ids)}
        conns: list[ConnectorLive | None] = [None] * site.n
        stations = {sid: StationLive(sid, {}) for sid in station_ids}
        for (sid, k), cid in mapping.items():
            c = ConnectorLive(charger_id=cid, station_id=sid, connector_id=k, index=index[cid])
            conns[index[cid]] = c
            stations[sid].connectors[k] = c
        missing = [site.charger_ids[i] for i, c in enumerate(conns) if c is None]
        out = [c for c in conns if c is not None]
        if missing:
            # chargers no station serves are simply never active
            for cid in missing:
                out.insert(index[cid], ConnectorLive(cid, "", 0, index[cid]))
        return cls(site=site, stations=stations, connectors=out)

    def connector(self, station_id: str, connector_id: int) -> ConnectorLive | None:
        st = self.stations.get(station_id)
        return None if st is None else st.connectors.get(connector_id)

    def active_mask(self) -> np.ndarray:
        return np.array([c.active for c in self.connectors], dtype=bool)

    def measured_kw(self, now: float, max_age_s: float) -> FloatArray:
        """(n,) last measured power of each active connector (NaN where unknown or too old)."""
        out = np.full(self.site.n, np.nan)
        for c in self.connectors:
            if c.active and c.power_kw is not None and now - c.power_at <= max_age_s:
                out[c.index] = c.power_kw
        return out


@dataclass(frozen=True)
class SnapshotInfo:
    """What :func:`build_snapshot` assumed, for the decision log."""

    meter_stale: bool
    site_import_kw: float | None
    """measured net import (None without a fresh meter)"""
    base_load_kw: float
    """non-EV load used in the snapshot, kW (including the closed-loop correction)"""
    pv_kw: float
    offender_overdraw_kw: float
    measured_base_load_kw: float | None = None
    """base load measured this cycle (import + PV - measured chargers), None without a fresh site meter"""
    measured_pv_kw: float | None = None
    """PV the site meter reported this cycle (None where it reports none or is stale)"""
    forecast_source: str = "flat"
    """where the window's future came from: ``flat`` (no forecast configured), ``model`` or ``persistence``"""
    battery_present: bool = False
    """the site battery may be used this cycle (a fresh reading over a working link)"""
    base_load_low_kw: float | None = None
    """the lowest base load the site meter allows (readings straddling a change), None without one"""
    draws: DrawsAtMeter | None = None
    """the chargers' and the battery's draws taken off the site meter's reading, None without a fresh one"""


def _v2x_bounds(site: SiteArrays, c: ConnectorLive) -> tuple[float, float]:
    """``(discharge max kW, dischargeable kWh)`` of a transaction allowed to discharge: the charger's
    discharge rating and the EV's declared discharge power (or current), and what it may give back."""
    i = c.index
    cap = float(site.max_discharge_kw[i])
    ev = c.v2x
    if ev is not None and ev.max_discharge_w is not None:
        cap = min(cap, ev.max_discharge_w / 1000.0)
    elif ev is not None and ev.max_discharge_a is not None:
        cap = min(cap, ev.max_discharge_a * float(site.kw_per_a[i]))
    return max(cap, 0.0), c.dischargeable_kwh(float(site.efficiency[i]))


def step_start(utc: datetime, cfg: ServingConfig) -> datetime:
    """The time a cycle at ``utc`` decides from: with cycles on the UTC clock's grid (``cycle_phase_s``),
    the start of the step it is in (the last multiple of ``control_interval_s``), else ``utc`` itself. A
    cycle runs ``cycle_phase_s`` into its step but decides the step, as the environment's policy does:
    from the cycle itself every policy counting whole steps left planned one step fewer than it has."""
    if cfg.cycle_phase_s is None:
        return utc
    into_us = (utc - EPOCH) // timedelta(microseconds=1) % round(cfg.control_interval_s * 1e6)
    return utc - timedelta(microseconds=into_us)  # in whole microseconds: exactly on the grid


def moved_since_reading_kwh(c: ConnectorLive, efficiency: float, until: float, time_scale: float) -> float:
    """The energy the EV's battery took (+) or gave (-) from the last register reading of ``c`` to
    monotonic ``until`` (before the reading: minus what it took from ``until`` to it), kWh on its battery
    side: a station's MeterValues come every few seconds, at a phase of its own, and the step's snapshot
    is of its start (:func:`step_start`). Estimated at the reading's power up to the first limit that
    took effect since (:attr:`ConnectorLive.limit_log`), at each limit in force after that (a charge at
    most the EV's declared maximum). 0 without a reading of the power and the register in this
    transaction, or while its meter is implausible."""
    if c.power_kw is None or not np.isfinite(c.register_at) or c.register_at < c.started_at:
        return 0.0
    if c.meter_fault is not None:
        return 0.0
    lo, hi = sorted((c.register_at, until))
    log = list(c.limit_log)
    cuts = [lo, *(at for at, _ in log if lo < at < hi), hi]
    forward = until >= c.register_at
    total = 0.0
    for j in range(len(cuts) - 1):
        next_to_reading = j == 0 if forward else j == len(cuts) - 2
        in_force = [kw for at, kw in log if at <= cuts[j]]
        kw = c.power_kw if next_to_reading or not in_force else in_force[-1]
        if not next_to_reading and kw > 0 and c.ev_max_kw is not None:
            kw = min(kw, c.ev_max_kw)
        hours = (cuts[j + 1] - cuts[j]) * time_scale / 3600.0
        total += kw * hours * (efficiency if kw > 0 else 1.0 / efficiency)
    return total if forward else -total


def build_snapshot(
    live: LiveSite,
    cfg: ServingConfig,
    cycle: int,
    cap_kw: FloatArray,
    now_mono: float | None = None,
    now_utc: datetime | None = None,
    correction_kw: float = 0.0,
    forecast: LiveForecast | None = None,
    battery: BatteryStatus | None = None,
    held: BoolArray | None = None,
    lag_s: float = 0.0,
) -> tuple[Snapshot, SnapshotInfo]:
    """Freeze the live state into a :class:`Snapshot`; ``held`` (n,) transactions are no EV of it
    (:mod:`serving.needs`), their measured draw charger load all the same. With cycles on the grid
    (``cycle_phase_s``) the EVs' energies are estimated at ``lag_s`` from now, when the decision's profiles
    are expected in force (:attr:`serving.dispatch.Dispatcher.lag_s`), at the limits in force until then.

    Base load is estimated from the site meter as ``import + pv - sum(measured chargers)``, plus
    ``correction_kw``: the load the last allocation did not explain (chargers drawing more than their
    limit, measured at the site meter), so the next allocation takes the excess off the others. Without a
    fresh meter (older than ``meter_timeout_s``) the base load is the configured reserve and
    ``meter_stale`` is set. ``cap_kw`` (n,) caps what each EV can take (e.g. the station's failsafe
    maximum profile). The overdraw of flagged offenders is reported in the info.

    Without ``forecast`` the window is ``forecast_horizon_steps`` control intervals of the current base
    load, PV and the flat configured prices; with it, the window and the prices now come from
    :meth:`serving.forecast.LiveForecast.window` (the cached model forecast shifted to now, on the control
    grid, and the tariff series).

    ``battery``: the site battery's status (:mod:`serving.battery`). Present, its SoC is the snapshot's
    and its measured power is taken off the meter's import when the base load is estimated (it is no
    base load). Absent (no link, stale, or none configured) the snapshot has no battery capacity (SoC at
    the site's minimum) and nothing is taken off: whatever it still draws is base load for the meter.
    """
    site = live.site
    mono = time.monotonic() if now_mono is None else now_mono
    now_utc = datetime.now(UTC) if now_utc is None else now_utc
    utc = step_start(now_utc, cfg)
    # on the grid the EVs' energies are taken to when the decision takes effect, ``lag_s`` from now (None:
    # as last read): until its profile is accepted a charger draws its old limit, and at 1,000 stations
    # a step's profiles took about a second, the EVs charging on into the expensive window for 1.5 s and
    # the discharge decided on needs 1.8 kWh above what they then had. An EV leaving within the step is
    # taken at the step's start: its decision covers less than the step, and counting the lag's energy
    # too left 133 of 1,000 EVs up to 5 Wh short (no later step makes it up)
    step_mono = mono - (now_utc - utc).total_seconds()
    effect_mono = None if cfg.cycle_phase_s is None else mono + max(lag_s, 0.0)
    n = site.n
    active = live.active_mask()  # a Python loop over every connector: once a cycle
    present = active if held is None else active & ~held
    measured = live.measured_kw(mono, cfg.station_meter_timeout_s)
    ev_max = np.full(n, np.inf)
    dis_max = np.zeros(n)
    dischargeable = np.zeros(n)
    need = np.zeros(n)
    room = np.zeros(n)
    time_left = np.zeros(n)
    scale = cfg.time_scale
    dt_h = cfg.control_interval_s * scale / 3600.0
    """one control interval in the stations' hours (``time_scale`` > 1 against an accelerated simulator)"""
    overdraw = 0.0
    for c in live.connectors:
        if not present[c.index]:
            continue
        i = c.index
        if c.ev_max_kw is not None and c.ev_max_kw > 0:
            ev_max[i] = c.ev_max_kw
        asked = c.energy_asked_kwh if c.energy_asked_kwh is not None else cfg.default_session_energy_kwh
        eff = float(site.efficiency[i])
        if c.departure is not None:
            time_left[i] = max((c.departure - utc).total_seconds() * scale / 3600.0, 0.0)
        else:
            start = c.tx_start or utc
            stay_h = max((utc - start).total_seconds(), 0.0) * scale / 3600.0
            time_left[i] = max(cfg.default_dwell_h - stay_h, dt_h)
        moved = 0.0
        if effect_mono is not None:  # an EV leaving within the step: at the step's start (above)
            until = step_mono if time_left[i] <= dt_h + 1e-12 else effect_mono
            moved = moved_since_reading_kwh(c, eff, until, scale)
        need[i] = max(0.0, asked - c.received_kwh(eff) - moved)
        declared_room = c.room_kwh(eff)
        room[i] = need[i] if declared_room is None else max(need[i], declared_room - moved)
        if c.discharging and not c.offender:
            dis_max[i], dischargeable[i] = _v2x_bounds(site, c)
            dischargeable[i] = max(dischargeable[i] + moved, 0.0)
        if c.offender and c.limit_kw is not None and np.isfinite(measured[i]):
            overdraw += max(0.0, float(measured[i]) - c.limit_kw)
    ev_max = np.minimum(ev_max, cap_kw)
    if np.any(active & ~np.isfinite(measured)):
        # a charger whose draw is not measured yet makes the base load (import - measured chargers) an
        # over-estimate: safe for the import limit, not for the export limit; no EV discharges meanwhile
        dis_max[:] = 0.0
    meter = live.meter
    source_none = cfg.meter.source == "none"
    fresh = meter is not None and mono - meter.at <= cfg.meter_timeout_s
    measured_sum = float(np.nansum(np.where(active, measured, 0.0)))
    battery_on = battery is not None and battery.present and site.has_battery
    battery_kw = float(battery.power_kw or 0.0) if battery is not None and battery_on else 0.0
    soc_kwh = site.battery_soc_min_kwh
    if battery is not None and battery_on and battery.soc_frac is not None:
        soc_kwh = battery.soc_frac * site.battery_capacity_kwh
    measured_base: float | None = None
    measured_pv: float | None = None
    then: DrawsAtMeter | None = None
    base_low: float | None = None
    if source_none:
        pv = 0.0
        base = cfg.assumed_base_load_kw
        site_import: float | None = base + measured_sum + battery_kw
        stale = False
    elif fresh:
        assert meter is not None
        pv = meter.pv_kw or 0.0
        then = draws_at_meter(live, measured, meter, cfg, battery if battery_on else None)
        base = max(0.0, meter.import_kw + pv - then.chargers_kw - then.battery_kw)
        base_low = max(0.0, meter.import_kw + pv - then.chargers_high_kw - then.battery_high_kw)
        site_import = meter.import_kw
        stale = False
        measured_base, measured_pv = base, meter.pv_kw
    else:
        pv = 0.0
        base = cfg.failsafe_base_load_kw
        site_import = None
        stale = True
    correction, tol = max(correction_kw, 0.0), max(1.0, 0.005 * site.import_limit_kw)
    base_eff = base + correction
    ahead, live.base_settled_kw = base_ahead_kw(live.base_settled_kw, base, base_low, tol)
    ahead += correction
    state = SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(present, ev_max, 0.0),
        ev_max_discharge_kw=np.where(present, dis_max, 0.0),
        energy_needed_kwh=need,
        energy_room_kwh=room,
        energy_dischargeable_kwh=np.where(present, dischargeable, 0.0),
        time_left_h=time_left,
        base_load_kw=base_eff,
        pv_kw=pv,
        dt_h=dt_h,
        battery_soc_kwh=soc_kwh,
    )
    if forecast is None:
        h = cfg.forecast_horizon_steps
        window = ForecastWindow(
            base_load_kw=np.r_[base_eff, np.full(h - 1, ahead)],
            pv_kw=np.full(h, pv),
            import_price_per_kwh=np.full(h, cfg.import_price_per_kwh),
            export_price_per_kwh=np.full(h, cfg.export_price_per_kwh),
        )
        source = "flat"
    else:
        window, source = forecast.window(utc, base_eff, pv, ahead)
    import_price, export_price = float(window.import_price_per_kwh[0]), float(window.export_price_per_kwh[0])
    if site_import is not None:
        live.peak_import_kw = max(live.peak_import_kw, site_import)
    snap = Snapshot(
        state=state,
        timestamp=np.datetime64(utc.replace(tzinfo=None), "s"),
        step_index=cycle,
        import_price_per_kwh=import_price,
        export_price_per_kwh=export_price,
        forecast=window,
        peak_import_kw=live.peak_import_kw,
        battery_kw_last=battery_kw,
    )
    info = SnapshotInfo(
        stale, site_import, base_eff, pv, overdraw, measured_base, measured_pv, source, battery_on, base_low,
        then,
    )  # fmt: skip
    return snap, info
