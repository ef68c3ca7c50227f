"""Which increases still go out when a decrease of the same batch was not accepted.

A batch of TxProfiles goes out decreases first, then increases: the increases use headroom that the
decreases free. When a station does not accept a decrease (it refused, timed out or went offline), its
charger may go on drawing its old limit, so the headroom it was to free is missing. Holding every
increase of the site until the next cycle is safe but lets one faulty station starve a large site every
cycle. Instead, the increases held are the fewest (largest first) that cover the missing headroom on every
limit row the failed chargers share (the limit tree's rows, :mod:`envs.limit_rows`, and the site's import);
the others go out. Every row then carries at most what the plan put on it. Where the increases of the
batch cannot cover a row, every increase on that row is held, so the row carries no more than before the
batch, and the increases on the other rows go: holding all of the site's increases then (as a first version
did) held the whole site back for a feeder's slowest decrease (the V2G benchmark at 1,000 stations, a
step decided anew on 1,000 arrivals: 4,968 kW down to 2,226 kW for two seconds).

A change that cannot even be sent this cycle (:func:`split_updates`: its station still busy with an
earlier batch, offline or not registered) leaves its charger on its last profile; the changes of the
batch that would take a limit row past its limit with it there wait (:func:`hold_for_unsent`), both
ways: an increase where a decrease was not sent, a decrease (more discharge) where an increase was not.
Traced in the V2G benchmark at 1,000 stations: a batch of hundreds of profiles was still on its way at
the next cycle, whose increases went out to the free stations while the decreases they counted on
waited (a feeder two chargers, 22 kW, above its limit for 5 s); and, the other way, a feeder's EVs
discharged as planned while the charge that was to balance them waited (2.8 kW past its limit).
"""

from __future__ import annotations

from collections.abc import Collection

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
    increase = np.maximum(np.asarray(increase_kw, dtype=float), 0.0)
    send = increase > 0
    missing = rows.T @ np.maximum(np.asarray(missing_kw, dtype=float), 0.0)
    # a row that all its increases cannot cover holds every one of them: it carries no more than before
    # the batch (holding the whole site's increases instead held it back for one feeder's decreases)
    beyond = missing - rows.T @ increase > TOL
    on_beyond = send & (rows[:, beyond] > 0).any(axis=1)
    send &= ~on_beyond
    covered = rows.T @ np.where(on_beyond, increase, 0.0)
    for j in np.argsort(-increase, kind="stable"):
        short = (missing - covered > TOL) & ~beyond
        if not short.any():
            break
        if send[j] and (rows[j] > 0)[short].any():
            send[j] = False
            covered += rows[j] * float(increase[j])
    return send


def split_updates(
    live: LiveSite, updates: list[int], share_kw: FloatArray, free: Collection[str]
) -> tuple[list[tuple[ConnectorLive, float]], list[ConnectorLive]]:
    """The chargers of ``updates`` whose station can take a profile now (in ``free``: connected, no batch
    of its own on its way; and registered), each with its limit now, kW (its failsafe share ``share_kw``
    where none was sent), and those whose station cannot, with every other charger a batch is still on
    its way to (it may step onto it any time)."""
    chosen: list[tuple[ConnectorLive, float]] = []
    unsent: list[ConnectorLive] = []
    for i in updates:
        c = live.connectors[i]
        if c.station_id not in free or not live.stations[c.station_id].registered:
            unsent.append(c)
            continue
        chosen.append((c, c.limit_kw if c.limit_kw is not None else float(share_kw[i])))
    asked = set(updates)
    unsent += [c for c in live.connectors if c.pending_kw is not None and c.index not in asked]
    return chosen, unsent


def mark_pending(
    writes: list[dict[str, list[tuple[ConnectorLive, float, FloatArray | None]]]], clear: bool = False
) -> None:
    """Note on each connector of a batch's ``writes`` (stage by stage, per station) where its profiles
    on their way may put it (:attr:`ConnectorLive.pending_kw`), or (``clear``) that none is."""
    for stage in writes:
        for items in stage.values():
            for c, kw, row in items:
                if clear:
                    c.pending_kw = None
                    continue
                values = [kw] if row is None else [kw, *np.asarray(row[:2], dtype=float).tolist()]
                lo, hi = min(values), max(values)
                if c.pending_kw is not None:
                    lo, hi = min(lo, c.pending_kw[0]), max(hi, c.pending_kw[1])
                c.pending_kw = (lo, hi)


def _following(
    conns: list[ConnectorLive], now_kw: FloatArray, now: float, period_s: float, horizon_s: float
) -> tuple[FloatArray, FloatArray]:
    """Where each of ``conns`` may be now and in the next period on its last profile (``now_kw`` (m,), and
    its sent plan's periods within ``horizon_s`` of either, :func:`serving.order.plan_range`) or on one
    still on its way (:attr:`ConnectorLive.pending_kw`): (lowest, highest), each (2, m) kW. Vectorised
    where the window spans at most two periods (the horizon under half a period), else period by period."""
    lo = np.tile(np.asarray(now_kw, dtype=float), (2, 1))
    hi = lo.copy()
    rows = [j for j, c in enumerate(conns) if c.plan_kw is not None and len(c.plan_kw) >= 2]
    plans = [np.asarray(conns[j].plan_kw, dtype=float) for j in rows]
    age = np.array([now - conns[j].plan_start for j in rows])
    if rows and 2.0 * horizon_s >= period_s:
        for k in (0, 1):
            for r, j in enumerate(rows):
                lo[k, j], hi[k, j] = plan_range(plans[r], age[r] + k * period_s, period_s, horizon_s)
    elif rows:
        last = np.array([len(p) - 1 for p in plans])
        table = np.zeros((len(rows), int(last.max()) + 1))
        for r, p in enumerate(plans):
            table[r, : len(p)] = p
        at = np.arange(len(rows))
        for k in (0, 1):
            a = age + k * period_s
            first = table[at, np.clip((a - horizon_s) // period_s, 0, last).astype(int)]
            second = table[at, np.clip((a + horizon_s) // period_s, 0, last).astype(int)]
            lo[k, rows], hi[k, rows] = np.minimum(first, second), np.maximum(first, second)
    lo[0], hi[0] = np.minimum(lo[0], now_kw), np.maximum(hi[0], now_kw)
    for j, c in enumerate(conns):
        if c.pending_kw is not None:  # or on the profiles still on their way
            lo[:, j], hi[:, j] = np.minimum(lo[:, j], c.pending_kw[0]), np.maximum(hi[:, j], c.pending_kw[1])
    return lo, hi


def row_limits_kw(site: SiteArrays) -> FloatArray:
    """(K,) the symmetric limit of each of the tree's rows, in :func:`hold_rows`' order (its last column,
    the site's import, has its own limits)."""
    return np.asarray(LimitRows.from_site(site).limit, dtype=float)


def hold_for_unsent(
    site: SiteArrays,
    chosen: list[tuple[ConnectorLive, float]],
    unsent: list[ConnectorLive],
    limits_kw: FloatArray,
    schedule_kw: FloatArray | None,
    share_kw: FloatArray,
    other_kw: float,
    timing: tuple[float, float, float],
    rows_and_limits: tuple[FloatArray, FloatArray] | None = None,
) -> tuple[list[tuple[ConnectorLive, float]], BoolArray, FloatArray]:
    """The changes of a batch that go out while those of ``unsent`` cannot: each ``unsent`` charger (and
    each change held) follows its last profile, so a change goes out only where the limit rows (the
    tree's, both ways, and the site's import and export with ``other_kw`` of other net load) stay within
    their limits now and in the plan's next period (``schedule_kw``) - or no further above one than the
    plan or its predecessor. Changes are held one at a time, the one that helps most on the row furthest
    above its limit first (an increase where a row carries too much, a decrease where it gives back too
    much). ``timing``: (period s, horizon s, monotonic now); ``rows_and_limits``: :func:`hold_rows` and
    :func:`row_limits_kw` of ``site`` where the caller keeps them (built here otherwise). Returns the
    changes that go, (n,) the chargers that stay where they are (unsent or held), and every charger's
    limit (n,) with those where they are now."""
    period_s, horizon_s, now = timing
    n = site.n
    rows, tree_limit = rows_and_limits or (hold_rows(site), row_limits_kw(site))
    up = np.append(tree_limit, site.import_limit_kw - other_kw)
    down = np.append(-tree_limit, -site.export_limit_kw - other_kw)
    new = np.asarray(limits_kw, dtype=float)
    plan = np.column_stack([new, new]) if schedule_kw is None else np.asarray(schedule_kw, dtype=float)
    plan = np.column_stack([new, plan[:, 1] if plan.shape[1] >= 2 else new])
    lo, hi = plan.T.copy(), plan.T.copy()  # (2 periods, n)
    old_lo, old_hi = lo.copy(), hi.copy()
    now_kw = new.copy()
    for c in unsent:
        now_kw[c.index] = c.limit_kw if c.limit_kw is not None else float(share_kw[c.index])
    for c, kw in chosen:
        now_kw[c.index] = kw
    moving = [*unsent, *(c for c, _ in chosen)]
    at = np.array([c.index for c in moving], dtype=int)
    old_lo[:, at], old_hi[:, at] = _following(moving, now_kw[at], now, period_s, horizon_s)
    for c in unsent:
        lo[:, c.index], hi[:, c.index] = old_lo[:, c.index], old_hi[:, c.index]
    load_hi, load_lo = hi @ rows, lo @ rows  # (2, K + 1)
    idx = np.array([c.index for c, _ in chosen], dtype=int)
    alt_hi, alt_lo = hi.copy(), lo.copy()
    alt_hi[:, idx], alt_lo[:, idx] = old_hi[:, idx], old_lo[:, idx]
    # what neither end can avoid (the plan itself, or everything held) is no reason to hold
    planned = plan.T @ rows
    slack_up = np.maximum(np.maximum(planned, alt_hi @ rows) - up, 0.0) + 1e-6
    slack_down = np.maximum(down - np.minimum(planned, alt_lo @ rows), 0.0) + 1e-6
    free = np.zeros(n, dtype=bool)
    free[idx] = True
    for _ in range(len(idx) + 2 * len(up)):  # each pass holds a change or gives up on a row
        over, under = load_hi - up - slack_up, down - load_lo - slack_down
        worst_over, worst_under = float(over.max(initial=0.0)), float(under.max(initial=0.0))
        if worst_over <= 0.0 and worst_under <= 0.0:
            break
        if worst_over >= worst_under:
            k, r = np.unravel_index(int(np.argmax(over)), over.shape)
            gain = np.where(free, (hi[k] - old_hi[k]) * rows[:, r], 0.0)
        else:
            k, r = np.unravel_index(int(np.argmax(under)), under.shape)
            gain = np.where(free, (old_lo[k] - lo[k]) * rows[:, r], 0.0)
        j = int(np.argmax(gain))
        if gain[j] <= 1e-9:
            (slack_up if worst_over >= worst_under else slack_down)[k, r] += max(worst_over, worst_under)
            continue  # no change of this batch eases it: not this batch's doing
        load_hi += np.outer(old_hi[:, j] - hi[:, j], rows[j])
        load_lo += np.outer(old_lo[:, j] - lo[:, j], rows[j])
        hi[:, j], lo[:, j] = old_hi[:, j], old_lo[:, j]
        free[j] = False
    stay = np.zeros(n, dtype=bool)
    stay[[c.index for c in unsent]] = True
    stay[idx[~free[idx]]] = True
    return [x for x in chosen if free[x[0].index]], stay, np.where(stay, now_kw, new)
