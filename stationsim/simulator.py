"""A simulated site: OCPP 1.6J / 2.0.1 stations (client side of the ``ocpp`` package) replaying a scenario.

Each station connects to the central system with its password, boots, and for every session of the
scenario on its connectors starts a transaction at arrival (accelerated time: ``speed`` simulated seconds
per wall second), draws the power its profiles allow - the minimum of the station maximum profile, the
transaction profile (or the TxDefault profile when there is none), the charger rating, the EV's own limit
and what the EV still needs (OCPP 1.6 section 3.13) - reports MeterValues, and stops at departure.
Messages a station would send while disconnected are dropped (and counted). The physical site (base
load + chargers - PV from the scenario) is checked against the import limit and every node's limit at
every tick.

Misbehaviour for fault tests: ``ignore_profiles`` (draws its full rating), ``drop_off`` (disconnects
for a while), ``garbage`` (sends malformed frames now and then).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

import numpy as np
import pandas as pd
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from envs.core import SiteArrays
from envs.scenario import Scenario
from stationsim import messages as msg
from stationsim.battery import SimBattery
from stationsim.chaos import next_chaos_at, reboot, send_late
from stationsim.physics import PhysicalSite, SimConnector, write_trace
from stationsim.report import SimReport, build_report
from stationsim.station_events import handle_event, meter_push
from stationsim.stations import SimCP, _auth_header, _SimCP16, _SimCP21, _SimCP201

__all__ = [
    "CentralSystemUnreachable",
    "SimOptions",
    "SimProgress",
    "SimReport",
    "SiteSimulator",
    "station_layout",
]

LOG = logging.getLogger("evdlm.simulator")
Version = Literal["1.6", "2.0.1", "2.1"]
GARBAGE_FRAMES = (
    "this is not json",
    "[2,",
    '{"not": "a list"}',
    '[2, "g1"]',
    '[2, "g2", "NoSuchAction", {}]',
    '[2, "g3", "Heartbeat", {"unexpected": 1}]',
    '[2, "g4", "StatusNotification", {"connectorId": "one"}]',
    "[7, 1, 2]",
)
POLL_S = 0.1
"""a station looks at its clocks (MeterValues, late MeterValues, chaos, garbage) on a grid of this step from
its last wake-up, as when it polled every step; it sleeps the whole steps until its next deadline (an event,
the connection lost, wakes it at once): a thousand stations polling every step took 0.37 s of CPU a second"""


def wake_in_s(now: float, due: float, poll_s: float = POLL_S) -> float:
    """The wait from ``now`` to the first point of the ``poll_s`` grid from ``now`` at or after ``due`` (at
    least one step): when a station that polled every ``poll_s`` would first have seen ``due`` passed."""
    if not math.isfinite(due):
        return 3600.0
    return max(1, math.ceil((due - now) / poll_s)) * poll_s


async def next_event(
    queue: asyncio.Queue[tuple[str, SimConnector]], reader: asyncio.Task[Any], wait_s: float
) -> tuple[str, SimConnector] | None:
    """A station's next event, or None after ``wait_s`` or as soon as its connection's reader ended."""
    if not queue.empty():
        return queue.get_nowait()
    get = asyncio.ensure_future(queue.get())
    try:
        await asyncio.wait((get, reader), timeout=wait_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        if not (got := get.done()):
            get.cancel()  # an event that comes meanwhile stays queued
    return get.result() if got else None


@dataclass
class SimOptions:
    speed: float = 60.0
    """simulated seconds per wall second"""
    tick_s: float = 0.1
    """wall seconds between physics updates"""
    meter_interval_s: float = 10.0
    """wall seconds between MeterValues of a charging connector"""
    version: Version | Literal["mixed"] = "1.6"
    ignore_profiles: frozenset[str] = frozenset()
    drop_off: dict[str, tuple[float, float]] = field(default_factory=dict)
    """station -> (wall s after start, wall s offline)"""
    garbage: frozenset[str] = frozenset()
    meter_push_url: str | None = None
    site_meter_interval_s: float | None = None
    """wall seconds between site meter pushes (default: ``meter_interval_s``, at most 1 s)"""
    operator_token: str | None = None
    passwords: dict[str, str] = field(default_factory=dict)
    duration_s: float | None = None
    """stop after this many wall seconds (default: after the last departure)"""
    ssl_context: ssl.SSLContext | None = None
    response_timeout_s: float = 10.0
    warmup_s: float = 1.0
    """wall seconds for the stations to connect and boot before simulated time starts"""
    v2x_modes: str = "ChargingOnly,CentralSetpoint,ExternalLimits"
    """the V2X operation modes a 2.1 station reports (GetVariables SupportedOperationModes)"""
    no_v2x: frozenset[str] = frozenset()
    """2.1 stations that report ChargingOnly only (no discharge)"""
    no_trigger: frozenset[str] = frozenset()
    """stations that do not implement TriggerMessage (they answer NotImplemented)"""
    v2g_min_soc: float = 0.2
    """a V2X EV never discharges below this SoC (or its arrival SoC, if lower)"""
    start_at: datetime | None = None
    """simulated time starts at this wall-clock time (at speed 1 the simulated clock is then the wall
    clock, so the central system's tariff and forecasts line up with the scenario)"""
    chaos_per_h: float = 0.0
    """soak: random disconnects and reboots per station per wall hour (0: none)"""
    reboot_share: float = 0.3
    """soak: the share of those events that are reboots (profiles lost, transactions restarted)"""
    late_meter_share: float = 0.0
    """soak: the share of MeterValues sent late (0.5-2 meter intervals after they were measured)"""
    seed: int = 0
    trace_csv: str | None = None
    """write every tick of the physical site here as CSV at the end (:class:`stationsim.physics.TraceRow`)"""
    check_schemas: bool = True
    """the stations check every request of the central system against the OCPP schemas (a 30-period
    TxProfile: about 2 ms of CPU each), and their own requests and the answers to them (each on the
    library's thread pool); off, a thousand simulated stations sharing a machine with the central system
    leave it that CPU (the central system's profiles are schema-checked in its tests, and it checks the
    stations' requests and its answers itself)"""


@dataclass(frozen=True)
class SimProgress:
    """Where a replay stands (passed to the ``progress`` callback of :meth:`SiteSimulator.run`)."""

    wall_s: float
    """wall seconds since simulated time started"""
    end_wall_s: float
    """wall seconds the replay will take"""
    sim_time: pd.Timestamp
    """the simulated clock"""
    delivered_kwh: float
    """energy into the EVs so far"""
    violation_ticks: int
    """physics ticks with the site or a node over its limit so far (site + node)"""


class CentralSystemUnreachable(ConnectionError):
    """No station could connect to the central system during the warm-up (nothing listens at the URL)."""


def station_layout(
    site: SiteArrays, mapping: dict[tuple[str, int], str] | None
) -> dict[tuple[str, int], str]:
    """``(station, connector) -> charger``: the given mapping, else every charger a station of its own
    (its id, connector 1), as ``evdlm serve --site`` configures it. An id is never split at a dash."""
    if mapping:
        return dict(mapping)
    return {(cid, 1): cid for cid in site.charger_ids}


class SiteSimulator:
    """Runs every station of a scenario against a central system at ``csms_url`` (``ws://host:port``)."""

    def __init__(
        self,
        scenario: Scenario,
        csms_url: str,
        options: SimOptions | None = None,
        mapping: dict[tuple[str, int], str] | None = None,
        sim_start: pd.Timestamp | None = None,
    ) -> None:
        self.scenario = scenario
        self.site = SiteArrays.from_config(scenario.site)
        self.url = csms_url.rstrip("/")
        self.opt = options or SimOptions()
        layout = station_layout(self.site, mapping)
        index = {cid: i for i, cid in enumerate(self.site.charger_ids)}
        sessions = scenario.sessions.sort_values("arrival")
        by_charger: dict[str, list[dict[Any, Any]]] = {}
        for row in sessions.to_dict("records"):
            by_charger.setdefault(str(row["charger_id"]), []).append(row)
        self.connectors: dict[tuple[str, int], SimConnector] = {}
        self.stations: dict[str, list[SimConnector]] = {}
        for (sid, k), cid in sorted(layout.items()):
            c = SimConnector(index[cid], sid, k, by_charger.get(cid, []))
            self.connectors[(sid, k)] = c
            self.stations.setdefault(sid, []).append(c)
        names = sorted(self.stations)
        self.version: dict[str, Version] = {}
        for j, sid in enumerate(names):
            v = self.opt.version
            self.version[sid] = ("1.6" if j % 2 == 0 else "2.0.1") if v == "mixed" else v
        self.physics = PhysicalSite(scenario, self.site, self.stations, self.opt.ignore_profiles)
        self.physics.v2g_min_soc = self.opt.v2g_min_soc
        if self.opt.trace_csv is not None:
            self.physics.trace = []
        self.cps: dict[str, SimCP] = {}
        self.booted: set[str] = set()
        self.triggers_received: dict[str, int] = dict.fromkeys(names, 0)
        """TriggerMessages each station received (answered or not)"""
        self.last_connect_error: str | None = None
        self.queues: dict[str, asyncio.Queue[tuple[str, SimConnector]]] = {s: asyncio.Queue() for s in names}
        self.sim_start = sim_start if sim_start is not None else scenario.start
        first = sessions["arrival"].min() if len(sessions) else scenario.start
        self.sim_start = max(self.sim_start, pd.Timestamp(first) - pd.Timedelta(seconds=1))
        self.last_departure = sessions["departure"].max() if len(sessions) else scenario.start
        self._wall0 = 0.0
        self._rngs: dict[str, np.random.Generator] = {}
        self.first_boot_accepted_utc: str | None = None
        """wall-clock time (ISO, UTC) the first BootNotification of any station was accepted"""
        self.calls_sent = self.calls_answered = self.calls_failed = self.calls_cancelled = 0
        self.dropped = 0
        self.garbage_sent = 0
        self.refused_unregistered = 0
        """requests of the central system refused because they came before the boot was accepted"""
        self.disconnects = self.reboots = self.late_meter_values = 0
        self._late: dict[str, list[tuple[float, Any]]] = {s: [] for s in names}
        """per station: (monotonic time due, prebuilt MeterValues / TransactionEvent) sent late"""
        self._running = True
        self.battery: SimBattery | None = None
        """the site battery (served over Modbus by :class:`stationsim.battery.BatteryServer`), whose power
        is part of the site's import"""

    # ------------------------------------------------------------------ time

    def sim_now(self) -> pd.Timestamp:
        return self.sim_start + pd.Timedelta(seconds=(time.monotonic() - self._wall0) * self.opt.speed)

    def wall_of(self, t: pd.Timestamp) -> datetime:
        ahead_s = (t - self.sim_now()).total_seconds() / self.opt.speed
        return datetime.now(UTC) + timedelta(seconds=ahead_s)

    # ------------------------------------------------------------------ the physical site

    def install_profile(self, station: str, connector_id: int, profile: dict[str, Any], version: str) -> bool:
        return self.physics.install_profile(station, connector_id, profile, version)

    @property
    def site_import_kw(self) -> float:
        """the simulated site's net import at the last tick, kW"""
        return self.physics.site_import_kw

    @property
    def last_node_violation_at(self) -> float:
        """monotonic time of the last tick with a node above its kW limit"""
        return self.physics.last_node_violation_at

    def _tick(self, dt_h: float) -> None:
        if self.battery is not None:
            self.battery.advance()
            self.physics.battery_kw = self.battery.power_kw
        self.physics.tick(self.sim_now(), dt_h, self._emit)

    def _emit(self, sid: str, kind: str, c: SimConnector) -> None:
        if sid in self.cps:
            self.queues[sid].put_nowait((kind, c))
        elif kind == "depart":
            # offline: the transaction ends locally; its stop message is dropped
            self.dropped += 1
            c.tx_id = None
        else:
            self.dropped += 1

    # ------------------------------------------------------------------ messaging

    async def _call(self, cp: SimCP, payload: Any) -> Any:
        self.calls_sent += 1
        try:
            res = await cp.call(payload, suppress=False, skip_schema_validation=not self.opt.check_schemas)
        except asyncio.CancelledError:
            self.calls_cancelled += 1  # in flight when the run ended
            raise
        except Exception as err:
            self.calls_failed += 1
            LOG.debug("%s: %s failed: %s", cp.id, type(payload).__name__, err)
            return None
        self.calls_answered += 1
        return res

    def _rng(self, sid: str) -> np.random.Generator:
        rng = self._rngs.get(sid)
        if rng is None:
            rng = self._rngs[sid] = np.random.default_rng([self.opt.seed, zlib.crc32(sid.encode())])
        return rng

    async def _boot(self, cp: SimCP, sid: str) -> None:
        for payload in msg.boot(self.version[sid], self.stations[sid]):
            await self._call(cp, payload)

    async def _station(self, sid: str) -> None:
        v = self.version[sid]
        sub = {"1.6": "ocpp1.6", "2.0.1": "ocpp2.0.1", "2.1": "ocpp2.1"}[v]
        headers = _auth_header(sid, self.opt.passwords.get(sid))
        drop = self.opt.drop_off.get(sid)
        next_meter = time.monotonic() + self.opt.meter_interval_s * (zlib.crc32(sid.encode()) % 97) / 97.0
        next_garbage = time.monotonic() + 0.5
        next_chaos = next_chaos_at(self, sid)
        while self._running:
            try:
                ws: ClientConnection = await connect(
                    f"{self.url}/{sid}",
                    subprotocols=[Subprotocol(sub)],
                    additional_headers=headers,
                    ssl=self.opt.ssl_context,
                    open_timeout=10,
                    ping_interval=None,
                    compression=None,
                )
            except Exception as err:
                LOG.debug("%s: connect failed: %s", sid, err)
                self.last_connect_error = str(err) or type(err).__name__
                await asyncio.sleep(0.5)
                continue
            cp: SimCP
            if v == "1.6":
                cp = _SimCP16(sid, ws, response_timeout=self.opt.response_timeout_s)
            elif v == "2.0.1":
                cp = _SimCP201(sid, ws, response_timeout=self.opt.response_timeout_s)
            else:
                cp = _SimCP21(sid, ws, response_timeout=self.opt.response_timeout_s)
            cp.attach(self, sid)
            reader = asyncio.create_task(cp.start())
            self.cps[sid] = cp
            try:
                await self._boot(cp, sid)
                self.booted.add(sid)
                for c in self.stations[sid]:
                    if c.session is not None and c.tx_id is None and self._wall0 < time.monotonic():
                        self.queues[sid].put_nowait(("arrive", c))  # an EV still plugged in after a reboot
                while self._running and not reader.done():
                    now = time.monotonic()
                    if now >= next_chaos:
                        next_chaos = next_chaos_at(self, sid)
                        self.cps.pop(sid, None)
                        await ws.close()
                        if self._rng(sid).random() < self.opt.reboot_share:
                            reboot(self, sid)
                        else:
                            self.disconnects += 1
                        await asyncio.sleep(float(self._rng(sid).uniform(0.5, 5.0)))
                        break
                    if self._late[sid]:
                        await send_late(self, cp, sid)
                    if drop is not None and now - self._wall0 >= drop[0]:
                        LOG.info("%s drops off for %.1f s", sid, drop[1])
                        drop = None
                        self.cps.pop(sid, None)
                        await ws.close()
                        await asyncio.sleep(self.opt.drop_off[sid][1])
                        break
                    if now >= next_meter:
                        next_meter = now + self.opt.meter_interval_s
                        for c in self.stations[sid]:
                            if c.tx_id is not None:
                                self.queues[sid].put_nowait(("meter", c))
                    if sid in self.opt.garbage and now >= next_garbage:
                        next_garbage = now + 1.0
                        await ws.send(GARBAGE_FRAMES[self.garbage_sent % len(GARBAGE_FRAMES)])
                        self.garbage_sent += 1
                    due = min(next_chaos, next_meter, min((t for t, _ in self._late[sid]), default=math.inf))
                    if drop is not None:
                        due = now  # its time is on the simulated clock's start: looked at every step
                    if sid in self.opt.garbage:
                        due = min(due, next_garbage)
                    event = await next_event(self.queues[sid], reader, wake_in_s(time.monotonic(), due))
                    if event is not None:
                        await handle_event(self, cp, *event)
            except Exception as err:
                LOG.debug("%s: connection lost: %s", sid, err)
            finally:
                if self.cps.get(sid) is cp:
                    self.cps.pop(sid, None)
                reader.cancel()
                with contextlib.suppress(BaseException):
                    await reader
                with contextlib.suppress(Exception):
                    await ws.close()
            # drain what piled up while we were away: those messages are lost
            while not self.queues[sid].empty():
                self.queues[sid].get_nowait()
                self.dropped += 1
            if self._running:
                await asyncio.sleep(0.2)

    async def run(self, progress: Callable[[SimProgress], None] | None = None) -> SimReport:
        """Run until the last departure (or ``duration_s``) and report. ``progress`` is called about once
        per wall second (and at the end) with where the replay stands."""
        self._wall0 = time.monotonic() + 1e9  # the clock starts after the warm-up
        tasks = [asyncio.create_task(self._station(sid)) for sid in self.stations]
        if self.opt.meter_push_url:
            tasks.append(asyncio.create_task(meter_push(self)))
        t_start = time.monotonic()
        deadline = t_start + max(self.opt.warmup_s, 0.0) + 30.0
        profiles = self.physics.profiles.values()
        while time.monotonic() < deadline and (
            len(self.booted) < len(self.stations) or any(p.received == 0 for p in profiles)
        ):
            await asyncio.sleep(0.05)  # every station connected, booted and given its failsafe
        if not self.booted:
            self._running = False
            for t in tasks:
                t.cancel()
            raise CentralSystemUnreachable(
                f"no station could connect to {self.url} in {deadline - t_start:.0f} s "
                f"({self.last_connect_error or 'no answer'}): is 'evdlm serve' running there?"
            )
        await asyncio.sleep(self.opt.warmup_s)
        if self.opt.start_at is not None:
            await asyncio.sleep(max((self.opt.start_at - datetime.now(UTC)).total_seconds(), 0.0))
        self._wall0 = time.monotonic()
        self._tick(0.0)
        end_wall = (
            self.opt.duration_s
            if self.opt.duration_s is not None
            else (self.last_departure - self.sim_start).total_seconds() / self.opt.speed + 1.0
        )
        last = time.monotonic()
        shown = last
        try:
            while time.monotonic() - self._wall0 < end_wall:
                await asyncio.sleep(self.opt.tick_s)
                now = time.monotonic()
                self._tick((now - last) * self.opt.speed / 3600.0)
                last = now
                # the last tick may land past the end (a late wake-up on a busy machine): the end's own
                # report follows, once
                if progress is not None and now - shown >= 1.0 and now - self._wall0 < end_wall:
                    shown = now
                    progress(self._progress(now - self._wall0, end_wall))
            if progress is not None:
                progress(self._progress(end_wall, end_wall))
        finally:
            connected = len(self.cps)
            self._running = False
            for t in tasks:
                t.cancel()
            for t in tasks:
                with contextlib.suppress(BaseException):
                    await t
            if self.opt.trace_csv is not None and self.physics.trace is not None:
                write_trace(self.physics.trace, self.opt.trace_csv)
        return build_report(self, connected)

    def _progress(self, wall_s: float, end_wall_s: float) -> SimProgress:
        return SimProgress(
            wall_s=min(wall_s, end_wall_s),
            end_wall_s=end_wall_s,
            sim_time=self.sim_start + timedelta(seconds=min(wall_s, end_wall_s) * self.opt.speed),
            delivered_kwh=float(sum(self.physics.delivered.values())),
            violation_ticks=self.physics.violation_ticks + self.physics.node_violation_ticks,
        )
