"""The site loop: every ``control_interval_s`` read -> decide -> write, then record.

:meth:`SiteLoop.run_cycle` is the whole cycle on one screen. **Read** freezes the live state into a
:class:`~envs.core.Snapshot` (offenders flagged, their draw taken as given, the closed-loop correction
applied, the forecast fed, the site battery's status taken). **Decide** is
:meth:`serving.control.Controller.decide` (policy within its budget, else the fallback, always
projected). **Write** picks the limits worth sending (deadband, and any decrease where keeping the old
limits would not be feasible) and hands them to the :class:`~serving.dispatch.Dispatcher`, and the
projected battery setpoint to the :class:`~serving.battery.ModbusBattery` (idle while it is absent).
**Record** counts, logs and persists the decision and publishes the state. The loop owns no connection
and parses no protocol.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

from envs.core import BoolArray, FloatArray, Snapshot
from serving.at_meter import draws_at_meter
from serving.battery import BatteryStatus, ModbusBattery
from serving.config import ServingConfig
from serving.control import Controller, CycleOutcome, FixedLoad, keeps_feasible
from serving.dispatch import Dispatcher, PlanContext, select_updates
from serving.forecast import LiveForecast
from serving.gc_pause import collection_paused
from serving.journal import HISTORY_SOURCE, Journal, Publisher
from serving.live import LiveSite, SnapshotInfo, build_snapshot, step_start
from serving.metrics import Metrics
from serving.needs import awaiting_meter, awaiting_needs
from serving.plans import follow_plans, plans_moved, plans_step_away
from serving.step_decision import StepBasis, what_is_new
from serving.store import DecisionRecord, MeterSample
from serving.taken import reading_slack_s
from serving.violations import TOLERANCE_KW, Violation, site_cause

VIOLATIONS_KEPT = 20
"""attributed violations kept for the operator view"""
PLUGGED = frozenset({"Preparing", "Occupied"})
"""statuses of an idle connector with an EV plugged in and no transaction yet (1.6, 2.x)"""

LOG = logging.getLogger("evdlm.serving")


@dataclass
class CycleSummary:
    """The last cycle, as shown by the operator API."""

    cycle: int
    time: datetime
    outcome: CycleOutcome
    latency_ms: float
    site_import_kw: float | None
    base_load_kw: float
    pv_kw: float
    profiles_sent: int


@dataclass(frozen=True)
class Reading:
    """What one cycle read: the frozen snapshot, what it assumed, and the chargers taken as given."""

    snapshot: Snapshot
    info: SnapshotInfo
    fixed: FixedLoad
    drawable_kw: FloatArray | None = None
    """(n,) what each charger may draw before this cycle's profiles arrive: its last accepted limit, or
    its safe share where it has none (an idle charger may start a transaction at it); only with a battery"""
    battery_room_now_kw: float | None = None
    """the most the battery may charge judged on the site meter alone (None without a fresh one)"""
    read_at: float | None = None
    """monotonic time the limits in force were read (the stations' plans followed up to then)"""
    held: BoolArray | None = None
    """(n,) transactions held for their EV's needs (:mod:`serving.needs`): no EV of it, sent nothing"""


def arrival_reserve_kw(live: LiveSite, window_s: float, share_kw: FloatArray, now: float) -> FloatArray:
    """(n,) the draw kept free for idle chargers whose transaction may start before the next cycle:
    its failsafe share (``share_kw``: what it draws from its start until its first TxProfile arrives, at
    most its station's cap) for an idle charger with an EV plugged in (:data:`PLUGGED`), and for every
    idle charger while transactions are starting (one did within ``window_s`` before ``now``): EVs that
    arrive together (a fleet, a site coming back) reach the central system one station after another,
    and a cycle in their midst sees only the first. Without it those starting after the cycle draw their
    share on top of a plan that gave the others everything, until the next cycle."""
    conns = live.connectors
    idle = np.array([not c.active and c.station_id in live.stations for c in conns], dtype=bool)
    plugged = np.array([c.status in PLUGGED for c in conns], dtype=bool)
    starting = window_s > 0 and any(c.active and now - c.started_at <= window_s for c in conns)
    keep = idle & (plugged | starting)
    return np.where(keep, share_kw, 0.0)


def started_since_kw(
    live: LiveSite,
    since: float,
    share_kw: FloatArray,
    now: float,
    cfg: ServingConfig,
    held: BoolArray | None = None,
) -> float:
    """The draw of the transactions the central system learnt of after monotonic ``since`` (the last
    plan did not know them), kW: each one's measured power, or before its first reading its failsafe
    share (``share_kw``), the most it draws until its first TxProfile. Charger load, not load the plan
    failed to foresee: the snapshot takes it off the base load where measured and counts it in where not,
    and reserved again by the closed loop it took every EV's power for a cycle after EVs arrived
    together (the V2G benchmark: 50 EVs at their share, 248 kW of "correction", every limit 0). ``held``:
    transactions the last plan held for their EV's needs (:mod:`serving.needs`) count as not known."""
    measured = live.measured_kw(now, cfg.station_meter_timeout_s)
    out = 0.0
    for c in live.connectors:
        if c.active and (c.started_at > since or (held is not None and held[c.index])):
            out += float(measured[c.index]) if np.isfinite(measured[c.index]) else float(share_kw[c.index])
    return out


def flag_offenders(live: LiveSite, cfg: ServingConfig, metrics: Metrics, now: float) -> None:
    """Flag stations drawing more than their limit; a flag holds until a fresh reading clears it."""
    tol = cfg.offender_tolerance_kw
    grace = min(cfg.control_interval_s, 5.0)
    max_age = max(cfg.station_meter_timeout_s, cfg.control_interval_s)
    for c in live.connectors:
        if not c.active or c.limit_kw is None or c.power_kw is None or now - c.power_at > max_age:
            c.offender, c.offender_cycles = False, 0
            continue
        if c.power_at < c.limit_sent_at + grace:
            continue  # no reading since the last limit took effect: keep the verdict
        flagged = c.power_kw > c.limit_kw + 0.1 * abs(c.limit_kw) + tol  # signed: V2G limits < 0
        if flagged and not c.offender:
            LOG.warning("%s draws %.2f kW above its limit %.2f kW", c.charger_id, c.power_kw, c.limit_kw)
            metrics.inc("offenders_total")
            c.offender_since = now
        c.offender = flagged
        c.offender_cycles = c.offender_cycles + 1 if flagged else 0


def fixed_load(live: LiveSite) -> FixedLoad:
    """Flagged offenders with a fresh reading: their measured draw is taken as given this cycle."""
    n = live.site.n
    mask = np.zeros(n, dtype=bool)
    draw, hold = np.zeros(n), np.zeros(n)
    for c in live.connectors:
        if c.offender and c.active and c.power_kw is not None and c.limit_kw is not None:
            mask[c.index], draw[c.index], hold[c.index] = True, c.power_kw, c.limit_kw
    return FixedLoad(mask, draw, hold)


def drawable_kw(live: LiveSite, share_kw: FloatArray) -> FloatArray:
    """(n,) each charger's last limit, or its safe share (``share_kw``, at most its station's cap) where
    it has none; a flagged offender its measured draw where that is more."""
    out = np.array(share_kw, dtype=float)
    for c in live.connectors:
        if c.active and c.limit_kw is not None:
            out[c.index] = c.limit_kw
        if c.offender and c.power_kw is not None:
            out[c.index] = max(out[c.index], c.power_kw)
    return out


def battery_gauges(battery: ModbusBattery, metrics: Metrics, outcome: CycleOutcome) -> None:
    """The site battery's gauges after a cycle."""
    st = battery.status()
    metrics.set("battery_present", float(outcome.battery_present))
    metrics.set("battery_setpoint_kw", st.setpoint_kw)
    if st.soc_frac is not None and st.power_kw is not None:
        metrics.set("battery_soc_ratio", st.soc_frac)
        metrics.set("battery_power_kw", st.power_kw)


def count_phases(metrics: Metrics, start: float, read: float, decided: float, written: float) -> None:
    """Add a cycle's wall time by phase to ``loop_phase_seconds_total``: read (the snapshot), decide (the
    policy and the projection), write (the profiles, the battery's setpoint); ``perf_counter`` times."""
    spans = (("read", start, read), ("decide", read, decided), ("write", decided, written))
    for phase, since, until in spans:
        metrics.inc("loop_phase_seconds_total", until - since, phase=phase)


class SiteLoop:
    """One site's control cycle (one event loop; the policy runs on the controller's thread)."""

    def __init__(
        self,
        cfg: ServingConfig,
        live: LiveSite,
        controller: Controller,
        dispatcher: Dispatcher,
        journal: Journal,
        publisher: Publisher,
        metrics: Metrics,
        forecast: LiveForecast | None,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        battery: ModbusBattery | None = None,
    ) -> None:
        self.cfg = cfg
        self.battery = battery
        """the site battery over Modbus (read in :meth:`read`, commanded in :meth:`write`)"""
        self._spawn = spawn
        self.site = controller.site
        self.live = live
        self.controller = controller
        self.dispatcher = dispatcher
        self.journal = journal
        self.publisher = publisher
        self.metrics = metrics
        self.forecast = forecast
        self.cycle = 0
        self.correction_kw = 0.0
        """load the last plans did not foresee (closed loop on the site meter), reserved next cycle, kW"""
        self.last: CycleSummary | None = None
        self._last_cycle_mono = -np.inf
        self._last_other_kw: float | None = None
        """non-charger net load (import - chargers measured) when the last plan was made, kW"""
        self.read_at = -np.inf
        """monotonic time the last cycle read"""
        self._step: datetime | None = None
        """start of the step the last cycle decided (on the grid, ``cycle_phase_s``), None before"""
        self.basis: StepBasis | None = None
        """what the step's decision was made on (:mod:`serving.step_decision`), None before one"""
        self.held: BoolArray = np.zeros(self.site.n, dtype=bool)
        """(n,) the transactions the last cycle held for their EV's needs (:mod:`serving.needs`)"""
        self.violations: deque[Violation] = deque(maxlen=VIOLATIONS_KEPT)
        """the last limits exceeded, attributed (:mod:`serving.violations`)"""

    async def run_cycle(self, redecide: bool = False) -> CycleSummary:
        """One cycle; ``redecide``: the step of the last one again (:mod:`serving.needs`), same index."""
        t0, cpu0, policy0 = time.perf_counter(), time.thread_time(), self.controller.policy_cpu_s
        # the database thread waits (no writes in turns with the cycle); no garbage collection inside it
        with self.journal.store.held(), collection_paused():
            reading, t_read = self.read(redecide), time.perf_counter()
            outcome, t_decide = await self.decide(reading), time.perf_counter()
            sent = self.write(reading, outcome)
        count_phases(self.metrics, t0, t_read, t_decide, time.perf_counter())
        self.metrics.loop_cpu_s.observe(time.thread_time() - cpu0 + self.controller.policy_cpu_s - policy0)
        return self.record(reading, outcome, sent, time.perf_counter() - t0)

    # ------------------------------------------------------------------ read

    def read(self, redecide: bool = False) -> Reading:
        now, utc = time.monotonic(), datetime.now(UTC)
        self.read_at = now
        self.cycle += 1 if self._new_step(redecide, utc) else 0
        follow_plans(self.site, self.live.connectors, self.cfg.schedule_period_s, now)
        flag_offenders(self.live, self.cfg, self.metrics, now)
        fixed = fixed_load(self.live)
        cap_kw = self.dispatcher.cap_kw()
        share = np.minimum(self.dispatcher.failsafe_kw(), cap_kw)
        started = started_since_kw(self.live, self._last_cycle_mono, share, now, self.cfg, self.held)
        self._update_correction(fixed, started)
        if (held := awaiting_needs(self.live, now, self.cfg.needs_wait_s)).any():
            LOG.info("cycle %d: %d transaction(s) held for their EV's needs", self.cycle, int(held.sum()))
        if (unseen := awaiting_meter(self.live, self.cfg, now) & ~held).any():
            LOG.info("cycle %d: %d transaction(s) held for a meter reading", self.cycle, int(unseen.sum()))
        held = self.held = held | unseen
        battery = None
        if self.battery is not None:
            meter, slack = self.live.meter, reading_slack_s(self.cfg)
            if meter is None:
                battery = self.battery.status(now)
            else:  # its power as it may have been when the site meter read
                battery = self.battery.status(now, meter.earliest(self.cfg), meter.at + slack)
        snapshot, info = build_snapshot(
            self.live, self.cfg, self.cycle, cap_kw, now, utc, self.correction_kw, self.forecast, battery,
            held, self.dispatcher.lag_s,
        )  # fmt: skip
        if self.forecast is not None:
            done = self.forecast.observe(utc, info.measured_base_load_kw, info.measured_pv_kw)
            if done is not None:
                sample = MeterSample(done.start, HISTORY_SOURCE, None, done.base_load_kw, None, done.pv_kw)
                self.journal.sample(sample)
            self.metrics.inc("forecast_cycles_total", source=info.forecast_source)
        reserve = arrival_reserve_kw(self.live, self._arrival_window_s(), share, now)
        drawable = drawable_kw(self.live, share)
        fixed = fixed.reserving(np.where(held, drawable, reserve))  # a held one draws its share meanwhile
        if self.battery is None:
            return Reading(snapshot, info, fixed, read_at=now, held=held)
        room = self._battery_room_now(info, drawable, now, battery)
        return Reading(snapshot, info, fixed, drawable, room, now, held)

    def _new_step(self, redecide: bool, utc: datetime) -> bool:
        """Whether this cycle decides a new step (the policy's step index moves on): on the grid
        (``cycle_phase_s``), when its step's start differs from the last cycle's (a step decided again
        for needs that arrived early in the next step is that step's first decision, and its regular
        cycle then decides it again); off the grid, unless ``redecide``."""
        if self.cfg.cycle_phase_s is None:
            return not redecide
        step = step_start(utc, self.cfg)
        new, self._step = step != self._step, step
        return new

    def _battery_room_now(
        self, info: SnapshotInfo, drawable: FloatArray, now: float, battery: BatteryStatus | None
    ) -> float | None:
        """The import limit less the base load the site meter shows (its import less the chargers' and
        the battery's power as they were when it read: :func:`serving.at_meter.draws_at_meter`, erring low),
        less what every charger may draw (the larger of its drawable power and its measured draw): a
        bound on the battery's charging with no closed-loop correction and no forecast in it, so no
        measurement older or newer than the site meter's can make room that is not there."""
        meter = self.live.meter
        if info.site_import_kw is None or not info.battery_present or meter is None:
            return None
        measured = self.live.measured_kw(now, self.cfg.station_meter_timeout_s)
        # the snapshot found them where its meter was fresh (not with no meter source configured)
        then = info.draws or draws_at_meter(self.live, measured, meter, self.cfg, battery)
        measured = np.where(np.isfinite(measured), measured, 0.0)
        # each charger may draw the larger of its drawable power and its measured draw (V2G: as if it stops)
        may_draw = float(np.sum(np.maximum(np.maximum(drawable, 0.0), measured)))
        base_then = info.site_import_kw - then.battery_kw - then.chargers_kw
        return float(self.site.import_limit_kw - base_then - may_draw)

    def _arrival_window_s(self) -> float:
        """How soon after a transaction's start a cycle keeps the idle chargers' share free: within
        ``arrival_reserve_s`` and since the cycle before (the cycle after sees the transactions)."""
        return min(self.cfg.arrival_reserve_s, self.cfg.control_interval_s)

    def _update_correction(self, fixed: FixedLoad, started_kw: float) -> None:
        """Closed loop on the site meter: load the last plan did not foresee is reserved next cycle.

        ``correction += measured import - planned import`` (never below 0): a load that appeared, or a
        station drawing more than its limit before it is flagged, is taken off the others in the next
        cycle; it decays as soon as the site draws less than planned. The draw of ``fixed`` chargers is
        reserved on its own (on every node it loads), so the part of the error they explain (their
        measured draw minus what the last plan assumed for them) is left out here, and so is
        ``started_kw``, the draw of transactions the last plan did not know (:func:`started_since_kw`).
        """
        meter, last = self.live.meter, self.last
        if meter is None or last is None or time.monotonic() - meter.at > self.cfg.meter_timeout_s:
            return
        if meter.earliest(self.cfg) <= self._plan_in_force_at():
            return  # no reading since the last plan took effect: its error says nothing about the plan
        explained = float(np.sum((fixed.draw_kw - last.outcome.assumed_kw)[fixed.mask]))
        error = meter.import_kw - last.outcome.planned_import_kw - explained - started_kw
        self.correction_kw = max(0.0, self.correction_kw + error)

    def _plan_in_force_at(self) -> float:
        """Monotonic time from which the site meter shows the last plan: its profiles answered (inf while
        on their way), the battery's setpoint written. A reading before shows the old limits and power."""
        if self.dispatcher.in_flight:
            return np.inf
        battery_at = -np.inf if self.battery is None else self.battery.written_at
        return max(self._last_cycle_mono, self.dispatcher.settled_at, battery_at)

    # ------------------------------------------------------------------ decide

    async def decide(self, reading: Reading) -> CycleOutcome:
        """The step's decision: the policy's on a new step or an event, else the step's plan re-projected
        on this cycle's snapshot (:mod:`serving.step_decision`); projected either way."""
        info, snap = reading.info, reading.snapshot
        why = what_is_new(self.basis, snap, self.live, self.site, info.meter_stale)
        outcome = await self.controller.decide(
            snap, info.meter_stale, reading.fixed, battery_present=info.battery_present,
            drawable_kw=reading.drawable_kw, battery_room_kw=reading.battery_room_now_kw,
            base_low_kw=info.base_load_low_kw, hold=why is None,
        )  # fmt: skip
        self.metrics.inc("step_decisions_total", reason=why or "held")
        if why is not None:
            by_policy = outcome.fallback_reason is None
            read_at = self.read_at if reading.read_at is None else reading.read_at
            self.basis = StepBasis.of(snap, self.live, self.site, read_at, info.meter_stale, by_policy)
        if outcome.fallback_reason is not None:
            self.metrics.inc("fallbacks_total", reason=outcome.fallback_reason)
        if info.meter_stale:
            self.metrics.inc("stale_meter_cycles_total")
        if self.battery is not None and not info.battery_present:
            self.metrics.inc("battery_absent_cycles_total")
        return outcome

    # ------------------------------------------------------------------ write

    def write(self, reading: Reading, outcome: CycleOutcome) -> int:
        """Send the limits that moved (or must go down); returns how many profiles were queued."""
        state, fixed, ctl = reading.snapshot.state, reading.fixed, self.controller
        charge_kw = max(outcome.battery_kw, 0.0)

        def feasible(kept_kw: FloatArray) -> bool:
            return keeps_feasible(ctl.site_no_battery, ctl.plan_no_battery, state, kept_kw, fixed, charge_kw)

        sent_values = [c.limit_value for c in self.live.connectors]
        active = self.live.active_mask() if reading.held is None else self.live.active_mask() & ~reading.held
        updates = select_updates(
            self.site, state, outcome.limits_kw, sent_values, active, self.cfg.deadband_a,
            self.cfg.deadband_w, feasible,
        )  # fmt: skip
        if (schedule := outcome.schedule_kw) is not None:
            moved = plans_moved(self.site, self.live.connectors, self.cfg, schedule, updates)
            away = plans_step_away(
                self.site, self.live.connectors, self.cfg, outcome.limits_kw, time.monotonic(),
                reading.read_at,
            )  # fmt: skip
            updates = sorted(set(updates) | set(moved) | set(away))
        plan = PlanContext.of(outcome.assumed_kw, outcome.planned_import_kw)
        sent = self.dispatcher.send(outcome.limits_kw, updates, schedule, self.cfg.schedule_period_s, plan)
        if self.battery is not None:
            self.battery.command(self._battery_setpoint(outcome))
        return sent

    def _battery_setpoint(self, outcome: CycleOutcome) -> float:
        """The setpoint to write (kW, + charge): the projected one (0 while the battery is absent), except
        that an increase of the site's import (more charge, less discharge) waits while charger profiles
        are on their way, as a charger's increase waits for the decreases: the battery goes no higher than
        it is this cycle, so the site is never over a limit in between."""
        assert self.battery is not None
        kw = outcome.battery_kw
        if outcome.battery_present and self.dispatcher.in_flight:
            held = min(kw, self.battery.status().setpoint_kw)
            if held < kw:
                self.metrics.inc("battery_increases_held_total")
            return held
        return kw

    # ------------------------------------------------------------------ record

    def record(self, reading: Reading, outcome: CycleOutcome, sent: int, latency_s: float) -> CycleSummary:
        info = reading.info
        self._last_cycle_mono = time.monotonic()
        self.metrics.loop_latency_s.observe(latency_s)
        self.metrics.inc("cycles_total")
        limit = self.site.import_limit_kw
        last_planned = None if self.last is None else self.last.outcome.planned_import_kw
        self._attribute(info.site_import_kw, last_planned)
        self.metrics.set("import_limit_kw", limit)
        if self.battery is not None:
            battery_gauges(self.battery, self.metrics, outcome)
        latency_ms = latency_s * 1000.0
        self.last = CycleSummary(
            self.cycle, datetime.now(UTC), outcome, latency_ms, info.site_import_kw, info.base_load_kw,
            info.pv_kw, sent,
        )  # fmt: skip
        record = DecisionRecord(
            time=self.last.time,
            cycle=self.cycle,
            policy=outcome.policy,
            fallback_reason=outcome.fallback_reason,
            meter_stale=info.meter_stale,
            site_import_kw=info.site_import_kw,
            planned_import_kw=outcome.planned_import_kw,
            import_limit_kw=limit,
            latency_ms=latency_ms,
            active=int(self.live.active_mask().sum()),
            profiles_sent=sent,
            limits_kw={
                c.charger_id: round(float(outcome.limits_kw[c.index]), 3)
                for c in self.live.connectors
                if c.active
            },
            offenders=tuple(c.charger_id for c in self.live.connectors if c.offender),
        )
        self._spawn(self.journal.persist(record))
        self.publisher.publish()
        return self.last

    def _attribute(self, site_import_kw: float | None, last_planned_import_kw: float | None) -> None:
        """Count and keep every limit exceeded at this cycle's reading, with its cause."""
        site = self.site
        measured = self.live.measured_kw(time.monotonic(), self.cfg.station_meter_timeout_s)
        measured0 = np.where(np.isfinite(measured), measured, 0.0)
        now = datetime.now(UTC)
        found: list[Violation] = []
        if site_import_kw is not None:
            chargers_kw = float(measured0.sum())
            cause = site_cause(
                site_import_kw, site.import_limit_kw, chargers_kw, self._last_other_kw, last_planned_import_kw
            )
            if cause is not None:
                excess = site_import_kw - site.import_limit_kw
                found.append(Violation(now, "site", site.import_limit_kw, site_import_kw, excess, cause))
            self._last_other_kw = site_import_kw - chargers_kw
        node_kw = np.abs(site.node_power_kw(measured0))
        for j in np.flatnonzero(node_kw > site.node_limit_kw + TOLERANCE_KW):
            lim, kw = float(site.node_limit_kw[j]), float(node_kw[j])
            found.append(Violation(now, str(site.node_ids[j]), lim, kw, kw - lim, "controllable"))
        for v in found:
            self.metrics.inc("violations_total", limit="site" if v.limit == "site" else "node", cause=v.cause)
            self.violations.append(v)
            LOG.warning(
                "%s %.2f kW above its limit %.2f kW by %.2f kW (%s)", v.limit, v.measured_kw, v.limit_kw,
                v.excess_kw, v.cause,
            )  # fmt: skip
