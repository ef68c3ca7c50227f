"""Writing limits to the stations: the failsafe, the deadband, decreases before increases, units.

:class:`Dispatcher` holds the open station connections and is the only writer of charging profiles. It
sends a station nothing before the station is registered on its connection (its BootNotification
answered Accepted, or another request received: :class:`serving.csms._Robust`); right then it installs
the failsafe at the static safe share (``ChargePointMaxProfile`` / ``ChargingStationMaxProfile``,
per-connector ``TxDefaultProfile`` where refused), retried with exponential backoff until one is
accepted. A transaction that starts while its station holds no failsafe gets a ``TxProfile`` at its safe
share at once, when its start is answered (not at the next cycle). Each cycle
:func:`select_updates` picks the limits worth sending (outside the deadband, or any decrease where the
limits kept would not be feasible) and :meth:`Dispatcher.send` writes them: every decrease first, the
increases only once every decrease was accepted, so no limit is exceeded in between. kW become each
charger's profile unit through :mod:`envs.share` (A per phase or W, one decimal, rounded down).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any, Literal

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays, SiteState
from envs.projection import ProjectionPlan
from envs.share import amps_mask, kw_to_profile, kw_to_profile_one, profile_to_kw, profile_to_kw_one
from serving.control import keeps_feasible
from serving.csms import Station16, Station201
from serving.live import ConnectorLive, LiveSite, StationLive
from serving.metrics import Metrics
from serving.profiles import Purpose, set_charging_profile

LOG = logging.getLogger("evdlm.serving")

FailsafeMode = Literal["max", "tx_default"]
Station = Station16 | Station201
FAILSAFE_RETRY_MAX_S = 60.0
"""longest wait between two failsafe attempts"""
Writes = dict[str, list[tuple[ConnectorLive, float]]]
"""per station id: the connectors to write and their new limit, kW"""


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
    new_value = kw_to_profile(site, np.asarray(new_kw, dtype=float), amps)
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
    ) -> None:
        self.site = site
        self.live = live
        self.safe_share_kw = safe_share_kw
        self.metrics = metrics
        self.failsafe_mode: FailsafeMode = failsafe_mode
        self._spawn = spawn
        self.connections: dict[str, Station] = {}
        self._busy: set[str] = set()
        """stations with profiles on their way (a station gets one batch at a time)"""
        self.failsafe_retry_s = failsafe_retry_s
        """first wait before the failsafe is tried again; doubles up to :data:`FAILSAFE_RETRY_MAX_S`"""
        self._failsafe_tasks: dict[str, asyncio.Task[Any]] = {}

    # ------------------------------------------------------------------ failsafe

    def station_safe_limit(self, station: StationLive) -> tuple[float, Literal["A", "W"], int]:
        """Station-wide failsafe limit: the sum of its connectors' safe shares, in A when all agree."""
        idx = [c.index for c in station.connectors.values()]
        chargers = [self.site.config.chargers[i] for i in idx]
        total_kw = float(sum(self.safe_share_kw[i] for i in idx))
        same = len({(c.rate_unit, c.phases, c.voltage_v) for c in chargers}) == 1
        if same and chargers[0].rate_unit == "A":
            amps = sum(kw_to_profile_one(self.site, i, float(self.safe_share_kw[i])) for i in idx)
            return amps, "A", chargers[0].phases
        watts = float(kw_to_profile(self.site, np.array([total_kw]), np.zeros(1, dtype=bool))[0])
        return watts, "W", max(c.phases for c in chargers)

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
            if purpose == "ChargePointMaxProfile":
                limit, unit, phases = self.station_safe_limit(station)
                reqs = [set_charging_profile(version, purpose, 0, limit, unit, phases, now=now)]
            else:
                reqs = []
                for k, c in sorted(station.connectors.items()):
                    ch = self.site.config.chargers[c.index]
                    value = kw_to_profile_one(self.site, c.index, float(self.safe_share_kw[c.index]))
                    reqs.append(set_charging_profile(version, purpose, k, value, ch.rate_unit, ch.phases))
            ok = True
            for req in reqs:
                ok = ok and await self._call_profile(cp, req, purpose)
            if ok:
                station.failsafe = purpose
                LOG.info("station %s: failsafe %s installed", sid, purpose)
                return purpose
        LOG.error("station %s refused every failsafe profile", sid)
        self.metrics.inc("failsafe_refused_total")
        return None

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
        while self.connections.get(sid) is cp and station.registered:
            station.failsafe_attempts += 1
            purpose = await self.install_failsafe(sid)
            if purpose is not None:
                return purpose
            self.metrics.inc("failsafe_retries_total")
            await asyncio.sleep(wait_s)
            wait_s = min(2.0 * wait_s, FAILSAFE_RETRY_MAX_S)
        return None

    def transaction_answered(self, sid: str, k: int) -> None:
        """A transaction's start was answered: where its station holds no failsafe yet, cover it now with
        a TxProfile at its safe share (the next cycle may raise it)."""
        c = self.live.connector(sid, k)
        station = self.live.stations.get(sid)
        if c is None or station is None or not c.active or c.limit_value is not None:
            return
        if station.failsafe is not None or not station.registered or sid not in self.connections:
            return
        owned = sid not in self._busy  # an earlier batch in flight keeps the station busy itself
        self._busy.add(sid)
        self.metrics.inc("failsafe_tx_covers_total")

        async def cover() -> None:
            try:
                await self._send_tx_profiles(sid, [(c, float(self.safe_share_kw[c.index]))])
            finally:
                if owned:
                    self._busy.discard(sid)

        self._spawn(cover())

    def cap_kw(self) -> FloatArray:
        """(n,) what each charger can draw at most given its station's failsafe maximum profile."""
        cap = np.full(self.site.n, np.inf)
        for st in self.live.stations.values():
            if st.failsafe == "ChargePointMaxProfile":
                for c in st.connectors.values():
                    cap[c.index] = self.safe_share_kw[c.index]
        return cap

    # ------------------------------------------------------------------ transaction profiles

    @property
    def in_flight(self) -> bool:
        """profiles of this or an earlier cycle are still on their way (no increase may go out)"""
        return bool(self._busy)

    def send(self, limits_kw: FloatArray, updates: list[int]) -> int:
        """Queue the TxProfiles of ``updates`` (indices into ``limits_kw``), decreases first; returns how
        many were queued. Stations offline or still busy with an earlier batch are skipped, and while any
        is busy no increase goes out (a decrease of an earlier cycle may still be on its way)."""
        decreases: Writes = {}
        increases: Writes = {}
        for i in updates:
            c = self.live.connectors[i]
            if c.station_id not in self.connections or c.station_id in self._busy:
                continue
            if not self.live.stations[c.station_id].registered:
                continue  # nothing goes to a station before it is registered
            kw = float(limits_kw[i])
            current_kw = c.limit_kw if c.limit_kw is not None else float(self.safe_share_kw[i])
            target = decreases if kw < current_kw else increases
            target.setdefault(c.station_id, []).append((c, kw))
        if self._busy:
            increases = {}
        sent = sum(len(v) for v in decreases.values()) + sum(len(v) for v in increases.values())
        if sent:
            self._busy.update(decreases)
            self._busy.update(increases)
            self._spawn(self._dispatch(decreases, increases))
        return sent

    async def _dispatch(self, decreases: Writes, increases: Writes) -> None:
        try:
            results = await asyncio.gather(
                *(self._send_tx_profiles(sid, it) for sid, it in decreases.items())
            )
            if not all(results):
                held = sum(len(v) for v in increases.values())
                if held:
                    LOG.warning("a decrease was not accepted: %d increase(s) held until next cycle", held)
                    self.metrics.inc("increases_held_total", float(held))
                return
            await asyncio.gather(*(self._send_tx_profiles(sid, it) for sid, it in increases.items()))
        finally:
            for sid in (*decreases, *increases):
                self._busy.discard(sid)

    async def _send_tx_profiles(self, sid: str, items: list[tuple[ConnectorLive, float]]) -> bool:
        """Send TxProfiles to one station, one after the other; True when every one was accepted."""
        cp = self.connections.get(sid)
        if cp is None:
            return False
        all_ok = True
        for c, kw in items:
            if not c.active or c.ocpp_tx_id is None:
                continue
            ch = self.site.config.chargers[c.index]
            value = kw_to_profile_one(self.site, c.index, kw)
            tx_id = c.ocpp_tx_id
            req = set_charging_profile(
                cp.version, "TxProfile", c.connector_id, value, ch.rate_unit, ch.phases, tx_id
            )
            self.metrics.inc("profiles_sent_total")
            ok = await self._call_profile(cp, req, "TxProfile")
            if ok and c.ocpp_tx_id == tx_id:
                c.limit_value = value
                c.limit_kw = kw if ch.rate_unit == "W" else profile_to_kw_one(self.site, c.index, value)
                c.limit_sent_at = time.monotonic()
            all_ok = all_ok and ok
        return all_ok

    async def _call_profile(self, cp: Station, req: Any, purpose: str) -> bool:
        try:
            res = await cp.call(req, suppress=False)
        except Exception as err:
            LOG.warning("station %s: SetChargingProfile (%s) failed: %s", cp.id, purpose, err)
            self.metrics.inc("messages_sent_total", action="SetChargingProfile", outcome="error")
            return False
        status = str(getattr(res, "status", ""))
        accepted = status.endswith("Accepted") or status == "accepted"
        self.metrics.inc(
            "messages_sent_total", action="SetChargingProfile", outcome="accepted" if accepted else "rejected"
        )
        return accepted
