"""What a station tells the central system, typed, and the narrow doors the edges talk through.

:mod:`serving.csms` turns every OCPP 1.6J and 2.0.1 payload into one of the events below at the protocol
edge; nothing past it sees a raw dict. Units are SI-ish and explicit in the names (W, Wh, A); times are
timezone-aware UTC (None where the station sent none or an unreadable one).

Two protocols keep the edges off the whole service: :class:`StationEvents` is all the OCPP handlers may
call, :class:`OperatorView` all the HTTP API and the dashboard may read or push.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from serving.metrics import Metrics


@dataclass(frozen=True)
class Booted:
    """A station booted (BootNotification)."""

    station_id: str
    version: str
    vendor: str | None
    model: str | None


@dataclass(frozen=True)
class StatusChanged:
    """A connector's (1.6) or EVSE's (2.0.1) status."""

    station_id: str
    connector_id: int
    status: str


@dataclass(frozen=True)
class MeterReading:
    """Whole-connector meter values (per-phase values are left out). ``connector_id`` 0 is the station's
    own meter (a site meter where configured so)."""

    station_id: str
    connector_id: int
    power_import_w: float | None
    power_export_w: float | None
    energy_import_wh: float | None
    """import energy register"""
    energy_export_wh: float | None = None
    """export energy register (V2G)"""
    triggered: bool = False
    """sent because the central system asked for it (a sampled value's ``context`` is ``Trigger``): taken
    after that TriggerMessage went out"""
    taken: datetime | None = None
    """when the station took it (its meter values' earliest ``timestamp``; None: it sent no readable one)"""


@dataclass(frozen=True)
class V2XNeeds:
    """What a 2.1 EV declared about bidirectional transfer (``v2xChargingParameters``), as declared.

    Energies are the EV's, in Wh, signed as in OCPP 2.1: ``min_v2x_energy_wh`` is the energy to the
    bottom of its V2X range (negative: the EV holds that much above it, which it may give back)."""

    offered: bool
    """the EV allows discharge: a bidirectional transfer mode and a discharge power or current above 0"""
    transfer_modes: tuple[str, ...]
    max_discharge_w: float | None
    max_discharge_a: float | None
    min_energy_wh: float | None
    max_energy_wh: float | None
    min_v2x_energy_wh: float | None
    max_v2x_energy_wh: float | None
    target_soc: float | None
    control_mode: str | None


@dataclass(frozen=True)
class OperationModes:
    """The V2X operation modes a 2.1 station reports (``V2XChargingCtrlr.SupportedOperationModes``)."""

    station_id: str
    modes: tuple[str, ...]


@dataclass(frozen=True)
class ChargingNeeds:
    """What the EV asked for (2.0.1 / 2.1 NotifyEVChargingNeeds)."""

    station_id: str
    connector_id: int
    energy_wh: float | None
    """energy the EV still wants"""
    ev_max_current_a: float | None
    """AC: the EV's per-phase current limit"""
    ev_max_power_w: float | None
    """DC: the EV's power limit"""
    departure: datetime | None
    v2x: V2XNeeds | None = None
    """2.1: the EV's V2X parameters (None where it sent none)"""


@dataclass(frozen=True)
class TransactionStarted:
    """A transaction began (1.6 StartTransaction, 2.0.1 TransactionEvent of a transaction not seen yet).

    ``ocpp_tx_id`` is None where the central system assigns it (1.6)."""

    station_id: str
    connector_id: int
    ocpp_tx_id: str | None
    id_tag: str | None
    meter_start_wh: float
    time: datetime | None


@dataclass(frozen=True)
class TransactionUpdated:
    """A 2.0.1 TransactionEvent Started/Updated: the transaction, where it runs (``connector_id``, None
    where the event names no EVSE) and the meter values it carried (None where it carried none)."""

    station_id: str
    ocpp_tx_id: str
    connector_id: int | None
    id_tag: str | None
    energy_wh: float | None
    time: datetime | None
    reading: MeterReading | None


@dataclass(frozen=True)
class TransactionEnded:
    """A transaction ended (1.6 StopTransaction, 2.0.1 TransactionEvent Ended)."""

    station_id: str
    ocpp_tx_id: str
    meter_stop_wh: float | None
    time: datetime | None
    reason: str | None


class StationEvents(Protocol):
    """What the OCPP handlers of :mod:`serving.csms` may do: hand over typed events and count."""

    @property
    def metrics(self) -> Metrics: ...

    @property
    def heartbeat_interval_s(self) -> int: ...

    @property
    def response_timeout_s(self) -> float: ...

    def seen(self, station_id: str) -> None:
        """Any sign of life (Heartbeat, Authorize)."""

    async def booted(self, event: Booted) -> None: ...

    def registered(self, station_id: str) -> None:
        """The station is registered on its connection (BootNotification answered Accepted, or another
        request received): from now on the central system may send it requests."""

    def transaction_answered(self, station_id: str, connector_id: int) -> None:
        """A transaction start (or 2.0.1 update) on ``connector_id`` was answered: its id is known to
        both sides, so a TxProfile may name it."""

    def status_changed(self, event: StatusChanged) -> None: ...

    def meter_reading(self, event: MeterReading) -> None: ...

    def charging_needs(self, event: ChargingNeeds) -> None: ...

    async def transaction_started(self, event: TransactionStarted) -> str | None:
        """The transaction's OCPP id, or None where the connector is not mapped (refused)."""

    async def transaction_updated(self, event: TransactionUpdated) -> None: ...

    async def transaction_ended(self, event: TransactionEnded) -> None: ...


class OperatorView(Protocol):
    """What the operator HTTP API and the dashboard may read or push."""

    @property
    def operator_token(self) -> str | None: ...

    @property
    def control_interval_s(self) -> float: ...

    @property
    def accepts_meter_push(self) -> bool:
        """True where the site meter source is the HTTP push endpoint."""

    @property
    def policy_names(self) -> tuple[str | None, str]:
        """``(primary policy or None, fallback: a policy name or 'static')``"""

    def health(self) -> tuple[dict[str, Any], bool]:
        """``(body, ok)`` of ``/health``."""

    def state(self) -> dict[str, Any]:
        """The live site as JSON-ready data (``/api/state``, :func:`serving.view.site_state`)."""

    def subscribe(self) -> asyncio.Queue[dict[str, Any]]:
        """A queue receiving :meth:`state` after every cycle."""

    def unsubscribe(self, q: asyncio.Queue[dict[str, Any]]) -> None: ...

    async def decisions(self, limit: int) -> list[dict[str, object]]: ...

    async def transactions(self, limit: int) -> list[dict[str, object]]: ...

    def metrics_text(self) -> str: ...

    def push_site_meter(
        self, import_kw: float, pv_kw: float | None, taken: datetime | None = None
    ) -> None: ...
