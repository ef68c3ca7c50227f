"""Transactions whose EV has not reported its needs yet (OCPP 2.1 ``NotifyEVChargingNeeds``).

A 2.1 station sends the EV's needs (energy, departure, V2X parameters) after its ``TransactionEvent``
is answered, so a cycle may see a transaction a fraction of a second before them. Deciding it on the
defaults of an EV that declared nothing (``default_session_energy_kwh``, ``default_dwell_h``) takes them
for its truth: 20 kWh in 8 h where the EV asked 0.35 kWh in 8 minutes, the other EVs' share given to it.
Such a transaction is instead *held*, for at most ``needs_wait_s`` after its start: it is no EV of the
decision, it keeps drawing its failsafe share (reserved for it, as for a transaction that starts after a
cycle) and gets no profile; as soon as the needs of every held transaction arrived (or the wait ran out)
the site loop decides the same step again (:func:`pause`). 1.6 and 2.0.1 transactions are never held.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import numpy as np

from envs.core import BoolArray
from serving.live import LiveSite

if TYPE_CHECKING:
    from serving.loop import SiteLoop

LOG = logging.getLogger("evdlm.serving")

HELD_VERSIONS = frozenset({"2.1"})
"""OCPP versions whose EVs are waited for (the V2X EVSEs; a 2.0.1 EV's needs stay optional, as before)"""
POLL_S = 0.05
"""how often a re-decision due waits for the profiles of the cycle before to be answered, s"""


def awaiting_needs(live: LiveSite, now: float, wait_s: float) -> BoolArray:
    """(n,) the running transactions on a 2.1 station whose EV's needs have not arrived, started less than
    ``wait_s`` before monotonic ``now`` (later they are decided on the defaults, as before)."""
    out = np.zeros(len(live.connectors), dtype=bool)
    for c in live.connectors:
        st = live.stations.get(c.station_id)
        if c.active and c.needs_at == -np.inf and st is not None and st.ocpp_version in HELD_VERSIONS:
            out[c.index] = now - c.started_at < wait_s
    return out


def held_settled(live: LiveSite, held: BoolArray, now: float, wait_s: float) -> bool:
    """Whether a cycle that held ``held`` should be decided again: none of them awaits its needs any more
    (arrived, transaction ended, or its wait ran out)."""
    return not bool(np.any(held & awaiting_needs(live, now, wait_s)))


def held_due(live: LiveSite, held: BoolArray, wait_s: float) -> float:
    """Monotonic time by which every held transaction's wait has run out (-inf where none is held)."""
    starts = [c.started_at for c in live.connectors if held[c.index]]
    return max(starts) + wait_s if starts else -np.inf


async def pause(loop: SiteLoop, until: float) -> None:
    """Wait until monotonic ``until`` (the next cycle); meanwhile, once the transactions the last cycle
    held have their needs (``live.needs_arrived`` wakes it) or their wait ran out, and the profiles of the
    cycle before are answered (a station still busy would skip the new ones), decide the same step again
    (:meth:`~serving.loop.SiteLoop.run_cycle` with ``redecide``), and keep waiting."""
    live, wait_s = loop.live, loop.cfg.needs_wait_s
    while (left := until - time.monotonic()) > 0:
        if not loop.held.any():
            await asyncio.sleep(left)
            return
        now = time.monotonic()
        if held_settled(live, loop.held, now, wait_s):
            if loop.dispatcher.in_flight:
                await asyncio.sleep(min(POLL_S, left))
                continue
            try:
                await loop.run_cycle(redecide=True)
            except Exception:
                LOG.exception("control cycle %d decided again failed", loop.cycle)
                loop.held = np.zeros_like(loop.held)
            continue
        live.needs_arrived.clear()
        timeout = min(left, max(held_due(live, loop.held, wait_s) - now, 0.0) + 1e-3)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(live.needs_arrived.wait(), timeout)
