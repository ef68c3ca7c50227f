"""The operator's live dashboard: one static page fed by server-sent events after every control cycle.

Served by the same process as the central system, on its own port (``dashboard_port`` in the serving
config, :func:`start_dashboard`) or mounted on another aiohttp application (:func:`register_dashboard`),
in both cases behind the operator authentication of the HTTP API (:func:`serving.api.operator_auth`: a
browser asks for any user name and the operator token as password).

Routes, under ``prefix`` (default ``/dashboard``):

- ``GET {prefix}/`` the page (``static/index.html``, ``app.js``, ``style.css``; no CDN, works offline);
- ``GET {prefix}/snapshot`` JSON ``{"state", "history", "meta"}``: the live state exactly as
  ``/api/state`` returns it, the time series of the last ``window_h`` hours (one point per cycle, see
  :class:`~serving.dashboard.history.HistoryPoint`) and what the page needs besides (policy names);
- ``GET {prefix}/events`` server-sent events: first ``{"state", "history", "meta"}``, then after every
  control cycle ``{"state", "point"}``.

A recorder task (started and stopped with the application) subscribes to the service's per-cycle state,
appends it to the history and fans it out to the browsers; a slow browser only loses intermediate
updates, never blocks the control loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from serving.dashboard.history import History, point_from_decision, point_from_state
from serving.events import OperatorView

LOG = logging.getLogger("evdlm.dashboard")
STATIC_DIR = Path(__file__).parent / "static"
DASHBOARD_KEY: web.AppKey[Dashboard] = web.AppKey("dashboard")
KEEPALIVE_S = 15.0
CLIENT_QUEUE = 8


def clean_json(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (JSON has no NaN/inf; JS would reject it)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean_json(v) for v in value]
    return value


def dumps(value: Any) -> str:
    return json.dumps(clean_json(value), default=str, separators=(",", ":"))


@dataclass
class Dashboard:
    """The dashboard of one service: its history and the browsers listening."""

    service: OperatorView
    history: History
    clients: set[asyncio.Queue[str | None]] = field(default_factory=set)
    _recorder: asyncio.Task[None] | None = None

    def meta(self) -> dict[str, Any]:
        primary, fallback = self.service.policy_names
        return {
            "primary_policy": primary,
            "fallback_policy": fallback,
            "window_h": self.history.window_s / 3600.0,
        }

    def snapshot(self) -> dict[str, Any]:
        return {"state": self.service.state(), "history": self.history.to_json(), "meta": self.meta()}

    async def start(self) -> None:
        try:
            rows = await self.service.decisions(self.history_rows())
        except Exception as err:  # the chart starts empty; the dashboard still runs
            LOG.warning("cannot read past decisions for the dashboard: %s", err)
            rows = []
        self.history.extend(p for p in map(point_from_decision, rows) if p is not None)
        self._recorder = asyncio.create_task(self._record())

    def history_rows(self) -> int:
        interval_s = self.service.control_interval_s
        return int(min(self.history.window_s / interval_s, 4320))

    async def stop(self) -> None:
        if self._recorder is not None:
            self._recorder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._recorder
        for q in list(self.clients):
            self._offer(q, None)

    async def _record(self) -> None:
        q = self.service.subscribe()
        try:
            while True:
                state = await q.get()
                point = point_from_state(state, time.time())
                self.history.add(point)
                message = dumps({"state": state, "point": point.to_json()})
                for client in list(self.clients):
                    self._offer(client, message)
        finally:
            self.service.unsubscribe(q)

    @staticmethod
    def _offer(q: asyncio.Queue[str | None], item: str | None) -> None:
        """Put without blocking; a full queue drops its oldest update (the next one supersedes it)."""
        if q.full():
            with contextlib.suppress(asyncio.QueueEmpty):
                q.get_nowait()
        q.put_nowait(item)


# --------------------------------------------------------------------------- handlers


async def _page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


async def _snapshot(request: web.Request) -> web.Response:
    body = dumps(request.app[DASHBOARD_KEY].snapshot())
    return web.Response(text=body, content_type="application/json", headers={"Cache-Control": "no-cache"})


async def _events(request: web.Request) -> web.StreamResponse:
    dash = request.app[DASHBOARD_KEY]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    q: asyncio.Queue[str | None] = asyncio.Queue(maxsize=CLIENT_QUEUE)
    dash.clients.add(q)
    try:
        await resp.write(f"retry: 2000\ndata: {dumps(dash.snapshot())}\n\n".encode())
        while True:
            try:
                item = await asyncio.wait_for(q.get(), timeout=KEEPALIVE_S)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            if item is None:
                break
            await resp.write(f"data: {item}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        dash.clients.discard(q)
    return resp


def register_dashboard(
    app: web.Application, service: OperatorView, prefix: str = "/dashboard", window_h: float = 6.0
) -> Dashboard:
    """Mount the dashboard on ``app`` (before it starts); it lives and dies with the application.

    ``app`` must already carry the operator authentication middleware; :func:`start_dashboard` builds
    one that does.
    """
    prefix = prefix.rstrip("/")
    dash = Dashboard(service, History(window_s=window_h * 3600.0))
    app[DASHBOARD_KEY] = dash

    async def redirect(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound(f"{prefix}/")

    if prefix:
        app.router.add_get(prefix, redirect)
    app.router.add_get(f"{prefix}/", _page)
    app.router.add_get(f"{prefix}/snapshot", _snapshot)
    app.router.add_get(f"{prefix}/events", _events)
    app.router.add_static(f"{prefix}/static", STATIC_DIR, append_version=False)

    async def on_startup(_: web.Application) -> None:
        await dash.start()

    async def on_shutdown(_: web.Application) -> None:
        await dash.stop()

    app.on_startup.append(on_startup)
    app.on_shutdown.append(on_shutdown)
    return dash


def build_dashboard_app(service: OperatorView, window_h: float = 6.0) -> web.Application:
    """A stand-alone application: the dashboard at ``/dashboard/`` (``/`` redirects there)."""
    from serving.api import operator_auth

    app = web.Application(middlewares=[operator_auth(service.operator_token)])
    register_dashboard(app, service, window_h=window_h)

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/dashboard/")

    app.router.add_get("/", root)
    return app


async def start_dashboard(
    service: OperatorView, host: str, port: int, window_h: float = 6.0
) -> tuple[web.AppRunner, int]:
    """Serve the dashboard on ``host:port`` (0 picks a free port); returns the runner and the bound port.

    Stop it with ``await runner.cleanup()``.
    """
    runner = web.AppRunner(
        build_dashboard_app(service, window_h), handle_signals=False, access_log=None, shutdown_timeout=0.5
    )
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    bound = port
    server = site._server
    if server is not None:
        with contextlib.suppress(AttributeError, IndexError):
            bound = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    return runner, bound


__all__ = [
    "Dashboard",
    "build_dashboard_app",
    "clean_json",
    "register_dashboard",
    "start_dashboard",
]
