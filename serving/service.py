"""The live DLM service: OCPP central system + control loop + persistence + operator API in one process.

``Service(cfg, site, policy)`` is started with :meth:`Service.start` and stopped with :meth:`Service.stop`
(or used as ``async with``). The loop every ``control_interval_s``: read -> frozen snapshot -> policy
(within its budget, else the rule-based fallback) -> safety projection -> charging profiles, sent only
where they changed by more than the deadband. At each station's boot a failsafe profile at the static
safe share is installed first (``ChargePointMaxProfile`` / ``ChargingStationMaxProfile``, per-connector
``TxDefaultProfile`` where refused).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from agents.base import Policy
from envs.config import ConfigError, SiteConfig
from envs.core import FloatArray, SiteArrays
from envs.projection import project
from serving.config import ServingConfig, connector_map
from serving.control import (
    Controller,
    CycleOutcome,
    FixedLoad,
    limit_in_unit,
    safe_static_share_kw,
    select_updates,
)
from serving.csms import (
    SUBPROTOCOLS,
    VERSION_OF,
    Station16,
    Station201,
    make_process_request,
    parse_time,
    sampled_values,
    station_id_from_path,
)
from serving.forecast import HistoryStep, LiveForecast, load_forecaster
from serving.live import ConnectorLive, LiveSite, SiteMeterReading, StationLive, build_snapshot
from serving.metrics import Metrics
from serving.profiles import Purpose, set_charging_profile
from serving.store import AsyncStore, DecisionRecord, MeterSample, Store

if TYPE_CHECKING:
    from forecasting.provider import SiteForecaster

LOG = logging.getLogger("evdlm.serving")

HISTORY_SOURCE = "base_load"
"""meter-reading source of the persisted per-step base load / PV history (the forecast's input)"""

FailsafeMode = Literal["max", "tx_default"]


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


class Service:
    """One site's live DLM. Not thread-safe: everything runs on one event loop."""

    def __init__(
        self,
        cfg: ServingConfig,
        site: SiteConfig,
        policy: Policy | None,
        passwords: dict[str, str],
        fallback: Policy | None = None,
        policy_error: str | None = None,
        operator_token: str | None = None,
        failsafe_mode: FailsafeMode = "max",
        forecaster: SiteForecaster | None = None,
    ) -> None:
        self.cfg = cfg
        self.site = SiteArrays.from_config(site)
        self.mapping = connector_map(cfg, site)
        self.passwords = passwords
        self.operator_token = operator_token
        self.failsafe_mode: FailsafeMode = failsafe_mode
        self.metrics = Metrics()
        self.forecast = self._make_forecast(cfg, site, forecaster)
        self.live = LiveSite.build(self.site, self.mapping, [s.id for s in cfg.stations])
        if fallback is None:
            fallback = default_fallback()
        if fallback is not None:
            fallback.reset(self.site)
        if policy is not None:
            try:
                policy.reset(self.site)
            except Exception as err:
                LOG.error("policy %s failed to reset (%s); the fallback decides", policy.name, err)
                policy_error, policy = "load_failed", None
        self.safe_share_kw = safe_static_share_kw(self.site, cfg.failsafe_base_load_kw)
        self.controller = Controller(
            self.site,
            policy,
            fallback,
            self.safe_share_kw,
            cfg.policy_budget_s,
            policy_error,
            departure_floor=cfg.departure_floor,
        )
        self.store = AsyncStore(Store(cfg.database_url))
        self.connections: dict[str, Station16 | Station201] = {}
        self.cycle = 0
        self.correction_kw = 0.0
        self._last_cycle_mono = -np.inf
        self.last: CycleSummary | None = None
        self._meter_buffer: list[MeterSample] = []
        self._register_updates: dict[int, float] = {}
        self._busy: set[str] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_server: Server | None = None
        self._http_runner: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()
        self.ocpp_port = 0
        self.http_port = 0
        self._dashboard_runner: Any = None
        self.dashboard_port = 0

    def _make_forecast(
        self, cfg: ServingConfig, site: SiteConfig, model: SiteForecaster | None
    ) -> LiveForecast | None:
        """The forecast window and prices, when configured. A model that cannot be loaded (or whose step
        disagrees with ``forecast.step``) is not fatal: the window is a persistence, and that is counted."""
        if cfg.planning is None:
            return None
        error: str | None = None
        path = cfg.forecast.model if cfg.forecast is not None else None
        if model is None and path is not None:
            try:
                model = load_forecaster(path)
            except Exception as err:
                LOG.error("forecaster %s cannot be loaded (%s); the forecast is a persistence", path, err)
                error = "load_failed"
        if model is not None and cfg.forecast is not None and cfg.forecast.step is not None:
            if abs(model.step - cfg.forecast.step).total_seconds() > 1e-9:
                LOG.error(
                    "forecaster step %s differs from forecast.step %s; the forecast is a persistence",
                    model.step, cfg.forecast.step,
                )  # fmt: skip
                model, error = None, "load_failed"
        if error is not None:
            self.metrics.inc("forecast_fallbacks_total", reason=error)
        return LiveForecast(cfg, site.timezone, model, error)

    # ------------------------------------------------------------------ lifecycle

    async def start(self, http: bool = True, loop: bool = True) -> None:
        await self._resume_transactions()
        await self._resume_peak()
        await self._resume_history()
        ssl_ctx = None
        if self.cfg.tls is not None:
            ssl_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ssl_ctx.load_cert_chain(str(self.cfg.tls.cert_file), str(self.cfg.tls.key_file))
        self._ws_server = await serve(
            self._on_connection,
            self.cfg.ocpp_host,
            self.cfg.ocpp_port,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            process_request=make_process_request(
                set(self.live.stations), self.passwords, self.cfg.require_auth, self._on_refused
            ),
            ssl=ssl_ctx,
            ping_interval=None,
            max_size=2**18,
            compression=None,
        )
        self.ocpp_port = int(next(iter(self._ws_server.sockets)).getsockname()[1])
        if http:
            from serving.api import start_http

            self._http_runner, self.http_port = await start_http(self)
            if self.cfg.dashboard_port is not None:
                from serving.dashboard import start_dashboard

                self._dashboard_runner, self.dashboard_port = await start_dashboard(
                    self, self.cfg.http_host, self.cfg.dashboard_port
                )
        if self.cfg.meter.source == "modbus":
            from serving.meter import ModbusMeter

            self._spawn(ModbusMeter(self.cfg.meter, self.on_site_meter).run())
        if loop:
            self._loop_task = asyncio.create_task(self._control_loop())
            if self.forecast is not None and self.forecast.model is not None:
                self._spawn(self._forecast_loop())
        LOG.info(
            "serving %s: OCPP on %s:%d%s, HTTP on %s:%d",
            self.site.config.name,
            self.cfg.ocpp_host,
            self.ocpp_port,
            " (TLS)" if ssl_ctx else "",
            self.cfg.http_host,
            self.http_port,
        )

    async def stop(self) -> None:
        if self._loop_task is not None:
            self._loop_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._loop_task
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        if self._ws_server is not None:
            self._ws_server.close()
            await self._ws_server.wait_closed()
        if self._http_runner is not None:
            await self._http_runner.cleanup()
        if self._dashboard_runner is not None:
            await self._dashboard_runner.cleanup()
        await self._flush()
        self.controller.close()
        self.store.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _resume_transactions(self) -> None:
        """Reload transactions left open by a previous run (crash or restart)."""
        for tx in await self.store.run(self.store.store.open_transactions):
            c = self.live.connector(tx.station_id, tx.connector_id)
            if c is None:
                LOG.warning("open transaction %s on unmapped connector; ignored", tx.ocpp_tx_id)
                continue
            c.tx_pk, c.ocpp_tx_id, c.id_tag, c.tx_start = tx.id, tx.ocpp_tx_id, tx.id_tag, tx.start_time
            c.meter_start_wh, c.meter_last_wh = tx.meter_start_wh, tx.meter_last_wh
            c.energy_asked_kwh, c.departure, c.ev_max_kw = tx.energy_asked_kwh, tx.departure, tx.ev_max_kw
            c.status = "Charging"
            self.live.by_tx[(tx.station_id, tx.ocpp_tx_id)] = c
        n = sum(c.active for c in self.live.connectors)
        if n:
            LOG.info("resumed %d running transaction(s)", n)

    async def _resume_history(self) -> None:
        """Reload the measured base-load / PV history of the forecast (kept across restarts)."""
        fc = self.forecast
        if fc is None:
            return
        maxlen = fc.history.max_steps
        since = datetime.now(UTC) - fc.step.to_pytimedelta() * maxlen
        rows = await self.store.run(self.store.store.recent_meter_samples, HISTORY_SOURCE, since)
        steps = [HistoryStep(r.time, r.power_kw, r.pv_kw) for r in rows if r.power_kw is not None]
        n = fc.history.seed(steps)
        if n:
            LOG.info("resumed %d step(s) of measured base-load history for the forecast", n)

    async def _resume_peak(self) -> None:
        now = datetime.now(UTC)
        since = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        self.live.peak_import_kw = await self.store.run(self.store.store.peak_site_import_since, since)

    # ------------------------------------------------------------------ connections

    def _on_refused(self, why: str) -> None:
        self.metrics.inc("handshakes_refused_total", reason=why)

    async def _on_connection(self, ws: ServerConnection) -> None:
        sid = station_id_from_path(ws.request.path if ws.request else "")
        version = VERSION_OF.get(ws.subprotocol or "")
        station = self.live.stations.get(sid)
        if version is None or station is None:
            await ws.close(1002, "an OCPP subprotocol is required")
            return
        old = self.connections.get(sid)
        if old is not None:
            LOG.warning("station %s reconnected; closing its previous connection", sid)
            with contextlib.suppress(Exception):
                await old._connection.close()
        cp: Station16 | Station201 = (
            Station16(sid, ws, self) if version == "1.6" else Station201(sid, ws, self)
        )
        self.connections[sid] = cp
        station.connected, station.ocpp_version = True, version
        station.failsafe = None
        for c in station.connectors.values():
            c.limit_value, c.limit_kw = None, None  # the station may have lost them; resend
        self.metrics.inc("connections_total", version=version)
        self._set_gauges()
        self._spawn(self.store.run(self.store.store.station_seen, sid, version))
        self._spawn(self._failsafe_soon(sid, cp))
        try:
            await cp.start()
        finally:
            if self.connections.get(sid) is cp:
                del self.connections[sid]
                station.connected = False
                self._set_gauges()

    async def _failsafe_soon(self, sid: str, cp: Station16 | Station201, delay_s: float = 0.5) -> None:
        """Install the failsafe shortly after connect even when the station does not boot again."""
        await asyncio.sleep(delay_s)
        if self.connections.get(sid) is cp and self.live.stations[sid].failsafe is None:
            await self.install_failsafe(sid)

    def _set_gauges(self) -> None:
        self.metrics.set("stations_connected", float(sum(s.connected for s in self.live.stations.values())))
        self.metrics.set("transactions_active", float(sum(c.active for c in self.live.connectors)))

    # ------------------------------------------------------------------ failsafe

    def station_safe_limit(self, station: StationLive) -> tuple[float, Literal["A", "W"], int]:
        """Station-wide failsafe limit: the sum of its connectors' safe shares, in A when all agree."""
        idx = [c.index for c in station.connectors.values()]
        chargers = [self.site.config.chargers[i] for i in idx]
        total_kw = float(sum(self.safe_share_kw[i] for i in idx))
        same = len({(c.rate_unit, c.phases, c.voltage_v) for c in chargers}) == 1
        if same and chargers[0].rate_unit == "A":
            amps = sum(limit_in_unit(self.site, i, float(self.safe_share_kw[i])) for i in idx)
            return amps, "A", chargers[0].phases
        return float(np.floor(total_kw * 10000.0) / 10.0), "W", max(c.phases for c in chargers)

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
                    value = limit_in_unit(self.site, c.index, float(self.safe_share_kw[c.index]))
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

    async def _call_profile(self, cp: Station16 | Station201, req: Any, purpose: str) -> bool:
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

    # ------------------------------------------------------------------ OCPP events (from handlers)

    def on_seen(self, sid: str) -> None:
        self.live.stations[sid].last_seen = time.monotonic()

    async def on_boot(self, sid: str, version: str, vendor: str | None, model: str | None) -> None:
        st = self.live.stations[sid]
        st.booted, st.vendor, st.model, st.last_seen = True, vendor, model, time.monotonic()
        await self.store.run(self.store.store.station_seen, sid, version, vendor, model, True)
        cp = self.connections.get(sid)
        if cp is not None:
            st.failsafe = None
            # after the answer is on the wire: a call from inside a handler would deadlock
            self._spawn(self._failsafe_soon(sid, cp, 0.02))

    def on_status(self, sid: str, connector_id: int, status: str) -> None:
        self.on_seen(sid)
        c = self.live.connector(sid, connector_id)
        if c is not None:
            c.status = status

    async def on_transaction_started(
        self,
        sid: str,
        connector_id: int,
        ocpp_tx_id: str | None,
        id_tag: str | None,
        meter_start_wh: float,
        when: datetime | None,
    ) -> str | None:
        """Record a started transaction; returns its OCPP id (None where the connector is not mapped)."""
        self.on_seen(sid)
        c = self.live.connector(sid, connector_id)
        if c is None:
            LOG.warning("station %s started a transaction on unmapped connector %d", sid, connector_id)
            return None
        start = when or datetime.now(UTC)
        tx = await self.store.run(
            self.store.store.start_transaction, sid, connector_id, c.charger_id, ocpp_tx_id, id_tag, start,
            meter_start_wh,
        )  # fmt: skip
        if c.active and c.ocpp_tx_id != tx.ocpp_tx_id:
            LOG.warning("%s: new transaction %s replaces %s", c.charger_id, tx.ocpp_tx_id, c.ocpp_tx_id)
            self.live.by_tx.pop((sid, c.ocpp_tx_id or ""), None)
            c.clear_transaction()
        if not c.active:
            c.tx_pk, c.ocpp_tx_id, c.id_tag, c.tx_start = tx.id, tx.ocpp_tx_id, id_tag, tx.start_time
            c.meter_start_wh = c.meter_last_wh = tx.meter_start_wh
            c.energy_asked_kwh, c.departure, c.ev_max_kw = tx.energy_asked_kwh, tx.departure, tx.ev_max_kw
        c.status = "Charging"
        self.live.by_tx[(sid, tx.ocpp_tx_id)] = c
        self._set_gauges()
        return tx.ocpp_tx_id

    async def on_transaction_ended(
        self,
        sid: str,
        ocpp_tx_id: str,
        meter_stop_wh: float | None,
        when: datetime | None,
        reason: str | None,
    ) -> None:
        self.on_seen(sid)
        c = self.live.by_tx.pop((sid, ocpp_tx_id), None)
        if c is None or c.tx_pk is None:
            LOG.info("station %s ended unknown transaction %s", sid, ocpp_tx_id)
            return
        await self.store.run(
            self.store.store.stop_transaction, c.tx_pk, when or datetime.now(UTC), meter_stop_wh, reason
        )
        self._register_updates.pop(c.tx_pk, None)
        c.clear_transaction()
        c.status = "Finishing"
        c.power_kw = 0.0
        self._set_gauges()

    def on_meter_values(self, sid: str, connector_id: int, meter_value: list[dict[str, Any]]) -> None:
        self.on_seen(sid)
        p_imp, p_exp, e_imp = sampled_values(meter_value)
        now = time.monotonic()
        wall = datetime.now(UTC)
        if connector_id == 0 and self.cfg.meter.source == "station" and sid == self.cfg.meter.station_id:
            if p_imp is not None or p_exp is not None:
                self.on_site_meter(((p_imp or 0.0) - (p_exp or 0.0)) / 1000.0, None)
            return
        c = self.live.connector(sid, connector_id)
        if c is None:
            return
        if p_imp is not None:
            c.power_kw, c.power_at = p_imp / 1000.0, now
        if e_imp is not None and c.active and c.tx_pk is not None:
            c.meter_last_wh = max(c.meter_last_wh, e_imp)
            self._register_updates[c.tx_pk] = c.meter_last_wh
        self._meter_buffer.append(MeterSample(wall, "charger", c.charger_id, c.power_kw, e_imp))

    def on_charging_needs(self, sid: str, evse_id: int, needs: dict[str, Any]) -> None:
        self.on_seen(sid)
        c = self.live.connector(sid, evse_id)
        if c is None or not c.active:
            return
        ac = needs.get("ac_charging_parameters") or {}
        dc = needs.get("dc_charging_parameters") or {}
        energy_wh = ac.get("energy_amount", dc.get("energy_amount"))
        if energy_wh is not None:
            c.energy_asked_kwh = c.delivered_kwh + float(energy_wh) / 1000.0
        if ac.get("ev_max_current"):
            c.ev_max_kw = float(ac["ev_max_current"]) * float(self.site.kw_per_a[c.index])
        elif dc.get("ev_max_power"):
            c.ev_max_kw = float(dc["ev_max_power"]) / 1000.0
        c.departure = parse_time(needs.get("departure_time")) or c.departure
        if c.tx_pk is not None:
            self._spawn(
                self.store.run(
                    self.store.store.update_transaction,
                    c.tx_pk,
                    None,
                    c.energy_asked_kwh,
                    c.departure,
                    c.ev_max_kw,
                )
            )

    def on_site_meter(self, import_kw: float, pv_kw: float | None) -> None:
        """A site meter reading (from a station, the HTTP push endpoint or Modbus)."""
        if not np.isfinite(import_kw) or (pv_kw is not None and not np.isfinite(pv_kw)):
            self.metrics.inc("meter_rejected_total")
            return
        self.live.meter = SiteMeterReading(import_kw, pv_kw, time.monotonic())
        self.metrics.set("site_import_kw", import_kw)
        self._meter_buffer.append(MeterSample(datetime.now(UTC), "site", None, import_kw, None, pv_kw))

    # ------------------------------------------------------------------ forecast refresh

    async def refresh_forecast(self, now: datetime | None = None) -> str:
        """Run the model's forecast from the current step on a worker thread and cache it for the cycles.

        Returns ``model`` when installed; otherwise the window falls back to persistence and the reason
        (``insufficient_history``, ``error``, ``load_failed``/``no_model`` without a model) is returned,
        logged and counted in ``forecast_fallbacks_total``. Never raises for a model problem.
        """
        from forecasting.history import InsufficientHistoryError

        fc = self.forecast
        if fc is None:
            return "off"
        if fc.model is None:
            return fc.fallback_reason or "no_model"
        utc = datetime.now(UTC) if now is None else now
        origin = fc.origin(utc)
        history = fc.history_frame(origin)  # a copy, taken on the event loop
        try:
            run = await asyncio.to_thread(fc.compute, origin, history)
        except InsufficientHistoryError as err:
            outcome = "insufficient_history"
            LOG.info("forecast from %s: persistence (%s)", origin, err)
        except Exception as err:
            outcome = "error"
            LOG.warning("forecast from %s failed (%s: %s); persistence", origin, type(err).__name__, err)
        else:
            fc.install(run)
            self.metrics.inc("forecast_refreshes_total", outcome="model")
            LOG.debug("forecast from %s with %d steps of history", origin, run.history_steps)
            return "model"
        fc.fall_back(outcome)
        self.metrics.inc("forecast_refreshes_total", outcome=outcome)
        self.metrics.inc("forecast_fallbacks_total", reason=outcome)
        return outcome

    async def _forecast_loop(self) -> None:
        """Refresh the forecast every ``refresh_every_s``; while it falls back, retry as soon as the
        history has a new step."""
        fc = self.forecast
        assert fc is not None
        period = fc.settings.refresh_every_s
        poll = min(period, self.cfg.control_interval_s)
        while True:
            try:
                outcome = await self.refresh_forecast()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("forecast refresh failed")
                outcome = "error"
            due = time.monotonic() + period
            seen = fc.history.completed_total
            while (left := due - time.monotonic()) > 0:
                await asyncio.sleep(min(poll, left))
                if outcome != "model" and fc.history.completed_total != seen:
                    break

    # ------------------------------------------------------------------ control loop

    async def _control_loop(self) -> None:
        interval = self.cfg.control_interval_s
        next_t = time.monotonic()
        while True:
            next_t += interval
            try:
                await self.run_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("control cycle %d failed", self.cycle)
                self.metrics.inc("loop_errors_total")
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
                delay = 0.0
            await asyncio.sleep(delay)

    def _flag_offenders(self, now: float) -> None:
        """Flag stations drawing more than their limit; a flag holds until a fresh reading clears it."""
        tol = self.cfg.offender_tolerance_kw
        grace = min(self.cfg.control_interval_s, 5.0)
        max_age = max(self.cfg.station_meter_timeout_s, self.cfg.control_interval_s)
        for c in self.live.connectors:
            if not c.active or c.limit_kw is None or c.power_kw is None or now - c.power_at > max_age:
                c.offender, c.offender_cycles = False, 0
                continue
            if c.power_at < c.limit_sent_at + grace:
                continue  # no reading since the last limit took effect: keep the verdict
            flagged = c.power_kw > c.limit_kw * 1.1 + tol
            if flagged and not c.offender:
                LOG.warning("%s draws %.2f kW above its limit %.2f kW", c.charger_id, c.power_kw, c.limit_kw)
                self.metrics.inc("offenders_total")
                c.offender_since = now
            c.offender = flagged
            c.offender_cycles = c.offender_cycles + 1 if flagged else 0

    def _fixed_load(self) -> FixedLoad:
        """Flagged offenders with a fresh reading: their measured draw is taken as given this cycle."""
        n = self.site.n
        mask = np.zeros(n, dtype=bool)
        draw, hold = np.zeros(n), np.zeros(n)
        for c in self.live.connectors:
            if c.offender and c.active and c.power_kw is not None and c.limit_kw is not None:
                mask[c.index], draw[c.index], hold[c.index] = True, c.power_kw, c.limit_kw
        return FixedLoad(mask, draw, hold)

    def _update_correction(self, fixed: FixedLoad) -> None:
        """Closed loop on the site meter: load the last plan did not foresee is reserved next cycle.

        ``correction += measured import - planned import`` (never below 0): a load that appeared, or a
        station drawing more than its limit before it is flagged, is taken off the others in the next
        cycle; it decays as soon as the site draws less than planned. The draw of ``fixed`` chargers is
        reserved on its own (on every node it loads), so the part of the error they explain (their
        measured draw minus what the last plan assumed for them) is left out here.
        """
        meter, last = self.live.meter, self.last
        if meter is None or last is None or time.monotonic() - meter.at > self.cfg.meter_timeout_s:
            return
        if meter.at <= self._last_cycle_mono:
            return  # no reading since the last plan
        explained = float(np.sum((fixed.draw_kw - last.outcome.assumed_kw)[fixed.mask]))
        error = meter.import_kw - last.outcome.planned_import_kw - explained
        self.correction_kw = max(0.0, self.correction_kw + error)

    def cap_kw(self) -> FloatArray:
        """(n,) what each charger can draw at most given its station's failsafe maximum profile."""
        cap = np.full(self.site.n, np.inf)
        for st in self.live.stations.values():
            if st.failsafe == "ChargePointMaxProfile":
                for c in st.connectors.values():
                    cap[c.index] = self.safe_share_kw[c.index]
        return cap

    async def run_cycle(self) -> CycleSummary:
        t0 = time.perf_counter()
        now = time.monotonic()
        self.cycle += 1
        self._flag_offenders(now)
        fixed = self._fixed_load()
        self._update_correction(fixed)
        utc = datetime.now(UTC)
        snapshot, info = build_snapshot(
            self.live, self.cfg, self.cycle, self.cap_kw(), now, utc, self.correction_kw, self.forecast
        )
        if self.forecast is not None:
            done = self.forecast.observe(utc, info.measured_base_load_kw, info.measured_pv_kw)
            if done is not None:
                self._meter_buffer.append(
                    MeterSample(done.start, HISTORY_SOURCE, None, done.base_load_kw, None, done.pv_kw)
                )
            self.metrics.inc("forecast_cycles_total", source=info.forecast_source)
        outcome = await self.controller.decide(snapshot, info.meter_stale, fixed)
        if outcome.fallback_reason is not None:
            self.metrics.inc("fallbacks_total", reason=outcome.fallback_reason)
        if info.meter_stale:
            self.metrics.inc("stale_meter_cycles_total")
        active = self.live.active_mask()
        sent_values = [c.limit_value for c in self.live.connectors]
        plan, view_state = self.controller.view(snapshot.state, fixed)

        def feasible(kept_kw: FloatArray) -> bool:
            x = np.where(fixed.mask, 0.0, kept_kw)  # fixed chargers are reserved at their draw
            res = project(self.site, view_state, x, 0.0, plan=plan)
            return bool(np.all(np.asarray(res.charger_kw) >= x - self.site.resolution_kw - 1e-6))

        updates = select_updates(
            self.site,
            snapshot.state,
            outcome.limits_kw,
            sent_values,
            active,
            self.cfg.deadband_a,
            self.cfg.deadband_w,
            feasible,
        )
        # decreases first, increases only once every decrease was accepted (never over a limit in between)
        decreases: dict[str, list[tuple[ConnectorLive, float]]] = {}
        increases: dict[str, list[tuple[ConnectorLive, float]]] = {}
        for i in updates:
            c = self.live.connectors[i]
            if c.station_id not in self.connections or c.station_id in self._busy:
                continue
            kw = float(outcome.limits_kw[i])
            current_kw = c.limit_kw if c.limit_kw is not None else float(self.safe_share_kw[i])
            target = decreases if kw < current_kw else increases
            target.setdefault(c.station_id, []).append((c, kw))
        if self._busy:
            increases = {}  # a decrease of an earlier cycle may still be on its way
        sent = sum(len(v) for v in decreases.values()) + sum(len(v) for v in increases.values())
        if sent:
            self._busy.update(decreases)
            self._busy.update(increases)
            self._spawn(self._dispatch(decreases, increases))
        latency = time.perf_counter() - t0
        self._last_cycle_mono = time.monotonic()
        self.metrics.loop_latency_s.observe(latency)
        self.metrics.inc("cycles_total")
        limit = self.site.import_limit_kw
        if info.site_import_kw is not None and info.site_import_kw > limit + 1e-6:
            self.metrics.inc("violations_total")
            LOG.warning("site import %.2f kW above its limit %.2f kW", info.site_import_kw, limit)
        self.metrics.set("import_limit_kw", limit)
        self.last = CycleSummary(
            self.cycle, datetime.now(UTC), outcome, latency * 1000.0, info.site_import_kw, info.base_load_kw,
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
            latency_ms=latency * 1000.0,
            active=int(active.sum()),
            profiles_sent=sent,
            limits_kw={
                c.charger_id: round(float(outcome.limits_kw[c.index]), 3)
                for c in self.live.connectors
                if c.active
            },
            offenders=tuple(c.charger_id for c in self.live.connectors if c.offender),
        )
        self._spawn(self._persist(record))
        self._publish()
        return self.last

    async def _dispatch(
        self,
        decreases: dict[str, list[tuple[ConnectorLive, float]]],
        increases: dict[str, list[tuple[ConnectorLive, float]]],
    ) -> None:
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
            value = limit_in_unit(self.site, c.index, kw)
            tx_id = c.ocpp_tx_id
            req = set_charging_profile(
                cp.version, "TxProfile", c.connector_id, value, ch.rate_unit, ch.phases, tx_id
            )
            self.metrics.inc("profiles_sent_total")
            ok = await self._call_profile(cp, req, "TxProfile")
            if ok and c.ocpp_tx_id == tx_id:
                c.limit_value = value
                c.limit_kw = kw if ch.rate_unit == "W" else value * float(self.site.kw_per_a[c.index])
                c.limit_sent_at = time.monotonic()
            all_ok = all_ok and ok
        return all_ok

    async def _persist(self, record: DecisionRecord) -> None:
        try:
            await self.store.run(self.store.store.add_decision, record)
            await self._flush()
        except Exception:
            LOG.exception("persisting cycle %d failed", record.cycle)
            self.metrics.inc("db_errors_total")

    async def _flush(self) -> None:
        samples, self._meter_buffer = self._meter_buffer, []
        registers, self._register_updates = self._register_updates, {}
        if samples:
            await self.store.run(self.store.store.add_meter_samples, samples)
        if registers:
            await self.store.run(self.store.store.update_meter_registers, list(registers.items()))

    # ------------------------------------------------------------------ state for the API / dashboard

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving :meth:`state` after every cycle (for server-sent events)."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=4)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def _publish(self) -> None:
        if not self._subscribers:
            return
        state = self.state()
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(state)

    def state(self) -> dict[str, Any]:
        """The live site as JSON-ready data (the operator API's ``/api/state``)."""
        now = time.monotonic()
        utc = datetime.now(UTC)
        site = self.site
        measured = self.live.measured_kw(now, self.cfg.station_meter_timeout_s)
        measured0 = np.where(np.isfinite(measured), measured, 0.0)
        node_kw = site.node_power_kw(measured0)
        last = self.last
        planned_node_kw = site.node_power_kw(last.outcome.assumed_kw if last else np.zeros(site.n))
        meter = self.live.meter
        chargers = []
        for c in self.live.connectors:
            st = self.live.stations.get(c.station_id)
            time_left = None
            if c.departure is not None:
                time_left = max((c.departure - utc).total_seconds() / 3600.0, 0.0)
            chargers.append(
                {
                    "id": c.charger_id,
                    "station_id": c.station_id,
                    "connector_id": c.connector_id,
                    "connected": bool(st and st.connected),
                    "status": c.status,
                    "transaction_id": c.ocpp_tx_id,
                    "energy_delivered_kwh": round(c.delivered_kwh, 3),
                    "energy_asked_kwh": c.energy_asked_kwh,
                    "departure": c.departure.isoformat() if c.departure else None,
                    "time_left_h": time_left,
                    "limit_kw": c.limit_kw,
                    "limit_value": c.limit_value,
                    "limit_unit": site.config.chargers[c.index].rate_unit,
                    "power_kw": None if not np.isfinite(measured[c.index]) else float(measured[c.index]),
                    "safe_share_kw": float(self.safe_share_kw[c.index]),
                    "flagged_at": (
                        (utc - timedelta(seconds=now - c.offender_since)).isoformat() if c.offender else None
                    ),
                    "flags": {
                        "not_following_profile": c.offender,
                        "offline": not bool(st and st.connected),
                        "v2g_active": bool(c.limit_kw is not None and c.limit_kw < 0),
                    },
                }
            )
        h = self.metrics.loop_latency_s
        return {
            "site": {
                "name": site.config.name,
                "import_limit_kw": site.import_limit_kw,
                "site_import_kw": None if meter is None else meter.import_kw,
                "pv_kw": None if meter is None else meter.pv_kw,
                "base_load_kw": None if last is None else last.base_load_kw,
                "peak_import_kw": self.live.peak_import_kw,
                "meter_age_s": None if meter is None else now - meter.at,
                "meter_stale": None if last is None else last.outcome.meter_stale,
            },
            "loop": {
                "cycle": self.cycle,
                "time": None if last is None else last.time.isoformat(),
                "policy": None if last is None else last.outcome.policy,
                "fallback_reason": None if last is None else last.outcome.fallback_reason,
                "latency_ms": None if last is None else last.latency_ms,
                "p99_latency_ms": None if h.n == 0 else h.quantile(0.99) * 1000.0,
                "fallbacks": self.metrics.count("fallbacks_total"),
                "violations": self.metrics.count("violations_total"),
                "planned_import_kw": None if last is None else last.outcome.planned_import_kw,
                "control_interval_s": self.cfg.control_interval_s,
            },
            "nodes": [
                {
                    "id": nid,
                    "parent": None if site.node_parent[j] < 0 else site.node_ids[int(site.node_parent[j])],
                    "limit_kw": float(site.node_limit_kw[j]),
                    "measured_kw": float(node_kw[j]),
                    "planned_kw": float(planned_node_kw[j]),
                }
                for j, nid in enumerate(site.node_ids)
            ],
            "stations": [
                {
                    "id": s.id,
                    "connected": s.connected,
                    "ocpp_version": s.ocpp_version,
                    "failsafe": s.failsafe,
                    "vendor": s.vendor,
                    "model": s.model,
                }
                for s in self.live.stations.values()
            ],
            "chargers": chargers,
            "forecast": self._forecast_state(),
        }

    def _forecast_state(self) -> dict[str, Any] | None:
        fc = self.forecast
        if fc is None:
            return None
        run = fc.run
        return {
            "model": fc.model is not None,
            "source": "model" if run is not None else "persistence",
            "fallback_reason": fc.fallback_reason,
            "origin": None if run is None else run.origin.isoformat(),
            "step_s": fc.step.total_seconds(),
            "horizon_steps": fc.horizon_steps,
            "window_steps": fc.window_steps,
            "history_steps": len(fc.history),
            "fallbacks": self.metrics.count("forecast_fallbacks_total"),
        }


def default_fallback() -> Policy | None:
    """The rule-based DLM (imported lazily); None when it cannot be built (then the static share decides)."""
    try:
        from agents.rule_based import RuleBasedDLM

        return RuleBasedDLM()
    except Exception as err:  # the service must run even without it
        LOG.error("the rule-based fallback is unavailable (%s); the static safe share decides", err)
        return None


def load_policy(spec: str) -> tuple[Policy | None, str | None]:
    """``rule-based`` | ``static`` | ``module:Class`` | a model path or ``models:/name/version``.

    Returns ``(policy, None)`` or ``(None, why)``; a policy that cannot be loaded is not fatal: the
    fallback decides every cycle and the reason is counted.
    """
    try:
        if spec in ("rule-based", "rule_based"):
            from agents.rule_based import RuleBasedDLM

            return RuleBasedDLM(), None
        if spec == "static":
            from agents.baselines import StaticShare

            return StaticShare(), None
        if ":" in spec and not spec.startswith("models:/") and "/" not in spec.split(":", 1)[0]:
            import importlib

            mod, cls = spec.split(":", 1)
            return getattr(importlib.import_module(mod), cls)(), None
        from training.mlflow_model import load_learned_policy

        return load_learned_policy(spec), None
    except Exception as err:
        LOG.error("policy %r cannot be loaded: %s", spec, err)
        return None, "load_failed"


def check_site_matches(cfg: ServingConfig, site: SiteConfig) -> None:
    """Raise :class:`ConfigError` where the serving config and the site disagree."""
    connector_map(cfg, site)
    if not site.chargers:
        raise ConfigError("the site has no chargers")
