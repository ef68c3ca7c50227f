"""Persistence and publishing, apart from reading, deciding and writing.

:class:`Journal` buffers what the event loop learns (meter samples, energy registers of running
transactions) and writes it, with each cycle's decision, on the store's worker thread; a failed write is
logged and counted, never raised into the loop. :class:`Publisher` hands the site's state to every
subscriber (server-sent events, the dashboard) after each cycle, dropping the oldest where one lags.
:func:`resume` reloads what a restart must not lose: open transactions, the month's peak, the forecast's
measured history.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from serving.forecast import HistoryStep, LiveForecast
from serving.live import LiveSite
from serving.metrics import Metrics
from serving.store import AsyncStore, DecisionRecord, MeterSample

LOG = logging.getLogger("evdlm.serving")

HISTORY_SOURCE = "base_load"
"""meter-reading source of the persisted per-step base load / PV history (the forecast's input)"""


class Journal:
    """Buffered writes to the store (one event loop; the store runs on its own thread)."""

    def __init__(self, store: AsyncStore, metrics: Metrics) -> None:
        self.store = store
        self.metrics = metrics
        self._samples: list[MeterSample] = []
        self._registers: dict[int, float] = {}

    def sample(self, sample: MeterSample) -> None:
        """A meter sample, written with the next flush."""
        self._samples.append(sample)

    def register(self, tx_pk: int, energy_wh: float) -> None:
        """The latest energy register of a running transaction (only the last one per flush is written)."""
        self._registers[tx_pk] = energy_wh

    def forget(self, tx_pk: int) -> None:
        """Drop a pending register of a transaction that just ended (its stop reading is final)."""
        self._registers.pop(tx_pk, None)

    async def flush(self) -> None:
        samples, self._samples = self._samples, []
        registers, self._registers = self._registers, {}
        if samples:
            await self.store.run(self.store.store.add_meter_samples, samples)
        if registers:
            await self.store.run(self.store.store.update_meter_registers, list(registers.items()))

    async def persist(self, record: DecisionRecord) -> None:
        """Write one cycle's decision and everything buffered; failures are counted, not raised."""
        try:
            await self.store.run(self.store.store.add_decision, record)
            await self.flush()
        except Exception:
            LOG.exception("persisting cycle %d failed", record.cycle)
            self.metrics.inc("db_errors_total")


class Publisher:
    """Queues of the site's state for whoever listens."""

    def __init__(self, state: Callable[[], dict[str, Any]]) -> None:
        self._state = state
        self._subscribers: set[asyncio.Queue[dict[str, Any]]] = set()

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving the state after every cycle (for server-sent events)."""
        q: asyncio.Queue[dict[str, Any]] = asyncio.Queue(maxsize=4)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None:
        self._subscribers.discard(q)

    def publish(self) -> None:
        """Offer the current state to every subscriber (built only when someone listens)."""
        if not self._subscribers:
            return
        state = self._state()
        for q in self._subscribers:
            if q.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    q.get_nowait()
            q.put_nowait(state)


async def resume(store: AsyncStore, live: LiveSite, forecast: LiveForecast | None) -> None:
    """Reload the state a previous run (crash or restart) left in the store."""
    await _resume_transactions(store, live)
    await _resume_peak(store, live)
    await _resume_history(store, forecast)


async def _resume_transactions(store: AsyncStore, live: LiveSite) -> None:
    """Reload transactions left open by a previous run (crash or restart)."""
    for tx in await store.run(store.store.open_transactions):
        c = live.connector(tx.station_id, tx.connector_id)
        if c is None:
            LOG.warning("open transaction %s on unmapped connector; ignored", tx.ocpp_tx_id)
            continue
        c.tx_pk, c.ocpp_tx_id, c.id_tag, c.tx_start = tx.id, tx.ocpp_tx_id, tx.id_tag, tx.start_time
        c.meter_start_wh, c.meter_last_wh = tx.meter_start_wh, tx.meter_last_wh
        c.energy_asked_kwh, c.departure, c.ev_max_kw = tx.energy_asked_kwh, tx.departure, tx.ev_max_kw
        c.status = "Charging"
        live.by_tx[(tx.station_id, tx.ocpp_tx_id)] = c
    n = sum(c.active for c in live.connectors)
    if n:
        LOG.info("resumed %d running transaction(s)", n)


async def _resume_history(store: AsyncStore, fc: LiveForecast | None) -> None:
    """Reload the measured base-load / PV history of the forecast (kept across restarts)."""
    if fc is None:
        return
    maxlen = fc.history.max_steps
    since = datetime.now(UTC) - fc.step.to_pytimedelta() * maxlen
    rows = await store.run(store.store.recent_meter_samples, HISTORY_SOURCE, since)
    steps = [HistoryStep(r.time, r.power_kw, r.pv_kw) for r in rows if r.power_kw is not None]
    n = fc.history.seed(steps)
    if n:
        LOG.info("resumed %d step(s) of measured base-load history for the forecast", n)


async def _resume_peak(store: AsyncStore, live: LiveSite) -> None:
    now = datetime.now(UTC)
    since = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    live.peak_import_kw = await store.run(store.store.peak_site_import_since, since)
