"""Which increases still go out when a decrease of the same batch was not accepted.

A batch of TxProfiles goes out decreases first, then increases: the increases use headroom that the
decreases free. When a station does not accept a decrease (it refused, timed out or went offline), its
charger may go on drawing its old limit, so the headroom it was to free is missing. Holding every
increase of the site until the next cycle is safe but lets one faulty station starve a large site every
cycle. Instead, the increases held are the fewest (largest first) that cover the missing headroom on every
limit row the failed chargers share (the limit tree's rows, :mod:`envs.limit_rows`, and the site's import);
the others go out. Every row then carries at most what the plan put on it. Where the increases of the
batch cannot cover a row, all of them are held, as before.

The same holds for a decrease that cannot even be sent this cycle (:func:`split_updates`: its station is
still busy with an earlier batch, offline or not registered): its charger goes on following its last
profile, so the increases that would use the headroom it was to free wait (:func:`hold_for_unsent`). At
1,000 stations a batch of hundreds of profiles was still on its way at the next cycle; that cycle's
increases went out to the free stations while the decreases they counted on waited, and a feeder of
the V2G benchmark carried two chargers (22 kW) above its limit for 5 s.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays
from envs.limit_rows import LimitRows
from serving.live import ConnectorLive, LiveSite
from serving.order import plan_range

TOL = 1e-9


def hold_rows(site: SiteArrays) -> FloatArray:
    """(n, K + 1) use of each row per kW a charger draws: the limit rows that can bind, then the import."""
    return np.column_stack([LimitRows.from_site(site).weights, np.ones(site.n)])


def increases_to_send(rows: FloatArray, missing_kw: FloatArray, increase_kw: FloatArray) -> BoolArray:
    """(n,) the increases that may go out.

    ``rows`` (n, K): :func:`hold_rows`; ``missing_kw`` (n,) >= 0: how far each charger whose decrease was
    not accepted may still draw above its new limit; ``increase_kw`` (n,) >= 0: each charger's planned
    increase in this batch (0 where it has none)."""
    send = np.asarray(increase_kw, dtype=float) > 0
    missing = rows.T @ np.maximum(np.asarray(missing_kw, dtype=float), 0.0)
    covered = np.zeros_like(missing)
    for j in np.argsort(-np.asarray(increase_kw, dtype=float), kind="stable"):
        short = missing - covered > TOL
        if not short.any():
            return send
        if send[j] and (rows[j] > 0)[short].any():
            send[j] = False
            covered += rows[j] * float(increase_kw[j])
    if (missing - covered > TOL).any():
        return np.zeros_like(send)
    return send


def split_updates(
    live: LiveSite, updates: list[int], share_kw: FloatArray, ready: Callable[[str], bool]
) -> tuple[list[tuple[ConnectorLive, float]], list[ConnectorLive]]:
    """The chargers of ``updates`` whose station can take a profile now (``ready``), each with its limit
    now, kW (its failsafe share ``share_kw`` where none was sent), and those whose station cannot."""
    chosen: list[tuple[ConnectorLive, float]] = []
    unsent: list[ConnectorLive] = []
    for i in updates:
        c = live.connectors[i]
        if not ready(c.station_id):
            unsent.append(c)
            continue
        chosen.append((c, c.limit_kw if c.limit_kw is not None else float(share_kw[i])))
    return chosen, unsent


def _most_now_and_next(
    c: ConnectorLive, now_kw: float, age_s: float, period_s: float, horizon_s: float
) -> FloatArray:
    """The most charger ``c`` may draw now and over the next period on its own (its sent plan's periods
    within ``horizon_s`` of either), kW: (2,)."""
    if c.plan_kw is None or len(c.plan_kw) < 2:
        return np.array([now_kw, now_kw])
    return np.array(
        [
            max(now_kw, plan_range(c.plan_kw, age_s, period_s, horizon_s)[1]),
            plan_range(c.plan_kw, age_s + period_s, period_s, horizon_s)[1],
        ]
    )


def hold_for_unsent(
    rows: FloatArray,
    chosen: list[tuple[ConnectorLive, float]],
    unsent: list[ConnectorLive],
    limits_kw: FloatArray,
    schedule_kw: FloatArray | None,
    share_kw: FloatArray,
    period_s: float,
    horizon_s: float,
    now: float,
) -> tuple[list[tuple[ConnectorLive, float]], BoolArray, FloatArray]:
    """The changes of a batch that go out while those of ``unsent`` cannot: without the increases (the
    fewest, largest first: :func:`increases_to_send`) that would use the headroom ``unsent`` chargers
    were to free, now or in the next period of the plan (``schedule_kw``, ``period_s``; each follows
    its last profile, its plan's periods within ``horizon_s`` either way). Returns the changes that go,
    (n,) the chargers that stay where they are (unsent or held), and every charger's limit (n,) with
    those where they are now."""
    n = rows.shape[0]
    new = np.asarray(limits_kw, dtype=float)
    plan = np.column_stack([new, new]) if schedule_kw is None else np.asarray(schedule_kw, dtype=float)
    plan = plan[:, :2] if plan.shape[1] >= 2 else np.column_stack([plan[:, 0], plan[:, 0]])
    missing = np.zeros(n)
    where = new.copy()
    for c in unsent:
        now_kw = c.limit_kw if c.limit_kw is not None else float(share_kw[c.index])
        most = _most_now_and_next(c, now_kw, now - c.plan_start, period_s, horizon_s)
        missing[c.index] = max(float(np.max(most - plan[c.index])), 0.0)
        where[c.index] = now_kw
    increase = np.zeros(n)
    for c, now_kw in chosen:
        increase[c.index] = max(float(np.max(plan[c.index])) - now_kw, 0.0)
    go = increases_to_send(rows, missing, increase)
    kept = np.zeros(n, dtype=bool)
    kept[[c.index for c in unsent]] = True
    out = []
    for c, now_kw in chosen:
        if increase[c.index] > 0 and not go[c.index]:
            kept[c.index], where[c.index] = True, now_kw
        else:
            out.append((c, now_kw))
    return out, kept, where
