"""Reading: typed station events and site meter readings into the live state.

:class:`LiveUpdater` is the service's :class:`~serving.events.StationEvents`: the OCPP handlers hand it
typed events (:mod:`serving.events`), it updates :class:`~serving.live.LiveSite`, records transactions in
the store and buffers meter samples in the :class:`~serving.journal.Journal`. It never decides a limit and
never writes to a station; a registration is passed on to ``on_registered`` (the dispatcher installs the
failsafe) and an answered transaction start to ``on_transaction`` (the dispatcher covers it at once where
its station holds no failsafe yet).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np

from envs.core import SiteArrays
from envs.share import profile_to_kw_one
from serving.config import ServingConfig
from serving.events import (
    Booted,
    ChargingNeeds,
    MeterReading,
    OperationModes,
    StatusChanged,
    TransactionEnded,
    TransactionStarted,
    TransactionUpdated,
)
from serving.journal import Journal
from serving.live import ConnectorLive, LiveSite, SiteMeterReading
from serving.metrics import Metrics
from serving.plausibility import (
    MeterFault,
    charger_power_fault,
    register_fault,
    register_is_late,
    site_meter_fault,
)
from serving.store import AsyncStore, MeterSample
from serving.taken import taken_from
from serving.v2g import choose_mode

LOG = logging.getLogger("evdlm.serving")


def _kw(watts: float | None) -> float | None:
    return None if watts is None else watts / 1000.0


def whole_second(t: datetime) -> datetime:
    """``t`` to the nearest whole second: an EV declares its departure in whole seconds (ISO 15118
    ``DepartureTime``), which its station turns into a time on its own clock; the fraction is that clock's
    jitter. Kept, a departure 0.6 ms after a step's end counts as one more step to a policy that counts
    steps (the V2G benchmark's first decision: 248 kW, against 160 with the departure on the grid)."""
    return (t + timedelta(microseconds=500_000)).replace(microsecond=0)


class LiveUpdater:
    """Station events and site meter readings -> the live site (implements ``StationEvents``)."""

    def __init__(
        self,
        cfg: ServingConfig,
        site: SiteArrays,
        live: LiveSite,
        store: AsyncStore,
        journal: Journal,
        metrics: Metrics,
        spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]],
        on_registered: Callable[[str], None],
        on_transaction: Callable[[str, int], None],
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.live = live
        self.store = store
        self.journal = journal
        self._metrics = metrics
        self._spawn = spawn
        self._on_registered = on_registered
        self._on_transaction = on_transaction

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    @property
    def heartbeat_interval_s(self) -> int:
        return self.cfg.heartbeat_interval_s

    @property
    def response_timeout_s(self) -> float:
        return self.cfg.response_timeout_s

    def set_gauges(self) -> None:
        self.metrics.set("stations_connected", float(sum(s.connected for s in self.live.stations.values())))
        self.metrics.set("transactions_active", float(sum(c.active for c in self.live.connectors)))

    # ------------------------------------------------------------------ station events

    def seen(self, station_id: str) -> None:
        self.live.stations[station_id].last_seen = time.monotonic()

    async def booted(self, event: Booted) -> None:
        sid = event.station_id
        st = self.live.stations[sid]
        st.booted, st.vendor, st.model, st.last_seen = True, event.vendor, event.model, time.monotonic()
        store = self.store.store
        # a (re)booted station holds no profile: nothing is in force until it is installed again
        st.failsafe, st.registered = None, False
        for c in st.connectors.values():
            c.limit_value, c.limit_kw = None, None
        await self.store.run(store.station_seen, sid, event.version, event.vendor, event.model, True)

    def registered(self, station_id: str) -> None:
        self.live.stations[station_id].registered = True
        self._on_registered(station_id)

    def transaction_answered(self, station_id: str, connector_id: int) -> None:
        self._on_transaction(station_id, connector_id)

    def status_changed(self, event: StatusChanged) -> None:
        self.seen(event.station_id)
        c = self.live.connector(event.station_id, event.connector_id)
        if c is not None:
            c.status = event.status

    async def transaction_started(self, event: TransactionStarted) -> str | None:
        """Record a started transaction; returns its OCPP id (None where the connector is not mapped)."""
        sid, k = event.station_id, event.connector_id
        self.seen(sid)
        c = self.live.connector(sid, k)
        if c is None:
            LOG.warning("station %s started a transaction on unmapped connector %d", sid, k)
            return None
        start = event.time or datetime.now(UTC)
        tx = await self.store.run(
            self.store.store.start_transaction, sid, k, c.charger_id, event.ocpp_tx_id, event.id_tag, start,
            event.meter_start_wh,
        )  # fmt: skip
        if c.active and c.ocpp_tx_id != tx.ocpp_tx_id:
            LOG.warning("%s: new transaction %s replaces %s", c.charger_id, tx.ocpp_tx_id, c.ocpp_tx_id)
            self.live.by_tx.pop((sid, c.ocpp_tx_id or ""), None)
            c.clear_transaction()
        if not c.active:
            c.tx_pk, c.ocpp_tx_id, c.id_tag, c.tx_start = tx.id, tx.ocpp_tx_id, event.id_tag, tx.start_time
            c.started_at = time.monotonic()
            c.meter_start_wh = c.meter_last_wh = tx.meter_start_wh
            c.energy_asked_kwh, c.departure, c.ev_max_kw = tx.energy_asked_kwh, tx.departure, tx.ev_max_kw
        c.status = "Charging"
        self.live.by_tx[(sid, tx.ocpp_tx_id)] = c
        self.set_gauges()
        return tx.ocpp_tx_id

    async def transaction_updated(self, event: TransactionUpdated) -> None:
        """A 2.0.1 transaction event: start it where it is new (and its EVSE known), then its reading."""
        sid = event.station_id
        known = self.live.by_tx.get((sid, event.ocpp_tx_id))
        if known is None:
            if event.connector_id is None:
                return  # an Updated event for a transaction we never saw, without its EVSE: nothing to map
            meter_wh = event.energy_wh if event.energy_wh is not None else 0.0
            start = TransactionStarted(
                sid, event.connector_id, event.ocpp_tx_id, event.id_tag, meter_wh, event.time
            )
            await self.transaction_started(start)
            known = self.live.by_tx.get((sid, event.ocpp_tx_id))
        if known is not None and event.reading is not None:
            r = event.reading
            self.meter_reading(
                MeterReading(
                    sid, known.connector_id, r.power_import_w, r.power_export_w, r.energy_import_wh,
                    r.energy_export_wh, r.triggered, r.taken,
                )
            )  # fmt: skip

    async def transaction_ended(self, event: TransactionEnded) -> None:
        self.seen(event.station_id)
        c = self.live.by_tx.pop((event.station_id, event.ocpp_tx_id), None)
        if c is None or c.tx_pk is None:
            LOG.info("station %s ended unknown transaction %s", event.station_id, event.ocpp_tx_id)
            return
        await self.store.run(
            self.store.store.stop_transaction, c.tx_pk, event.time or datetime.now(UTC), event.meter_stop_wh,
            event.reason,
        )  # fmt: skip
        self.journal.forget(c.tx_pk)
        c.clear_transaction()
        c.status = "Finishing"
        c.power_kw = 0.0
        self.set_gauges()

    def meter_reading(self, event: MeterReading) -> None:
        sid, k = event.station_id, event.connector_id
        self.seen(sid)
        p_imp, p_exp, e_imp = event.power_import_w, event.power_export_w, event.energy_import_wh
        now = time.monotonic()
        wall = datetime.now(UTC)
        if k == 0 and self.cfg.meter.source == "station" and sid == self.cfg.meter.station_id:
            if p_imp is not None or p_exp is not None:
                self.site_meter(((p_imp or 0.0) - (p_exp or 0.0)) / 1000.0, None, event.taken)
            return
        c = self.live.connector(sid, k)
        st = self.live.stations.get(sid)
        if c is None or st is None:
            return
        taken, st.clock_ahead_s = taken_from(now, wall, event.taken, self.cfg, st.clock_ahead_s)
        if e_imp is not None and register_is_late(
            c.register_wh, e_imp, float(self.site.rated_kw[c.index]), self.cfg.meter_fault_rel_tol,
            self.cfg.station_meter_timeout_s * self.cfg.time_scale,
        ):  # fmt: skip
            self.metrics.inc("meter_late_total")  # older than what we have: ignored
            return
        fault = self._implausible(c, event, now)
        if fault is not None:
            self._meter_fault(c, fault, now)
            if fault == "register_jump" and e_imp is not None:
                c.register_wh, c.register_at = e_imp, now  # judge the next reading against this one
            return
        if c.meter_fault is not None:
            LOG.info("%s: meter plausible again", c.charger_id)
            c.meter_fault = None
        if p_imp is not None or p_exp is not None:
            c.power_kw, c.power_at, c.power_from = ((p_imp or 0.0) - (p_exp or 0.0)) / 1000.0, now, taken
            if c.active:
                taken_after = -np.inf
                if event.triggered and c.trigger_sent_at is not None:
                    taken_after, c.trigger_sent_at = c.trigger_sent_at, None
                    self.metrics.inc("triggered_readings_total")
                c.readings.append((now, c.power_kw, max(taken_after, taken)))
        if e_imp is not None:
            c.register_wh, c.register_at = e_imp, now
        if e_imp is not None and c.active and c.tx_pk is not None:
            c.meter_last_wh = max(c.meter_last_wh, e_imp)
            self.journal.register(c.tx_pk, c.meter_last_wh)
        if event.energy_export_wh is not None and c.active:
            if c.export_start_wh is None:
                c.export_start_wh = event.energy_export_wh
            c.export_last_wh = max(c.export_last_wh, event.energy_export_wh)
        self.journal.sample(MeterSample(wall, "charger", c.charger_id, c.power_kw, e_imp))

    def _implausible(self, c: ConnectorLive, event: MeterReading, now: float) -> MeterFault | None:
        """The meter fault of a charger reading (:mod:`serving.plausibility`), None where plausible."""
        i, cfg = c.index, self.cfg
        rated = float(self.site.rated_kw[i])
        fault = charger_power_fault(
            _kw(event.power_import_w), _kw(event.power_export_w), rated,
            bool(self.site.max_discharge_kw[i] > 0), cfg.meter_fault_rel_tol, cfg.meter_fault_abs_kw,
        )  # fmt: skip
        if fault is None and event.energy_import_wh is not None:
            fault = register_fault(
                c.register_wh, event.energy_import_wh, (now - c.register_at) * cfg.time_scale, rated,
                cfg.meter_fault_rel_tol,
                cfg.meter_fault_abs_kw,
            )  # fmt: skip
        return fault

    def _meter_fault(self, c: ConnectorLive, fault: MeterFault, now: float) -> None:
        """Ignore an implausible reading: count it, flag the charger, assume it at its sent limit (so it
        never takes headroom from the others; unknown where no limit was sent yet)."""
        self.metrics.inc("meter_faults_total", kind=fault)
        if c.meter_fault is None:
            LOG.warning("%s: implausible meter reading (%s) ignored", c.charger_id, fault)
            c.meter_fault_since = now
        c.meter_fault = fault
        c.power_kw, c.power_at = (c.limit_kw, now) if c.limit_kw is not None else (None, -np.inf)
        c.power_from = None

    def charging_needs(self, event: ChargingNeeds) -> None:
        self.seen(event.station_id)
        c = self.live.connector(event.station_id, event.connector_id)
        if c is None or not c.active:
            return
        if c.needs_at == -np.inf:
            c.needs_at = time.monotonic()
            LOG.info(
                "%s transaction %s: EV needs arrived %.2f s after its start", c.charger_id, c.ocpp_tx_id,
                c.needs_at - c.started_at,
            )  # fmt: skip
            self.live.needs_arrived.set()  # a transaction held for them is decided again (serving.needs)
        received = c.received_kwh(float(self.site.efficiency[c.index]))  # what the request adds to
        if event.energy_wh is not None:
            c.energy_asked_kwh = received + event.energy_wh / 1000.0
        if event.ev_max_current_a is not None:
            c.ev_max_kw = profile_to_kw_one(self.site, c.index, event.ev_max_current_a, "A")
        elif event.ev_max_power_w is not None:
            c.ev_max_kw = profile_to_kw_one(self.site, c.index, event.ev_max_power_w, "W")
        c.departure = whole_second(event.departure) if event.departure is not None else c.departure
        if event.v2x is not None:
            c.v2x = event.v2x
            c.v2x_declared_net_kwh = c.delivered_kwh
            if event.energy_wh is None and event.v2x.min_energy_wh is not None:
                c.energy_asked_kwh = received + max(event.v2x.min_energy_wh, 0.0) / 1000.0
        if c.tx_pk is not None:
            update = self.store.store.update_transaction
            self._spawn(self.store.run(update, c.tx_pk, None, c.energy_asked_kwh, c.departure, c.ev_max_kw))
        self.choose_v2g_mode(event.station_id, event.connector_id)

    def operation_modes(self, event: OperationModes) -> None:
        """A 2.1 station reported its V2X operation modes: its running transactions are re-judged."""
        st = self.live.stations.get(event.station_id)
        if st is None:
            return
        st.operation_modes = event.modes
        for k in st.connectors:
            self.choose_v2g_mode(event.station_id, k)

    def choose_v2g_mode(self, station_id: str, connector_id: int) -> None:
        """Decide whether the transaction may discharge (:func:`serving.v2g.choose_mode`); a change is
        logged and stored with the transaction (the journal of its V2G modes)."""
        st = self.live.stations.get(station_id)
        c = self.live.connector(station_id, connector_id)
        if st is None or c is None or not c.active:
            return
        bidirectional = bool(self.site.bidirectional[c.index]) and self.site.max_discharge_kw[c.index] > 0
        mode, reason = choose_mode(bidirectional, st.ocpp_version, st.operation_modes, c.v2x)
        if (mode, reason) == (c.v2g_mode, c.v2g_reason):
            return
        c.v2g_mode, c.v2g_reason = mode, reason
        LOG.info("%s transaction %s: V2G mode %s (%s)", c.charger_id, c.ocpp_tx_id, mode, reason)
        if c.tx_pk is not None:
            self._spawn(self.store.run(self.store.store.record_v2g_mode, c.tx_pk, mode, reason))

    # ------------------------------------------------------------------ the site meter

    def site_meter(self, import_kw: float, pv_kw: float | None, taken: datetime | None = None) -> None:
        """A site meter reading (from a station, the HTTP push endpoint or Modbus), taken at UTC ``taken``
        by the meter's clock (None: unknown; :mod:`serving.taken`)."""
        if not np.isfinite(import_kw) or (pv_kw is not None and not np.isfinite(pv_kw)):
            self.metrics.inc("meter_rejected_total")
            return
        site = self.site
        fault = site_meter_fault(
            import_kw, site.import_limit_kw, float(site.rated_kw.sum()), self.cfg.site_meter_fault_factor
        )
        if fault is not None:
            self.metrics.inc("meter_faults_total", kind=fault)
            if self.live.site_meter_fault is None:
                LOG.warning("implausible site meter reading %.1f kW ignored (%s)", import_kw, fault)
            self.live.site_meter_fault = fault
            return
        self.live.site_meter_fault = None
        now, wall = time.monotonic(), datetime.now(UTC)
        earliest, self.live.meter_clock_ahead_s = taken_from(
            now, wall, taken, self.cfg, self.live.meter_clock_ahead_s
        )
        self.live.meter = SiteMeterReading(import_kw, pv_kw, now, earliest)
        self.metrics.set("site_import_kw", import_kw)
        self.journal.sample(MeterSample(wall, "site", None, import_kw, None, pv_kw))
