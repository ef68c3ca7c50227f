"""Increases released as the decreases they count on are accepted, not after the last of them.

A batch goes out in stages (:mod:`serving.order`), each once the one before was accepted: decreases, then
the increases that use the headroom they free. Waiting for *every* decrease before *any* increase leaves
the site drawing less than both plans for the slowest station's round trip: in the V2G benchmark at 1,000
stations a step that moved 730 chargers dipped from 4,871 kW to 1,402 kW for about a second (0.8 kWh of
charging lost at each such step, a fifth of what the EVs export in the window).

Here each increase goes out as soon as the decreases not yet accepted are covered, on every limit row, by
the increases still held back (:func:`serving.hold.increases_to_send`: the check a batch already makes
when a station does not accept its decrease). Every state the site passes through is then within its limits:
a row carries the stage's final load, which is within them, plus the decreases still on their way, less
the increases held back, which cover them. A station's increases go after its own decreases were answered
(one call at a time per station). Where a decrease is not accepted, the increases that count on it are
never sent (held until the next cycle, as before). The decreases go a few dozen stations at a time, the
largest first (:data:`DECREASES_IN_FLIGHT`), so that increases follow each handful instead of waiting behind
all of them.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import numpy as np

from envs.core import FloatArray
from serving.hold import increases_to_send
from serving.live import ConnectorLive
from serving.metrics import Metrics

LOG = logging.getLogger("evdlm.serving")
RELEASE_EVERY_S = 0.05
"""answers are weighed at most this often, s (each weighing is a pass over the batch's increases)"""
DECREASES_IN_FLIGHT = 32
"""stations whose decreases are on their way at once (largest moves first): hundreds sent together are
answered together, after the last of them was written, and every increase waited that long (at 1,000
stations a step decided anew dipped the site by 1.8 MW for half a second); a few dozen keep the link
busy while the increases they free follow each handful"""

Item = tuple[ConnectorLive, float, FloatArray | None]
Stage = dict[str, list[Item]]
Send = Callable[[str, list[Item]], Awaitable[bool]]


def moves_of(stage: Stage, moves: FloatArray) -> FloatArray:
    """(n,) ``moves`` (n,) of the chargers of ``stage``, 0 elsewhere (>= 0)."""
    out = np.zeros(len(moves))
    for items in stage.values():
        for c, _, _ in items:
            out[c.index] = abs(float(moves[c.index]))
    return out


async def send_released(
    rows: FloatArray,
    decreases: Stage,
    down_kw: FloatArray,
    increases: Stage,
    up_kw: FloatArray,
    send: Send,
    in_flight: int = DECREASES_IN_FLIGHT,
) -> tuple[bool, int]:
    """Send the stations' ``decreases``, ``in_flight`` stations at a time (largest moves first), and each
    of the ``increases`` once released (above); a profile of the second stage that does not move its limit
    now (its plan changed) once every decrease was accepted. ``down_kw``, ``up_kw`` (n,): how far each
    limit moves in either stage. Returns whether every decrease was accepted and how many of the second
    stage were held (never sent)."""
    pending = moves_of(decreases, down_kw)
    # popped from the end: the largest first
    queue = sorted(decreases.items(), key=lambda kv: sum(float(pending[c.index]) for c, _, _ in kv[1]))
    queued = {sid for sid, _ in queue}  # a station's increases go after its own decreases
    held_up = moves_of(increases, up_kw)
    still = held_up <= 0  # in the stage for its plan alone (its limit now unchanged): after every decrease
    waiting = {sid: list(items) for sid, items in increases.items()}
    busy: set[str] = set()
    tasks: set[asyncio.Task[bool]] = set()
    accepted = True
    done = asyncio.Event()
    loop = asyncio.get_running_loop()
    due: asyncio.Handle | None = None
    last = -np.inf

    def release() -> None:
        nonlocal due, last
        due, last = None, loop.time()
        go = increases_to_send(rows, pending, held_up) | (still & ~pending.any())
        for sid in [s for s in waiting if s not in busy and s not in queued]:
            ready = [x for x in waiting[sid] if go[x[0].index]]
            if not ready:
                continue
            rest = [x for x in waiting[sid] if not go[x[0].index]]
            if rest:
                waiting[sid] = rest
            else:
                del waiting[sid]
            for c, _, _ in ready:
                held_up[c.index] = 0.0
            start(sid, ready, None)
        if not tasks:
            done.set()

    def start(sid: str, items: list[Item], freed: list[int] | None) -> None:
        busy.add(sid)
        task = asyncio.ensure_future(send(sid, items))
        tasks.add(task)
        task.add_done_callback(lambda t: finished(t, sid, freed))

    def finished(task: asyncio.Task[bool], sid: str, freed: list[int] | None) -> None:
        nonlocal accepted, due
        tasks.discard(task)
        busy.discard(sid)
        error = None if task.cancelled() else task.exception()
        if error is not None:
            LOG.warning("station %s: profiles not sent: %r", sid, error)
        ok = not task.cancelled() and error is None and bool(task.result())
        if freed is not None:
            if ok:
                pending[freed] = 0.0
            accepted = accepted and ok
            next_decrease()
        if due is None:  # weighed at once, at most every RELEASE_EVERY_S (a weighing costs ~ms at 1,000)
            wait = last + RELEASE_EVERY_S - loop.time()
            due = loop.call_later(wait, release) if wait > 0 else loop.call_soon(release)

    def next_decrease() -> None:
        if queue:
            sid, items = queue.pop()
            queued.discard(sid)
            start(sid, items, [c.index for c, _, _ in items])

    for _ in range(max(in_flight, 1)):
        next_decrease()
    release()  # increases the decreases need not wait for (the rows had room)
    last = -np.inf  # the first answer is weighed at once
    try:
        await done.wait()
    finally:
        if due is not None:
            due.cancel()
        for task in list(tasks):
            task.cancel()
    return accepted, sum(len(items) for items in waiting.values())


def without_held(
    rows: FloatArray, stage: Stage, results: list[bool], moved: FloatArray, nxt: Stage, moves: FloatArray
) -> tuple[Stage, int]:
    """The next stage without the changes that would use the headroom the changes of ``stage`` not
    accepted (``results`` per station) were to free (:mod:`serving.hold`), and how many were held.
    ``moved``, ``moves`` (n,): how far each charger's limit moves in ``stage`` and in ``nxt``, >= 0."""
    n = rows.shape[0]
    failed = [c.index for (_, it), ok in zip(stage.items(), results, strict=True) if not ok for c, _, _ in it]
    missing = np.zeros(n)
    missing[failed] = moved[failed]
    go = increases_to_send(rows, missing, moves_of(nxt, moves))
    held = sum(1 for it in nxt.values() for c, _, _ in it if not go[c.index])
    return {s: kept for s, it in nxt.items() if (kept := [x for x in it if go[x[0].index]])}, held


def note_held(metrics: Metrics, held: int) -> None:
    """Log and count ``held`` increases kept back until the next cycle (a decrease was not accepted)."""
    if held:
        LOG.warning("a change was not accepted: %d other(s) held until next cycle", held)
        metrics.inc("increases_held_total", float(held))
