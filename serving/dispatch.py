"""Writing limits to the stations: the failsafe, the deadband, decreases before increases, units.

:class:`Dispatcher` holds the open station connections and is the only writer of charging profiles. It
sends a station nothing before the station is registered on its connection (its BootNotification
answered Accepted, or another request received: :class:`serving.csms._Robust`); right then it installs
the failsafe at the static safe share (``ChargePointMaxProfile`` / ``ChargingStationMaxProfile``,
per-connector ``TxDefaultProfile`` where refused), retried with exponential backoff until one is
accepted. Where the static share starves a charger (below its minimum current), the failsafe is the
site's rotation (:mod:`envs.rotation`) instead: a ``Recurring`` ``Daily`` profile whose periods are the
rotation's, so the station keeps taking turns without the central system. A transaction that starts
while its station holds no failsafe gets a ``TxProfile`` at its failsafe value now at once, when its
start is answered (not at the next cycle). Each cycle
:func:`select_updates` picks the limits worth sending (outside the deadband, or any decrease where the
limits kept would not be feasible) and :meth:`Dispatcher.send` writes them: every decrease first, the
increases only once every decrease was accepted, so no limit is exceeded in between. kW become each
charger's profile unit through :mod:`envs.share` (A per phase or W, one decimal, rounded down).
A TxProfile that moved a limit is followed by a request for a reading (:mod:`serving.calls`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays, SiteState
from envs.projection import ProjectionPlan
from envs.rotation import Rotation
from envs.share import (
    amps_mask,
    kw_to_profile,
    kw_to_profile_at,
    kw_to_profile_one,
    profile_to_kw,
    profile_to_kw_at,
    profile_to_kw_one,
)
from serving.calls import MeterTriggers, call_profile
from serving.control import keeps_feasible
from serving.csms import Station
from serving.failsafe_profiles import failsafe_requests
from serving.hold import (
    hold_for_unsent,
    hold_rows,
    mark_pending,
    row_limits_kw,
    split_updates,
)
from serving.live import ConnectorLive, LiveSite, StationLive
from serving.metrics import Metrics
from serving.order import import_binds, plan_range, stages
from serving.profiles import Purpose, set_charging_profile
from serving.release import note_held, send_released, without_held
from serving.schedule import period_starts

LOG = logging.getLogger("evdlm.serving")

FailsafeMode = Literal["max", "tx_default"]
FAILSAFE_RETRY_MAX_S = 60.0
"""longest wait between two failsafe attempts"""
STEP_HORIZON_S = 2.0
"""a station whose plan steps into another period within this many s of a batch (before or after) may be
in either while the batch is on its way: its stages count both"""
Writes1 = list[tuple[ConnectorLive, float, FloatArray | None]]
"""one station's connectors to write, their new limit, kW, and the plan (kW per period) or None"""
Writes = dict[str, Writes1]
"""per station id: the connectors to write, their new limit, kW, and the plan (kW per period) or None"""


Rounding = Literal["zero", "down", "up"]
"""how a kW limit becomes one decimal of its profile unit: toward 0 (never more charge and never more
discharge), down (never more import: where the import binds) or up (never more export: where the export
binds); :mod:`serving.order`"""


def signed_profile(site: SiteArrays, i: int, kw: float, rounding: Rounding = "zero") -> float:
    """kW -> charger ``i``'s profile unit (negative = discharge), one decimal, rounded as ``rounding``
    says, never past the charger's rating or its discharge power."""
    if rounding == "zero":
        value = kw_to_profile_one(site, i, abs(kw))
        return -value if kw < 0 else value
    top = kw_to_profile_one(site, i, float(site.rated_kw[i]))
    bottom = -kw_to_profile_one(site, i, float(site.max_discharge_kw[i]))
    raw = profile_value(site, i, kw) * 10.0
    tenths = math.floor(raw + 1e-9) if rounding == "down" else math.ceil(raw - 1e-9)
    return float(min(max(tenths / 10.0, bottom), top))


def signed_profile_row(site: SiteArrays, i: int, kw: FloatArray, rounding: Sequence[Rounding]) -> FloatArray:
    """:func:`signed_profile` of charger ``i`` for every value of ``kw`` (a plan's periods) at once, each
    rounded as ``rounding`` (one per value) says: the same values, in arrays (a batch of a thousand
    stations' schedules converted one period at a time cost most of a second of the event loop)."""
    kw = np.asarray(kw, dtype=float)
    how = np.asarray(rounding)
    toward_zero = kw_to_profile_at(site, i, np.abs(kw))
    toward_zero = np.where(kw < 0, -toward_zero, toward_zero)
    top = kw_to_profile_one(site, i, float(site.rated_kw[i]))
    bottom = -kw_to_profile_one(site, i, float(site.max_discharge_kw[i]))
    amps = site.config.chargers[i].rate_unit == "A"
    raw = (kw / float(site.kw_per_a[i]) if amps else kw * 1000.0) * 10.0
    tenths = np.where(how == "down", np.floor(raw + 1e-9), np.ceil(raw - 1e-9))
    return np.where(how == "zero", toward_zero, np.minimum(np.maximum(tenths / 10.0, bottom), top))


def profile_value(site: SiteArrays, i: int, kw: float) -> float:
    """kW -> charger ``i``'s profile unit (A per phase or W), signed and unrounded."""
    return kw / float(site.kw_per_a[i]) if site.config.chargers[i].rate_unit == "A" else kw * 1000.0


def signed_profiles(site: SiteArrays, kw: FloatArray, amps: BoolArray) -> FloatArray:
    """:func:`signed_profile` of every charger (``kw`` (n,)); identical to ``kw_to_profile`` for kW >= 0."""
    kw = np.asarray(kw, dtype=float)
    return np.asarray(np.sign(kw) * kw_to_profile(site, np.abs(kw), amps), dtype=float)


@dataclass(frozen=True)
class PlanContext:
    """What the plan of a cycle expects, for ordering and rounding its profiles (:mod:`serving.order`)."""

    assumed_kw: FloatArray
    """(n,) what the plan expects each charger to draw"""
    other_kw: float
    """the net load besides the chargers the plan expects (its import less ``assumed_kw``), kW"""

    @classmethod
    def of(cls, assumed_kw: FloatArray, planned_import_kw: float) -> PlanContext:
        """The context of a plan expecting ``assumed_kw`` (n,) and a net import of ``planned_import_kw``."""
        assumed = np.asarray(assumed_kw, dtype=float)
        return cls(assumed, float(planned_import_kw - assumed.sum()))

    def rounding(self, site: SiteArrays, schedule_kw: FloatArray | None) -> tuple[Rounding, ...]:
        """Per period of the plan (one without ``schedule_kw``): down where the import binds, else up."""
        totals = [float(np.sum(self.assumed_kw))]
        if schedule_kw is not None:
            totals += [float(x) for x in np.sum(np.asarray(schedule_kw, dtype=float), axis=0)[1:]]
        return tuple("down" if import_binds(site, self.other_kw + t) else "up" for t in totals)


LAG_WEIGHT = 0.05
"""weight of each accepted profile in :attr:`Dispatcher.lag_s`, the moving average of how long a profile
takes from its batch's start to its acceptance: until then its charger draws its old limit
(:func:`serving.live.build_snapshot`'s ``lag_s``)"""


@dataclass(frozen=True)
class Batch:
    """One cycle's profiles: one start for every schedule, the rounding of each period."""

    start_utc: datetime
    start_mono: float
    rounding: tuple[Rounding, ...]

    def rounding_at(self, k: int) -> Rounding:
        return self.rounding[min(k, len(self.rounding) - 1)]


def select_updates(
    site: SiteArrays,
    state: SiteState,
    new_kw: FloatArray,
    sent_value: list[float | None],
    active: BoolArray,
    deadband_a: float,
    deadband_w: float,
    feasible: Callable[[FloatArray], bool] | None = None,
    plan: ProjectionPlan | None = None,
) -> list[int]:
    """Indices of the chargers whose profile must be (re)sent this cycle.

    A limit is resent when it changed by more than the deadband (in its unit), was never sent, or - when
    keeping the old limits would not be feasible (``feasible``, by default :func:`serving.control.
    keeps_feasible` with ``plan`` where given) - whenever it goes down. Vectorised over the chargers.
    """
    amps = amps_mask(site)
    new_value = signed_profiles(site, np.asarray(new_kw, dtype=float), amps)
    old = np.array([np.nan if v is None else float(v) for v in sent_value])
    band = np.where(amps, deadband_a, deadband_w)
    active = np.asarray(active, dtype=bool)
    never = np.isnan(old)
    moved = active & (never | (np.abs(new_value - np.where(never, 0.0, old)) > band))
    old_kw = profile_to_kw(site, old, amps)
    kept = np.where(moved, new_kw, np.where(active & ~never, old_kw, 0.0))
    if feasible is None:
        plan_ = plan if plan is not None else ProjectionPlan.from_site(site)
        ok = keeps_feasible(site, plan_, state, kept)
    else:
        ok = feasible(kept)
    out = moved
    if not ok:
        out = moved | (active & ~never & (new_value < np.where(never, np.inf, old)))
    return [int(i) for i in np.flatnonzero(out)]


def stage_writes(
    site: SiteArrays,
    live: LiveSite,
    chosen: list[tuple[ConnectorLive, float]],
    limits_kw: FloatArray,
    schedule_kw: FloatArray | None,
    plan: PlanContext | None,
    period_s: float,
) -> tuple[list[Writes], list[FloatArray], tuple[Rounding, ...]]:
    """The profiles of one batch, stage by stage (:meth:`Dispatcher.send`), how far each charger's limit
    moves in each stage (kW, + up), and the rounding of each period. ``chosen``: the connectors to write
    and their limit now, kW."""
    idx = np.array([c.index for c, _ in chosen])
    new = np.asarray(limits_kw, dtype=float)
    base = new if plan is None else np.asarray(plan.assumed_kw, dtype=float)
    old = base.copy()
    old[idx] = [kw for _, kw in chosen]
    now_kw = base.copy()
    now_kw[idx] = new[idx]
    nan = np.full(site.n, np.nan)
    if plan is None:
        targets = [np.where(now_kw < old, now_kw, nan), np.where(now_kw > old, now_kw, nan)]
        rounding: tuple[Rounding, ...] = ("zero",)
    else:
        lo, hi = plan_ranges(live, old, period_s)
        movable = np.zeros(site.n, dtype=bool)
        movable[idx] = True
        targets = stages(site, lo, now_kw, plan.other_kw, old_hi_kw=hi, movable=movable)
        rounding = plan.rounding(site, schedule_kw)
    writes: list[Writes] = []
    changes: list[FloatArray] = []
    prev = old.copy()
    sent_any = np.zeros(site.n, dtype=bool)
    for k, target in enumerate(targets):
        stage: Writes = {}
        last = k == len(targets) - 1
        for c, _ in chosen:
            i = c.index
            if not np.isfinite(target[i]) and not (last and not sent_any[i]):
                continue  # not in this stage (one that never moves goes with the last: its plan)
            value = float(target[i]) if np.isfinite(target[i]) else float(now_kw[i])
            final = abs(value - now_kw[i]) <= 1e-9
            row = None if schedule_kw is None or not final else np.asarray(schedule_kw[i], dtype=float)
            stage.setdefault(c.station_id, []).append((c, value, row))
        step = np.where(np.isfinite(target), target, prev)
        if stage:
            writes.append(stage)
            changes.append(step - prev)
            for items in stage.values():
                for c, _, _ in items:
                    sent_any[c.index] = True
        prev = step
    return writes, changes, rounding


def plan_ranges(live: LiveSite, limit_kw: FloatArray, period_s: float) -> tuple[FloatArray, FloatArray]:
    """``(lo, hi)`` (n,): where each charger may be while a batch is on its way: its limit as the loop
    read it (``limit_kw``), and every period of its sent plan within :data:`STEP_HORIZON_S` of now, either
    way (a station steps on its own clock, and the loop read the period in force at the cycle's start)."""
    lo = np.asarray(limit_kw, dtype=float).copy()
    hi = lo.copy()
    now = time.monotonic()
    for c in live.connectors:
        if not c.active or c.plan_kw is None or len(c.plan_kw) < 2:
            continue
        near_lo, near_hi = plan_range(c.plan_kw, now - c.plan_start, period_s, STEP_HORIZON_S)
        lo[c.index] = min(lo[c.index], near_lo)
        hi[c.index] = max(hi[c.index], near_hi)
    return lo, hi


def tx_values(
    site: SiteArrays, i: int, kw: float, row: FloatArray | None, batch: Batch, period_s: float
) -> tuple[float, list[tuple[int, float]] | None]:
    """Charger ``i``'s TxProfile in its unit, rounded as ``batch`` says: its value now (for ``kw``) and,
    with a plan ``row`` (kW per period, the first replaced by ``kw``), the periods ``(start s, value)``."""
    if row is None or len(row) < 2:
        return signed_profile(site, i, kw, batch.rounding_at(0)), None
    kws = np.concatenate([[kw], np.asarray(row[1:], dtype=float)])
    values = signed_profile_row(site, i, kws, [batch.rounding_at(k) for k in range(len(kws))])
    return float(values[0]), list(zip(period_starts(len(values), period_s), values.tolist(), strict=True))


class Dispatcher:
    """The station connections and every charging profile written to them (one event loop)."""

    def __init__(
        self,
        site: SiteArrays,
        live: LiveSite,
        safe_share_kw: FloatArray,
        metrics: Metrics,
        failsafe_mode: FailsafeMode,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        failsafe_retry_s: float = 1.0,
        rotation: Rotation | None = None,
        trigger_meter: bool = True,
    ) -> None:
        self.site = site
        self.triggers = MeterTriggers(metrics, spawn, trigger_meter)
        self.live = live
        self.safe_share_kw = safe_share_kw
        self.rotation = rotation
        """the failsafe over the day where it rotates (None or one slot: ``safe_share_kw`` all day)"""
        self.metrics = metrics
        self.failsafe_mode: FailsafeMode = failsafe_mode
        self._spawn = spawn
        self.connections: dict[str, Station] = {}
        self._busy: set[str] = set()
        """stations with profiles on their way (a station gets one batch at a time)"""
        self.settled_at = -np.inf
        """monotonic time the last batch of profiles was answered (what a site meter reading taken
        before it shows is not yet the plan that batch carried)"""
        self.period_s = 900.0
        self.lag_s = 0.0  # from a batch's start to its profiles' acceptance, s (:data:`LAG_WEIGHT`)
        self.failsafe_retry_s = failsafe_retry_s
        """first wait before the failsafe is tried again; doubles up to :data:`FAILSAFE_RETRY_MAX_S`"""
        self._rows = hold_rows(site)
        self._row_limits_kw = row_limits_kw(site)
        self._failsafe_tasks: dict[str, asyncio.Task[Any]] = {}
        self.after_failsafe: Callable[[str, Station], Coroutine[Any, Any, None]] | None = None
        """run (spawned) once the failsafe's first attempt on a connection is answered, accepted or not
        (the service asks a 2.1 station for its V2X operation modes then)"""

    # ------------------------------------------------------------------ failsafe

    def failsafe_kw(self, now: datetime | None = None) -> FloatArray:
        """(n,) what each charger's failsafe allows at ``now`` (UTC, default now): the rotation's slot in
        force, or the static safe share."""
        if self.rotation is None:
            return self.safe_share_kw
        t = now or datetime.now(UTC)
        return self.rotation.kw_at(t.hour * 3600 + t.minute * 60 + t.second + t.microsecond * 1e-6)

    def _day_periods(self) -> list[tuple[int, FloatArray]]:
        """The failsafe over the UTC day, ``(start s, (n,) kW)``; one period where it does not rotate."""
        if self.rotation is None:
            return [(0, self.safe_share_kw)]
        return self.rotation.day_periods()

    async def install_failsafe(self, sid: str) -> str | None:
        """Install the failsafe profile on a station; returns the purpose accepted (None if none was)."""
        station = self.live.stations[sid]
        cp = self.connections.get(sid)
        if cp is None or not station.connectors:
            return None
        version = cp.version
        now = datetime.now(UTC)
        purposes: list[Purpose] = ["ChargePointMaxProfile", "TxDefaultProfile"]
        if self.failsafe_mode == "tx_default":
            purposes = ["TxDefaultProfile"]
        for purpose in purposes:
            reqs = failsafe_requests(self.site, self._day_periods(), version, station, purpose, now)
            ok = True
            for req in reqs:
                ok = ok and await call_profile(cp, req, purpose, self.metrics)
            if ok:
                station.failsafe = purpose
                LOG.info("station %s: failsafe %s installed", sid, purpose)
                if purpose == "ChargePointMaxProfile" and self._splits_unevenly(station):
                    await self._rotation_per_connector(cp, station, now)
                return purpose
        LOG.error("station %s refused every failsafe profile", sid)
        self.metrics.inc("failsafe_refused_total")
        return None

    def _splits_unevenly(self, station: StationLive) -> bool:
        """The failsafe rotates and the station has several connectors: a station-wide maximum alone could
        be split among them below their minimum current, so each connector also needs its own turn."""
        return self.rotation is not None and self.rotation.rotates and len(station.connectors) > 1

    async def _rotation_per_connector(self, cp: Station, station: StationLive, now: datetime) -> None:
        """Below the maximum profile, each connector's turn as a daily TxDefault profile (best effort:
        the maximum profile already keeps every limit; this only keeps a turn from being split)."""
        day = self._day_periods()
        for req in failsafe_requests(self.site, day, cp.version, station, "TxDefaultProfile", now):
            if not await call_profile(cp, req, "TxDefaultProfile", self.metrics):
                LOG.warning("station %s: a connector's failsafe turn (TxDefault) was refused", cp.id)
                self.metrics.inc("failsafe_turns_refused_total")

    def registered(self, sid: str) -> None:
        """The station is registered on its connection: install its failsafe now, until accepted."""
        cp = self.connections.get(sid)
        if cp is None:
            return
        old = self._failsafe_tasks.pop(sid, None)
        if old is not None:
            old.cancel()
        task = self._spawn(self.keep_failsafe(sid, cp))
        self._failsafe_tasks[sid] = task
        task.add_done_callback(
            lambda t: self._failsafe_tasks.pop(sid, None) if self._failsafe_tasks.get(sid) is t else None
        )

    async def keep_failsafe(self, sid: str, cp: Station) -> str | None:
        """Install the failsafe on ``cp`` and retry (``failsafe_retry_s``, doubling, at most
        :data:`FAILSAFE_RETRY_MAX_S`) while it is refused or unanswered and ``cp`` is the connection."""
        station = self.live.stations[sid]
        wait_s = self.failsafe_retry_s
        first = True
        while self.connections.get(sid) is cp and station.registered:
            station.failsafe_attempts += 1
            purpose = await self.install_failsafe(sid)
            if first and self.after_failsafe is not None and self.connections.get(sid) is cp:
                self._spawn(self.after_failsafe(sid, cp))
            first = False
            if purpose is not None:
                return purpose
            self.metrics.inc("failsafe_retries_total")
            await asyncio.sleep(wait_s)
            wait_s = min(2.0 * wait_s, FAILSAFE_RETRY_MAX_S)
        return None

    def transaction_answered(self, sid: str, k: int) -> None:
        """A transaction's start was answered: ask for its reading (:meth:`MeterTriggers.after_start`);
        where its station holds no failsafe yet, cover it now with a TxProfile at its safe share (the next
        cycle may raise it)."""
        c = self.live.connector(sid, k)
        station = self.live.stations.get(sid)
        if c is None or station is None or not c.active:
            return
        if (cp := self.connections.get(sid)) is not None:
            self.triggers.after_start(cp, c)
        if c.limit_value is not None:
            return
        if station.failsafe is not None or not station.registered or sid not in self.connections:
            return
        owned = sid not in self._busy  # an earlier batch in flight keeps the station busy itself
        self._busy.add(sid)
        self.metrics.inc("failsafe_tx_covers_total")

        async def cover() -> None:
            try:
                await self._send_tx_profiles(sid, [(c, float(self.failsafe_kw()[c.index]), None)])
            finally:
                if owned:
                    self._busy.discard(sid)
                self.settled_at = time.monotonic()

        self._spawn(cover())

    def cap_kw(self) -> FloatArray:
        """(n,) what each charger can draw at most given its station's failsafe maximum profile."""
        cap = np.full(self.site.n, np.inf)
        share = self.failsafe_kw()
        for st in self.live.stations.values():
            if st.failsafe == "ChargePointMaxProfile":
                for c in st.connectors.values():
                    cap[c.index] = share[c.index]
        return cap

    @property
    def in_flight(self) -> bool:
        """profiles of this or an earlier cycle are still on their way (no increase may go out)"""
        return bool(self._busy)

    def send(
        self,
        limits_kw: FloatArray,
        updates: list[int],
        schedule_kw: FloatArray | None = None,
        period_s: float = 900.0,
        plan: PlanContext | None = None,
    ) -> int:
        """Queue the TxProfiles of ``updates`` (indices into ``limits_kw``) in stages, each sent once the
        one before was accepted; returns how many profiles were queued. Without ``plan``: the decreases,
        then the increases. With it: :func:`serving.order.stages` (the decreases or, where the site
        would be further above a limit in between with them alone, the increases first; where neither
        order keeps it within its limits, alternating stages that each take what the limits allow, a
        charger's limit maybe on its way first), and values rounded toward the safe side of the limit
        each period of the plan is closer to (:func:`serving.order.import_binds`; toward 0 without
        ``plan``). Stations offline or still busy with an earlier batch are skipped, and while any is busy
        only the first stage goes out (a change of an earlier cycle may still be on its way).
        ``schedule_kw`` (n, periods): each final profile carries its charger's plan, ``period_s`` apart,
        every profile of the batch from the same start."""
        self.period_s = period_s
        share = self.failsafe_kw()
        chosen, unsent = split_updates(self.live, updates, share, self.connections.keys() - self._busy)
        if unsent:  # their stations follow their last profiles: the changes counting on them wait
            chosen, stay, limits_kw = hold_for_unsent(
                self.site, chosen, unsent, limits_kw, schedule_kw, share,
                0.0 if plan is None else plan.other_kw, (period_s, STEP_HORIZON_S, time.monotonic()),
                (self._rows, self._row_limits_kw),
            )  # fmt: skip
            self.metrics.inc("changes_held_total", float(stay.sum() - len(unsent)))
            if plan is not None:
                plan = PlanContext(np.where(stay, limits_kw, plan.assumed_kw), plan.other_kw)
        if not chosen:
            return 0
        writes, changes, rounding = stage_writes(
            self.site, self.live, chosen, limits_kw, schedule_kw, plan, period_s
        )
        if self._busy:
            writes, changes = writes[:1], changes[:1]
        sent = sum(len(v) for stage in writes for v in stage.values())
        if sent:
            for stage in writes:
                self._busy.update(stage)
            mark_pending(writes)
            batch = Batch(datetime.now(UTC), time.monotonic(), rounding)
            self._spawn(self._dispatch(writes, changes, batch))
        return sent

    async def _dispatch(self, writes: list[Writes], changes: list[FloatArray], batch: Batch) -> None:
        """The stages in turn, each once the one before was accepted; where a change was not, the next
        stage goes out without the changes that would use its headroom (:func:`without_held`), and the
        stages after it wait for the next cycle. ``changes[k]`` (n,): each limit's move in stage k."""
        stations = {sid for stage in writes for sid in stage}  # busy until the batch is answered
        try:
            k = 0
            while k < len(writes):
                stage = writes[k]
                if k + 1 < len(writes) and np.all(changes[k] <= 0) and np.all(changes[k + 1] >= 0):
                    # decreases then increases: each increase once the decreases it counts on are in
                    send = functools.partial(self._send_tx_profiles, batch=batch)
                    ok, held = await send_released(
                        self._rows, stage, changes[k], writes[k + 1], changes[k + 1], send
                    )
                    note_held(self.metrics, held)
                    if not ok:
                        break
                    k += 2
                    continue
                k += 1
                results = await asyncio.gather(
                    *(self._send_tx_profiles(s, it, batch) for s, it in stage.items())
                )
                if all(results):
                    continue
                if k < len(writes):
                    moved, moves = np.abs(changes[k - 1]), np.abs(changes[k])
                    nxt, held = without_held(self._rows, stage, results, moved, writes[k], moves)
                    note_held(self.metrics, held)
                    await asyncio.gather(*(self._send_tx_profiles(sid, it, batch) for sid, it in nxt.items()))
                break
        finally:
            mark_pending(writes, clear=True)
            for sid in stations:
                self._busy.discard(sid)
            self.settled_at = time.monotonic()

    async def _send_tx_profiles(self, sid: str, items: Writes1, batch: Batch | None = None) -> bool:
        """Send TxProfiles to one station, one after the other; True when every one was accepted. A
        schedule starts at ``batch``'s start (now without one); what is kept as sent is what was sent,
        rounded."""
        cp = self.connections.get(sid)
        if cp is None:
            return False
        batch = batch or Batch(datetime.now(UTC), time.monotonic(), ("zero",))
        all_ok = True
        for c, kw, row in items:
            if not c.active or c.ocpp_tx_id is None:
                continue
            ch = self.site.config.chargers[c.index]
            v2g = c.v2g_mode if cp.version == "2.1" and c.discharging else "charge_only"
            if v2g == "charge_only":
                kw = max(kw, 0.0)
                row = None if row is None else np.maximum(row, 0.0)
            value, periods = tx_values(self.site, c.index, kw, row, batch, self.period_s)
            tx_id = c.ocpp_tx_id
            req = set_charging_profile(
                cp.version, "TxProfile", c.connector_id, value, ch.rate_unit, ch.phases, tx_id,
                now=batch.start_utc, periods=periods, v2g_mode=v2g,
                duration_s=None if periods is None else round(periods[-1][0] + self.period_s),
            )  # fmt: skip
            self.metrics.inc("profiles_sent_total")
            ok = await call_profile(cp, req, "TxProfile", self.metrics, validate=False)
            if ok and c.ocpp_tx_id == tx_id:
                before = c.limit_kw
                c.limit_value = value
                c.limit_kw = kw if ch.rate_unit == "W" else profile_to_kw_one(self.site, c.index, value)
                c.limit_sent_at = time.monotonic()
                self.lag_s += LAG_WEIGHT * (c.limit_sent_at - batch.start_mono - self.lag_s)
                c.plan_kw = None
                if periods is not None:
                    c.plan_kw = profile_to_kw_at(self.site, c.index, np.array([v for _, v in periods]))
                c.plan_start = batch.start_mono if periods is not None else c.limit_sent_at
                c.note_limit(c.limit_sent_at)
                if before is None or abs(c.limit_kw - before) > 1e-6:
                    self.triggers.after_change(cp, c)  # once logged: its reading is taken after it
            all_ok = all_ok and ok
        return all_ok
