"""The operator HTTP API (aiohttp), served by the same process as the central system.

Routes (all JSON unless said): ``GET /health`` (no auth), ``GET /api/state`` (live site, see
:func:`serving.view.site_state`), ``GET /api/decisions?limit=N``, ``GET /api/transactions``,
``GET /api/events`` (server-sent events: the state after every cycle), ``GET /metrics`` (Prometheus text)
and ``POST /api/meter`` (site meter push: ``{"import_kw": float, "pv_kw": float?, "timestamp": str?}``,
the timestamp ISO 8601 UTC, when the meter read: :mod:`serving.taken`).

Operator authentication: when a token is configured, every route but ``/health`` needs
``Authorization: Bearer <token>`` (or HTTP Basic with the token as password). :func:`build_app` returns the
aiohttp application so further pages (the dashboard) mount on it behind the same middleware.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import json
import math
from collections.abc import Awaitable, Callable
from datetime import datetime

from aiohttp import web
from aiohttp.typedefs import Middleware

from serving.events import OperatorView

SERVICE_KEY: web.AppKey[OperatorView] = web.AppKey("service")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
OPEN_PATHS = frozenset({"/health"})


def token_ok(header: str | None, token: str) -> bool:
    if not header:
        return False
    if header.startswith("Bearer "):
        return hmac.compare_digest(header[7:].strip().encode(), token.encode())
    if header.startswith("Basic "):
        try:
            _, _, password = base64.b64decode(header[6:].strip()).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return False
        return hmac.compare_digest(password.encode(), token.encode())
    return False


def operator_auth(token: str | None) -> Middleware:
    """Middleware: every path but :data:`OPEN_PATHS` needs the operator token (when one is set)."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if token is not None and request.path not in OPEN_PATHS:
            if not token_ok(request.headers.get("Authorization"), token):
                raise web.HTTPUnauthorized(headers={"WWW-Authenticate": 'Basic realm="evdlm operator"'})
        return await handler(request)

    return middleware


def _json(data: object, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=lambda d: json.dumps(d, default=_default))


def _default(o: object) -> object:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


async def health(request: web.Request) -> web.Response:
    body, ok = request.app[SERVICE_KEY].health()
    return _json(body, status=200 if ok else 503)


async def state(request: web.Request) -> web.Response:
    return _json(request.app[SERVICE_KEY].state())


async def decisions(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    try:
        limit = max(1, min(int(request.query.get("limit", "50")), 1000))
    except ValueError:
        raise web.HTTPBadRequest(text="limit must be an integer") from None
    return _json(await svc.decisions(limit))


async def transactions(request: web.Request) -> web.Response:
    return _json(await request.app[SERVICE_KEY].transactions(200))


async def metrics(request: web.Request) -> web.Response:
    text = request.app[SERVICE_KEY].metrics_text()
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def meter_push(request: web.Request) -> web.Response:
    svc = request.app[SERVICE_KEY]
    if not svc.accepts_meter_push:
        raise web.HTTPConflict(text="the site meter source is not 'http'")
    try:
        body = await request.json()
        import_kw = float(body["import_kw"])
        pv = body.get("pv_kw")
        pv_kw = None if pv is None else float(pv)
        stamp = body.get("timestamp")
        taken = None if stamp is None else datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except (ValueError, KeyError, TypeError):
        raise web.HTTPBadRequest(
            text='expected {"import_kw": float, "pv_kw": float?, "timestamp": ISO 8601 string?}'
        ) from None
    if not math.isfinite(import_kw) or (pv_kw is not None and not math.isfinite(pv_kw)):
        raise web.HTTPBadRequest(text="non-finite reading")
    if taken is not None and taken.tzinfo is None:
        raise web.HTTPBadRequest(text="timestamp without a UTC offset")
    svc.push_site_meter(import_kw, pv_kw, taken)
    return _json({"accepted": True})


async def events(request: web.Request) -> web.StreamResponse:
    svc = request.app[SERVICE_KEY]
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    q = svc.subscribe()
    try:
        await resp.write(f"data: {json.dumps(svc.state(), default=_default)}\n\n".encode())
        while True:
            try:
                item = await asyncio.wait_for(q.get(), timeout=15.0)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(f"data: {json.dumps(item, default=_default)}\n\n".encode())
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        svc.unsubscribe(q)
    return resp


def build_app(service: OperatorView) -> web.Application:
    """The operator application; add routes to it before :func:`start_http` to extend the API."""
    app = web.Application(middlewares=[operator_auth(service.operator_token)])
    app[SERVICE_KEY] = service
    app.router.add_get("/health", health)
    app.router.add_get("/api/state", state)
    app.router.add_get("/api/decisions", decisions)
    app.router.add_get("/api/transactions", transactions)
    app.router.add_get("/api/events", events)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/meter", meter_push)
    return app


async def start_http(
    service: OperatorView, host: str, port: int, app: web.Application | None = None
) -> tuple[web.AppRunner, int]:
    """Start the operator API on ``host:port`` (0: any free port); returns the runner and the bound port."""
    runner = web.AppRunner(app or build_app(service), handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, shutdown_timeout=0.5)
    await site.start()
    port = 0
    server = site._server
    if server is not None:
        with contextlib.suppress(AttributeError, IndexError):
            port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
    return runner, port
