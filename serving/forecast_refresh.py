"""The live forecast's life: built from the config, refreshed on a worker thread, never fatal.

:func:`make_live_forecast` builds the :class:`~serving.forecast.LiveForecast` (a model that cannot be
loaded, or whose step disagrees with ``forecast.step``, leaves a persistence and is counted);
:func:`refresh_forecast` runs the model once; :func:`refresh_forever` is the service's refresh task.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from forecasting.history import InsufficientHistoryError
from serving.config import ServingConfig
from serving.forecast import LiveForecast, load_forecaster
from serving.metrics import Metrics

if TYPE_CHECKING:
    from forecasting.provider import SiteForecaster

LOG = logging.getLogger("evdlm.serving")


def make_live_forecast(
    cfg: ServingConfig, timezone: str, model: SiteForecaster | None, metrics: Metrics
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
        metrics.inc("forecast_fallbacks_total", reason=error)
    return LiveForecast(cfg, timezone, model, error)


async def refresh_forecast(fc: LiveForecast | None, metrics: Metrics, now: datetime | None = None) -> str:
    """Run the model's forecast from the current step on a worker thread and cache it for the cycles.

    Returns ``model`` when installed; otherwise the window falls back to persistence and the reason
    (``insufficient_history``, ``error``, ``load_failed``/``no_model`` without a model) is returned,
    logged and counted in ``forecast_fallbacks_total``. Never raises for a model problem.
    """
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
        metrics.inc("forecast_refreshes_total", outcome="model")
        LOG.debug("forecast from %s with %d steps of history", origin, run.history_steps)
        return "model"
    fc.fall_back(outcome)
    metrics.inc("forecast_refreshes_total", outcome=outcome)
    metrics.inc("forecast_fallbacks_total", reason=outcome)
    return outcome


async def refresh_forever(fc: LiveForecast, metrics: Metrics, control_interval_s: float) -> None:
    """Refresh the forecast every ``refresh_every_s``; while it falls back, retry as soon as the
    history has a new step."""
    period = fc.settings.refresh_every_s
    poll = min(period, control_interval_s)
    while True:
        try:
            outcome = await refresh_forecast(fc, metrics)
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
