"""Which increases still go out when a decrease of the same batch was not accepted.

A batch of TxProfiles goes out decreases first, then increases: the increases use headroom that the
decreases free. When a station does not accept a decrease (it refused, timed out or went offline), its
charger may go on drawing its old limit, so the headroom it was to free is missing. Holding every
increase of the site until the next cycle is safe but lets one faulty station starve a large site every
cycle. Instead, the increases held are the fewest (largest first) that cover the missing headroom on every
limit row the failed chargers share (the limit tree's rows, :mod:`envs.limit_rows`, and the site's import);
the others go out. Every row then carries at most what the plan put on it. Where the increases of the
batch cannot cover a row, all of them are held, as before.
"""

from __future__ import annotations

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays
from envs.limit_rows import LimitRows

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
