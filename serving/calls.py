"""What the central system asks of a station besides reading it, each outcome counted in the metrics.

:func:`call_profile` sends one SetChargingProfile. :class:`MeterTriggers` asks for readings after a
change: once a station accepts a TxProfile that moved a charger's limit, it is asked for that
connector's MeterValues at once (``TriggerMessage``: 1.6 Remote Trigger, 2.0.1 / 2.1 use case F06).
The reading that answers (its sampled values' ``context`` is ``Trigger``) was taken after the change,
so the base load under the new limit is known at the next cycle instead of after the station's own
sample interval (:meth:`serving.live.ConnectorLive.draw_bounds_kw`). A transaction's start is asked for
its reading the same way (:meth:`MeterTriggers.after_start`). A connection that does not implement it is
not asked again; a Rejected one is asked at the next change."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any

from ocpp.exceptions import NotImplementedError as OCPPNotImplemented
from ocpp.exceptions import NotSupportedError

from serving.csms import Station
from serving.live import ConnectorLive
from serving.metrics import Metrics
from serving.profiles import trigger_meter_values

LOG = logging.getLogger("evdlm.serving")


class MeterTriggers:
    """Sends the TriggerMessages (spawned: a batch of profiles does not wait for them)."""

    def __init__(
        self, metrics: Metrics, spawn: Callable[[Coroutine[Any, Any, Any]], asyncio.Task[Any]], enabled: bool
    ) -> None:
        self.metrics = metrics
        self._spawn = spawn
        self.enabled = enabled
        self._refused: dict[str, Station] = {}
        """per station, the connection that does not implement it (not asked again)"""

    def after_start(self, cp: Station, c: ConnectorLive) -> None:
        """``c``'s transaction start was answered and it has no reading yet: ask ``cp`` for its MeterValues
        now. Until a reading comes, the snapshot counts what a new transaction draws under its failsafe as
        base load (its draw unknown, the base load's bracket takes its high side) and the policy shares
        out only what is left, until the station's own sample (the V2G benchmark: up to 5 s later)."""
        if c.readings or c.trigger_sent_at is not None or not self._asks(cp):
            return
        self.metrics.inc("start_triggers_total")
        self.after_change(cp, c)

    def _asks(self, cp: Station) -> bool:
        """Triggers are on and ``cp`` (this connection) has not answered NotImplemented."""
        return self.enabled and self._refused.get(cp.id) is not cp

    def after_change(self, cp: Station, c: ConnectorLive) -> None:
        """``c``'s new limit was accepted and logged: ask ``cp`` for its MeterValues now."""
        if not self._asks(cp):
            return
        if c.trigger_sent_at is None:  # the oldest unanswered one: a triggered reading was taken after it
            c.trigger_sent_at = time.monotonic()
        self._spawn(self._call(cp, c))

    async def _call(self, cp: Station, c: ConnectorLive) -> None:
        """Send it; an answer NotImplemented (or a CallError NotImplemented / NotSupported) marks the
        connection as not to be asked again."""
        try:
            res = await cp.call(trigger_meter_values(cp.version, c.connector_id), suppress=False)
            status = str(getattr(res, "status", ""))
        except (OCPPNotImplemented, NotSupportedError):
            status = "NotImplemented"
        except Exception as err:
            LOG.debug("station %s: TriggerMessage failed: %s", cp.id, err)
            status = "error"
        accepted = _accepted(status)
        outcome = "accepted" if accepted else "not_implemented" if "NotImplemented" in status else "rejected"
        self.metrics.inc("messages_sent_total", action="TriggerMessage", outcome=outcome)
        if not accepted:
            c.trigger_sent_at = None
        if outcome == "not_implemented":
            LOG.info("station %s does not implement TriggerMessage MeterValues: not asked again", cp.id)
            self._refused[cp.id] = cp


async def call_profile(cp: Station, req: Any, purpose: str, metrics: Metrics, validate: bool = True) -> bool:
    """Send one SetChargingProfile; True when accepted. ``validate=False`` skips the library's schema
    check of request and answer: the TxProfiles of every cycle (a 30-period schedule cost 2 ms of the
    event loop per station; :func:`serving.profiles.set_charging_profile` is checked against the schemas
    in the tests, and the station still validates what it receives)."""
    try:
        res = await cp.call(req, suppress=False, skip_schema_validation=not validate)
    except Exception as err:
        LOG.warning("station %s: SetChargingProfile (%s) failed: %s", cp.id, purpose, err)
        metrics.inc("messages_sent_total", action="SetChargingProfile", outcome="error")
        return False
    accepted = _accepted(str(getattr(res, "status", "")))
    metrics.inc(
        "messages_sent_total", action="SetChargingProfile", outcome="accepted" if accepted else "rejected"
    )
    return accepted


def _accepted(status: str) -> bool:
    """Whether a station's answer status (the enum's value or its name) is Accepted."""
    return status.endswith("Accepted") or status == "accepted"
