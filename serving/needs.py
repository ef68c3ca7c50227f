"""Transactions whose EV has not reported its needs yet (OCPP 2.1 ``NotifyEVChargingNeeds``).

A 2.1 station sends the EV's needs (energy, departure, V2X parameters) after its ``TransactionEvent``
is answered, so a cycle may see a transaction a fraction of a second before them. Deciding it on the
defaults of an EV that declared nothing (``default_session_energy_kwh``, ``default_dwell_h``) takes them
for its truth: 20 kWh in 8 h where the EV asked 0.35 kWh in 8 minutes, the other EVs' share given to it.
Such a transaction is instead *held*, for at most ``needs_wait_s`` after its start: it is no EV of the
decision, it keeps drawing its failsafe share (reserved for it, as for a transaction that starts after a
cycle) and gets no profile; as soon as the needs of every held transaction arrived (or the wait ran out)
the site loop decides the same step again (:func:`pause`), as it does when the needs of a transaction
that started after the cycle arrive (of any version). 1.6 and 2.0.1 transactions are never held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from envs.core import BoolArray
from serving.config import ServingConfig
from serving.live import LiveSite
from serving.taken import reading_slack_s

if TYPE_CHECKING:
    from serving.loop import SiteLoop

LOG = logging.getLogger("evdlm.serving")

HELD_VERSIONS = frozenset({"2.1"})
"""OCPP versions whose EVs are waited for (the V2X EVSEs; a 2.0.1 EV's needs stay optional, as before)"""
POLL_S = 0.05
"""how often a re-decision due waits for the profiles of the cycle before to be answered, s"""
REDECIDE_GAP = 0.05
"""the least time from a cycle's reading to the step decided again, in control intervals"""


def awaiting_needs(live: LiveSite, now: float, wait_s: float) -> BoolArray:
    """(n,) the running transactions on a 2.1 station whose EV's needs have not arrived, started less than
    ``wait_s`` before monotonic ``now`` (later they are decided on the defaults, as before)."""
    out = np.zeros(len(live.connectors), dtype=bool)
    for c in live.connectors:
        st = live.stations.get(c.station_id)
        if c.active and c.needs_at == -np.inf and st is not None and st.ocpp_version in HELD_VERSIONS:
            out[c.index] = now - c.started_at < wait_s
    return out


def awaiting_meter(live: LiveSite, cfg: ServingConfig, now: float) -> BoolArray:
    """(n,) the running transactions the fresh site meter may not show yet: its reading may have been taken
    before the service learnt of their start (:meth:`~serving.live.SiteMeterReading.earliest`), for at most
    two reading slacks after it. Decided on that reading, such an EV's draw is both in the base load (the
    meter may show it) and an EV of the decision: at 1,000 stations (V2G benchmark) the step's first cycle
    saw 107 of the EVs that had just arrived together and, with all their draw in the base load, gave each
    0 kW for the 5 s until the step was decided again. Held instead, it keeps its failsafe share (reserved,
    no profile) until a reading shows it (:func:`meter_before_starts`), as one awaiting its needs does."""
    out = np.zeros(len(live.connectors), dtype=bool)
    meter = live.meter
    if meter is None or now - meter.at > cfg.meter_timeout_s:
        return out
    earliest, slack = meter.earliest(cfg), reading_slack_s(cfg)
    for c in live.connectors:
        out[c.index] = c.active and earliest < c.started_at and now < c.started_at + 2.0 * slack
    return out


def redecide_due(loop: SiteLoop, waiting: BoolArray) -> bool:
    """Whether the step should be decided again: a transaction the last cycle held no longer awaits its
    needs (they arrived, it ended, or its wait ran out), or the needs of one arrived since the cycle read
    (a transaction that started after it, or one decided on the defaults once its wait ran out)."""
    if bool(np.any(loop.held & ~waiting)):
        return True
    return any(c.active and c.needs_at > loop.read_at for c in loop.live.connectors)


def meter_before_starts(loop: SiteLoop, now: float) -> bool:
    """Whether the last site meter reading (fresh) may have been taken before a running transaction started
    drawing (:func:`awaiting_meter` holds one, for at most two slacks after its start). Decided on it,
    each such EV's draw is both in the base load's high side (the meter may not show it:
    :func:`serving.at_meter.draws_at_meter`) and an EV of the decision, and the EVs share out what is left
    after counting it twice. A thousand EVs arriving together (the V2G benchmark), learnt of over 4 s as
    their TransactionEvents were taken in: the step decided again with 552 of them counted twice gave all
    1,000 2.2 of the 4.97 MW the connection allowed, for the rest of the step."""
    return bool(awaiting_meter(loop.live, loop.cfg, now).any())


def first_expiry(live: LiveSite, waiting: BoolArray, wait_s: float) -> float:
    """Monotonic time the first of the ``waiting`` transactions stops waiting for its needs (inf: none)."""
    starts = [c.started_at for c in live.connectors if waiting[c.index]]
    return min(starts) + wait_s if starts else np.inf


async def pause(loop: SiteLoop, until: float) -> None:
    """Wait until monotonic ``until`` (the next cycle); meanwhile decide the same step again
    (:meth:`~serving.loop.SiteLoop.run_cycle` with ``redecide``) as soon as :func:`redecide_due`, no
    starting 2.1 transaction still awaits its needs (:func:`awaiting_needs`: EVs that arrive together are
    decided together), the profiles of the cycle before are answered (a station still busy would skip the
    new ones), ``REDECIDE_GAP`` of a control interval has passed since it read and the site meter has read
    since every running transaction started (:func:`meter_before_starts`); and keep waiting.
    ``live.needs_arrived`` wakes it."""
    live, wait_s = loop.live, loop.cfg.needs_wait_s
    gap_s = REDECIDE_GAP * loop.cfg.control_interval_s
    while (left := until - time.monotonic()) > 0:
        live.needs_arrived.clear()  # before looking: needs that arrive from here on wake the wait below
        now = time.monotonic()
        waiting = awaiting_needs(live, now, wait_s)
        if not waiting.any() and redecide_due(loop, waiting):
            if loop.dispatcher.in_flight or now - loop.read_at < gap_s or meter_before_starts(loop, now):
                await asyncio.sleep(min(POLL_S, left))
                continue
            try:
                await loop.run_cycle(redecide=True)
            except Exception:
                LOG.exception("control cycle %d decided again failed", loop.cycle)
                await asyncio.sleep(max(until - time.monotonic(), 0.0))
                return
            continue
        timeout = min(left, max(first_expiry(live, waiting, wait_s) - now, 0.0) + 1e-3)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.needs_arrived.wait(), timeout)
