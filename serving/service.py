"""The live DLM service: OCPP central system + control loop + persistence + operator API in one process.

``Service(cfg, site, policy)`` is started with :meth:`Service.start` and stopped with :meth:`Service.stop`
(or used as ``async with``). It only wires the parts together and runs them:

- reading: :mod:`serving.csms` parses every OCPP payload into typed events (:mod:`serving.events`) for the
  :class:`~serving.ingest.LiveUpdater`, which keeps :class:`~serving.live.LiveSite` current;
- the site loop (:mod:`serving.loop`) every ``control_interval_s``: read -> frozen snapshot -> decide
  (:mod:`serving.control`: policy within its budget, else the fallback, always projected) -> write;
- writing: :mod:`serving.dispatch` installs each station's failsafe (the static safe share, or where
  that starves chargers the rotation of :mod:`envs.rotation`) and sends the charging profiles,
  decreases first;
- persistence and publishing (:mod:`serving.journal`), the view model of the API and the dashboard
  (:mod:`serving.view`), the forecast refresh.

The HTTP API and the dashboard see the service only as a :class:`~serving.events.OperatorView`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import time
from collections.abc import Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from agents.base import Policy
from envs.config import ConfigError, SiteConfig
from envs.core import FloatArray, SiteArrays
from envs.rotation import describe, failsafe_rotation
from serving.battery import ModbusBattery
from serving.config import ServingConfig, connector_map
from serving.control import Controller
from serving.csms import (
    SUBPROTOCOLS,
    VERSION_OF,
    Station,
    Station21,
    make_process_request,
    station_class,
    station_id_from_path,
)
from serving.dispatch import Dispatcher, FailsafeMode
from serving.forecast_refresh import make_live_forecast, refresh_forecast, refresh_forever
from serving.ingest import LiveUpdater
from serving.journal import HISTORY_SOURCE, Journal, Publisher, resume
from serving.live import LiveSite
from serving.loop import CycleSummary, SiteLoop
from serving.metrics import Metrics
from serving.needs import pause
from serving.policy_step import on_own_step
from serving.store import AsyncStore, Store
from serving.view import health, site_state

if TYPE_CHECKING:
    from forecasting.provider import SiteForecaster

LOG = logging.getLogger("evdlm.serving")

__all__ = [
    "HISTORY_SOURCE",
    "CycleSummary",
    "PolicyLoadError",
    "Service",
    "check_site_matches",
    "default_fallback",
    "load_policy",
    "load_policy_strict",
    "starved_chargers",
]


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
        self.passwords = passwords
        self._operator_token = operator_token
        self.metrics = Metrics()
        self.forecast = make_live_forecast(cfg, site.timezone, forecaster, self.metrics)
        self.live = LiveSite.build(self.site, connector_map(cfg, site), [s.id for s in cfg.stations])
        if fallback is None:
            fallback = default_fallback()
        if fallback is not None:
            fallback.reset(self.site)
        if policy is not None:
            policy = on_own_step(policy, cfg)  # a learned policy decides on the step it was trained on
            try:
                policy.reset(self.site)
            except Exception as err:
                LOG.error("policy %s failed to reset (%s); the fallback decides", policy.name, err)
                policy_error, policy = "load_failed", None
        self.rotation = failsafe_rotation(
            self.site, cfg.failsafe_base_load_kw, cfg.failsafe_slot_s, cfg.failsafe_guard_s
        )
        self.safe_share_kw: FloatArray = self.rotation.share_kw
        if self.rotation.starved.any():
            LOG.warning(
                "failsafe: %s. Their stations hold this rotation as a daily recurring failsafe profile "
                "while the central system is lost, and the service follows it while the site meter is stale",
                describe(self.site, self.rotation),
            )
        self.controller = Controller(
            self.site, policy, fallback, self.safe_share_kw, cfg.policy_budget_s, policy_error,
            departure_floor=cfg.departure_floor, schedule_periods=cfg.schedule_periods,
            schedule_period_s=cfg.schedule_period_s, control_interval_s=cfg.control_interval_s,
            rotation=self.rotation, time_scale=cfg.time_scale,
        )  # fmt: skip
        self.store = AsyncStore(Store(cfg.database_url))
        self.journal = Journal(self.store, self.metrics)
        self.publisher = Publisher(self.state)
        self.dispatcher = Dispatcher(
            self.site, self.live, self.safe_share_kw, self.metrics, failsafe_mode, self._spawn,
            cfg.failsafe_retry_s, self.rotation, cfg.trigger_meter_values,
        )  # fmt: skip
        self.dispatcher.after_failsafe = self._after_failsafe
        self.updater = LiveUpdater(
            cfg, self.site, self.live, self.store, self.journal, self.metrics, self._spawn,
            self.dispatcher.registered, self.dispatcher.transaction_answered,
        )  # fmt: skip
        self.battery = ModbusBattery(cfg.battery) if cfg.battery is not None else None
        self.loop = SiteLoop(
            cfg, self.live, self.controller, self.dispatcher, self.journal, self.publisher, self.metrics,
            self.forecast, self._spawn, self.battery,
        )  # fmt: skip
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ws_server: Server | None = None
        self._http_runner: Any = None
        self._loop_task: asyncio.Task[None] | None = None
        self.ocpp_port = 0
        self.http_port = 0
        self._dashboard_runner: Any = None
        self.dashboard_port = 0

    # ------------------------------------------------------------------ lifecycle

    async def start(self, http: bool = True, loop: bool = True) -> None:
        await resume(self.store, self.live, self.forecast)
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
            max_size=self.cfg.max_frame_bytes,
            compression=None,
        )
        self.ocpp_port = int(next(iter(self._ws_server.sockets)).getsockname()[1])
        if http:
            from serving.api import start_http

            self._http_runner, self.http_port = await start_http(self, self.cfg.http_host, self.cfg.http_port)
            if self.cfg.dashboard_port is not None:
                from serving.dashboard import start_dashboard

                self._dashboard_runner, self.dashboard_port = await start_dashboard(
                    self, self.cfg.http_host, self.cfg.dashboard_port
                )
        if self.cfg.meter.source == "modbus":
            from serving.meter import ModbusMeter

            self._spawn(ModbusMeter(self.cfg.meter, self.on_site_meter).run())
        if self.battery is not None:
            self._spawn(self.battery.run())
        if loop:
            self._loop_task = asyncio.create_task(self._control_loop())
            if self.forecast is not None and self.forecast.model is not None:
                self._spawn(refresh_forever(self.forecast, self.metrics, self.cfg.control_interval_s))
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
        await self.journal.flush()
        self.controller.close()
        self.store.close()

    async def __aenter__(self) -> Service:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

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
        connections = self.dispatcher.connections
        old = connections.get(sid)
        if old is not None:
            LOG.warning("station %s reconnected; closing its previous connection", sid)
            with contextlib.suppress(Exception):
                await old._connection.close()
        cp: Station = station_class(version)(sid, ws, self.updater)
        connections[sid] = cp
        station.connected, station.ocpp_version = True, version
        station.failsafe, station.registered, station.failsafe_attempts = None, False, 0
        for c in station.connectors.values():
            c.limit_value, c.limit_kw = None, None  # the station may have lost them; resend
        self.metrics.inc("connections_total", version=version)
        self.updater.set_gauges()
        self._spawn(self.store.run(self.store.store.station_seen, sid, version))
        try:
            await cp.start()
        finally:
            if connections.get(sid) is cp:
                del connections[sid]
                station.connected = station.registered = False
                self.updater.set_gauges()

    async def _after_failsafe(self, sid: str, cp: Station) -> None:
        """After the failsafe's first attempt, a 2.1 station is asked for the V2X operation modes it
        supports (GetVariables)."""
        if isinstance(cp, Station21) and self.dispatcher.connections.get(sid) is cp:
            self.updater.operation_modes(await cp.operation_modes())

    async def install_failsafe(self, sid: str) -> str | None:
        return await self.dispatcher.install_failsafe(sid)

    def on_site_meter(self, import_kw: float, pv_kw: float | None, taken: datetime | None = None) -> None:
        """A site meter reading (from a station, the HTTP push endpoint or Modbus), taken at UTC ``taken``
        where known."""
        self.updater.site_meter(import_kw, pv_kw, taken)

    async def refresh_forecast(self, now: datetime | None = None) -> str:
        """:func:`serving.forecast_refresh.refresh_forecast` of this service's forecast."""
        return await refresh_forecast(self.forecast, self.metrics, now)

    # ------------------------------------------------------------------ control loop

    @property
    def cycle(self) -> int:
        return self.loop.cycle

    @property
    def last(self) -> CycleSummary | None:
        return self.loop.last

    async def run_cycle(self) -> CycleSummary:
        return await self.loop.run_cycle()

    async def _control_loop(self) -> None:
        interval = self.cfg.control_interval_s
        next_t = time.monotonic()
        if self.cfg.cycle_phase_s is not None:  # on the UTC clock's grid (a tariff's, a scenario's)
            wait_s = (self.cfg.cycle_phase_s - time.time()) % interval
            next_t += wait_s
            await asyncio.sleep(wait_s)
        while True:
            next_t += interval
            try:
                await self.run_cycle()
            except asyncio.CancelledError:
                raise
            except Exception:
                LOG.exception("control cycle %d failed", self.loop.cycle)
                self.metrics.inc("loop_errors_total")
            delay = next_t - time.monotonic()
            if delay < 0:
                next_t = time.monotonic()
                delay = 0.0
            await pause(self.loop, time.monotonic() + delay)  # a step decided again once needs arrive

    # ------------------------------------------------------------------ the operator's view

    @property
    def operator_token(self) -> str | None:
        return self._operator_token

    @property
    def control_interval_s(self) -> float:
        return self.cfg.control_interval_s

    @property
    def accepts_meter_push(self) -> bool:
        return self.cfg.meter.source == "http"

    @property
    def policy_names(self) -> tuple[str | None, str]:
        ctl = self.controller
        return (
            None if ctl.policy is None else ctl.policy.name,
            "static" if ctl.fallback is None else ctl.fallback.name,
        )

    def health(self) -> tuple[dict[str, Any], bool]:
        return health(self.live, self.loop.cycle, self.loop.last, self.cfg.control_interval_s)

    def state(self) -> dict[str, Any]:
        """The live site as JSON-ready data (``/api/state``, :func:`serving.view.site_state`)."""
        return site_state(
            self.site, self.live, self.cfg, self.metrics, self.dispatcher.failsafe_kw(), self.loop.cycle,
            self.loop.last, self.forecast, self.loop.violations,
            None if self.battery is None else self.battery.status(),
        )  # fmt: skip

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        return self.publisher.subscribe()

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self.publisher.unsubscribe(q)

    async def decisions(self, limit: int) -> list[dict[str, object]]:
        return await self.store.run(self.store.store.decisions, limit)

    async def transactions(self, limit: int) -> list[dict[str, object]]:
        return await self.store.run(self.store.store.transactions, limit)

    def metrics_text(self) -> str:
        return self.metrics.render()

    def push_site_meter(self, import_kw: float, pv_kw: float | None, taken: datetime | None = None) -> None:
        self.on_site_meter(import_kw, pv_kw, taken)


def starved_chargers(site: SiteArrays, safe_share_kw: FloatArray) -> list[str]:
    """The chargers whose static safe share cannot give them their minimum current (share 0)."""
    return [site.charger_ids[i] for i in range(site.n) if safe_share_kw[i] <= 0.0 < site.rated_kw[i]]


def default_fallback() -> Policy | None:
    """The rule-based DLM (imported lazily); None when it cannot be built (then the static share decides)."""
    try:
        from agents.rule_based import RuleBasedDLM

        return RuleBasedDLM()
    except Exception as err:  # the service must run even without it
        LOG.error("the rule-based fallback is unavailable (%s); the static safe share decides", err)
        return None


class PolicyLoadError(Exception):
    """The configured policy cannot be loaded (the message says why)."""


def load_policy_strict(spec: str, custom_class: bool = False) -> Policy:
    """The policy ``spec`` names, through :func:`agents.registry.load_policy` (a registered name such as
    ``rule_based`` or ``static``, a saved model folder, ``models:/name/version``, ``runs:/...``); with
    ``custom_class``, ``spec`` is ``module:Class`` instead and that class is imported and built.

    Raises :class:`PolicyLoadError` with the reason where it cannot be loaded (``evdlm serve`` then
    refuses to start, unless told to start on the fallback).
    """
    from agents.registry import load_policy as load_registered

    try:
        if custom_class and ":" not in spec:
            raise ValueError(f"a custom policy class is 'module:Class', not {spec!r}")
        return load_registered(spec, allow_custom=custom_class)
    except Exception as err:
        raise PolicyLoadError(f"policy {spec!r} cannot be loaded: {type(err).__name__}: {err}") from err


def load_policy(spec: str, custom_class: bool = False) -> tuple[Policy | None, str | None]:
    """:func:`load_policy_strict`, forgiving: ``(policy, None)`` or ``(None, 'load_failed')`` (logged), for
    callers that run on the fallback when the policy cannot be loaded."""
    try:
        return load_policy_strict(spec, custom_class), None
    except PolicyLoadError as err:
        LOG.error("%s", err)
        return None, "load_failed"


def check_site_matches(cfg: ServingConfig, site: SiteConfig) -> None:
    """Raise :class:`ConfigError` where the serving config and the site disagree."""
    connector_map(cfg, site)
    if not site.chargers:
        raise ConfigError("the site has no chargers")
    if cfg.battery is not None and site.battery is None:
        raise ConfigError(
            "battery: the serving config drives a battery over Modbus, but the site YAML has no 'battery' "
            "(its capacity and power limits)"
        )
