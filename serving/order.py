"""Which changes of a batch of limits go out first, and which side each limit is rounded to.

A batch of TxProfiles goes out in two phases: the first, acknowledged, then the second. Without V2G the
first phase is every decrease: in between, the site draws less than both the old and the new plan, so no
import or node limit is exceeded. With discharge (and with PV behind an export limit) that is no longer
safe: a decrease is an increase of export (a charger drawing less, or an EV discharging more), so
decreases alone can take the site over its export limit while the increases that balance them wait. The
first phase is then the other direction: every increase (less export), then the decreases.

:func:`first_phase` chooses by what the site would do in between: with only the decreases applied, or
only the increases, whichever leaves less above the import limit, the export limit and every node's
limit (in both directions); decreases first where both are within them (the order without V2G).

:func:`import_binds` tells which limit a plan is closer to: a limit in a profile unit (0.1 A, 1 W) is
rounded toward the safe side of that limit (:func:`serving.dispatch.signed_profile`): down (less charge,
more discharge) where the import binds, up (more charge, less discharge) where the export does.
"""

from __future__ import annotations

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays

TOL_KW = 1e-6
PHASE_KV = 0.23
"""kW per A on one phase, to weigh a node's phase current above its limit with the kW ones"""


def site_excess_kw(site: SiteArrays, charger_kw: FloatArray, other_kw: float) -> float:
    """How far the chargers at ``charger_kw`` (n,) with ``other_kw`` of net load besides them (base load,
    battery, less PV) take the site above its import limit, its export limit or a node's limit (kW, or
    phase current weighed at :data:`PHASE_KV`), kW: the worst of them, <= 0 where within every one."""
    kw = np.asarray(charger_kw, dtype=float)
    imp = float(np.sum(kw)) + other_kw
    node = np.abs(site.node_power_kw(kw)) - np.asarray(site.node_limit_kw, dtype=float)
    amps = np.abs(site.node_phase_current_a(kw)) - np.asarray(site.node_limit_a, dtype=float)[:, None]
    worst = max(imp - site.import_limit_kw, -imp - site.export_limit_kw, float(node.max(initial=-np.inf)))
    return max(worst, PHASE_KV * float(amps.max(initial=-np.inf)))


def first_phase(site: SiteArrays, old_kw: FloatArray, new_kw: FloatArray, other_kw: float) -> BoolArray:
    """(n,) True for the changes that go out first: the decreases (``new_kw < old_kw``) or, where the site
    would be further above a limit in between with them alone (:func:`site_excess_kw`), the increases.
    ``old_kw`` (n,): each charger's limit now; ``new_kw`` (n,): the new ones (equal where unchanged);
    ``other_kw``: the net load besides the chargers the new plan expects (its import less the chargers)."""
    old = np.asarray(old_kw, dtype=float)
    new = np.asarray(new_kw, dtype=float)
    down = new < old - TOL_KW
    up = new > old + TOL_KW
    downs_only = site_excess_kw(site, np.where(down, new, old), other_kw)
    ups_only = site_excess_kw(site, np.where(up, new, old), other_kw)
    if max(downs_only, 0.0) > max(ups_only, 0.0) + TOL_KW:
        return up
    return down


def range_excess_kw(site: SiteArrays, lo_kw: FloatArray, hi_kw: FloatArray, other_kw: float) -> float:
    """:func:`site_excess_kw` (kW rows only) of chargers each somewhere in ``[lo_kw, hi_kw]`` (n,): the
    import and each node's flow one way at ``hi_kw``, the export and the other way at ``lo_kw``."""
    return float(row_excess_kw(site, lo_kw, hi_kw, other_kw).max())


def row_excess_kw(site: SiteArrays, lo_kw: FloatArray, hi_kw: FloatArray, other_kw: float) -> FloatArray:
    """(2 + 2 K,) how far each kW row is above its limit with the chargers in ``[lo_kw, hi_kw]``: the
    import, the export, each node's flow one way (at ``hi_kw``), then the other way (at ``lo_kw``)."""
    lim = np.asarray(site.node_limit_kw, dtype=float)
    imp_hi, imp_lo = float(np.sum(hi_kw)) + other_kw, float(np.sum(lo_kw)) + other_kw
    node_hi, node_lo = site.node_power_kw(np.asarray(hi_kw)), site.node_power_kw(np.asarray(lo_kw))
    head = [imp_hi - site.import_limit_kw, -imp_lo - site.export_limit_kw]
    return np.concatenate([head, node_hi - lim, -node_lo - lim])


def stages(
    site: SiteArrays,
    old_kw: FloatArray,
    new_kw: FloatArray,
    other_kw: float,
    max_stages: int = 8,
    old_hi_kw: FloatArray | None = None,
    movable: BoolArray | None = None,
) -> list[FloatArray]:
    """The limits to go out stage by stage, each acknowledged before the next: (n,) per stage, the value
    sent to each charger in it (NaN: nothing); every charger whose value changes gets ``new_kw`` by the
    last stage.

    A charger may be anywhere in ``[old_kw, old_hi_kw]`` until its stage reaches it (a station about to
    step into its schedule's next period; default ``old_hi_kw`` = ``old_kw``); only ``movable`` chargers
    are sent anything (default: all), the others stay in their range. Two stages (the decreases
    first, or the increases where the decreases alone would take the site further above a limit) where
    the site stays within its import, export and node kW limits in between (no further above one than
    at either end). Where neither order does (EVs swapping between charging and discharging by more than
    the room between the import and the export limit), the directions alternate, each stage taking the
    moves that fit (largest first; one may go part of the way where it is worth a profile, 0.5 kW). After
    ``max_stages`` the rest goes out in one stage."""
    lo = np.asarray(old_kw, dtype=float).copy()
    hi = lo.copy() if old_hi_kw is None else np.maximum(np.asarray(old_hi_kw, dtype=float), lo)
    can = np.ones(site.n, dtype=bool) if movable is None else np.asarray(movable, dtype=bool)
    new = np.where(can, np.asarray(new_kw, dtype=float), lo)
    down = can & (new < hi - TOL_KW)
    up = can & ~down & (new > lo + TOL_KW)
    # each row may go in between as far above its limit as it is at either end, no further: a row
    # already above its limit (a station about to step on its own) is no licence for another
    allowed = np.maximum(
        np.maximum(row_excess_kw(site, lo, hi, other_kw), row_excess_kw(site, new, new, other_kw)), 0.0
    )
    allowed += TOL_KW

    def excess_with(mask: BoolArray) -> FloatArray:
        """:func:`row_excess_kw` with the ``mask`` chargers at ``new``, the others in their range."""
        return row_excess_kw(site, np.where(mask, new, lo), np.where(mask, new, hi), other_kw)

    nan = np.full(site.n, np.nan)
    for first, second in ((down, up), (up, down)):
        if first.any() and second.any() and (excess_with(first) <= allowed).all():
            return [np.where(first, new, nan), np.where(second, new, nan)]
    if not (down.any() and up.any()):
        moving = down | up
        if not moving.any() or (excess_with(moving) <= allowed).all():
            return [np.where(moving, new, nan)]
    out: list[FloatArray] = []
    go_down = bool(excess_with(down).max() <= excess_with(up).max())
    stuck = 0
    while len(out) < max_stages - 1 and stuck < 2:
        pending = can & ((new < hi - TOL_KW) | (new > lo + TOL_KW))
        if not pending.any():
            break
        sent = _fill(site, lo, hi, new, other_kw, go_down, allowed, can)
        moved = np.isfinite(sent)
        stuck = 0 if moved.any() else stuck + 1
        if moved.any():
            out.append(sent)
            lo, hi = np.where(moved, sent, lo), np.where(moved, sent, hi)
        go_down = not go_down
    rest = can & ((new < hi - TOL_KW) | (new > lo + TOL_KW))
    if rest.any() and (stuck < 2 or np.array_equal(lo, hi)):
        out.append(np.where(rest, new, nan))  # cut short, or no way through: the rest at once, as ever
    # (stuck while a station may step on its own: the rest waits for the next cycle, which knows)
    return out


def _fill(
    site: SiteArrays,
    lo: FloatArray,
    hi: FloatArray,
    new: FloatArray,
    other_kw: float,
    down: bool,
    allowed: FloatArray,
    movable: BoolArray,
) -> FloatArray:
    """The values one stage sends (NaN: none): the moves toward ``new`` in one direction, largest first,
    each whole where the import, export and node kW limits allow it (within ``allowed`` above each:
    :func:`row_excess_kw`'s rows) with
    every other charger anywhere in its ``[lo, hi]``, else (a charger known exactly) the part that fits
    where it is worth a profile. One pass, each charger checked on the site and the nodes above it."""
    pending = movable & (new < hi - TOL_KW if down else new > lo + TOL_KW)
    size = np.where(pending, np.abs(new - (hi if down else lo)), 0.0)
    sent = np.full(site.n, np.nan)
    member = np.asarray(site.membership, dtype=float) > 0
    lim = [float(x) for x in site.node_limit_kw]
    node_hi = [float(x) for x in site.node_power_kw(hi)]
    node_lo = [float(x) for x in site.node_power_kw(lo)]
    imp_hi, imp_lo = float(np.sum(hi)) + other_kw, float(np.sum(lo)) + other_kw
    top, bottom = site.import_limit_kw + float(allowed[0]), -site.export_limit_kw - float(allowed[1])
    k = len(lim)
    up_ok = [lim[j] + float(allowed[2 + j]) for j in range(k)]
    down_ok = [-lim[j] - float(allowed[2 + k + j]) for j in range(k)]
    for i in np.argsort(-size, kind="stable"):
        if size[i] <= TOL_KW:
            break
        path = np.flatnonzero(member[i])
        d_hi, d_lo = float(new[i] - hi[i]), float(new[i] - lo[i])
        fits = imp_hi + d_hi <= top and imp_lo + d_lo >= bottom
        fits = fits and all(node_hi[j] + d_hi <= up_ok[j] for j in path)
        fits = fits and all(node_lo[j] + d_lo >= down_ok[j] for j in path)
        value = float(new[i])
        if not fits:
            if hi[i] - lo[i] > TOL_KW:
                continue  # a charger not known exactly moves whole or not at all
            d = d_hi  # the part of the move the rows it makes worse allow
            if d > 0:
                t = min([(top - imp_hi) / d] + [(up_ok[j] - node_hi[j]) / d for j in path])
            else:
                t = min([(bottom - imp_lo) / d] + [(down_ok[j] - node_lo[j]) / d for j in path])
            t = min(max(t, 0.0), 1.0)
            if t * abs(d) <= 0.5:
                continue  # not worth a profile on its way
            value = float(hi[i]) + t * d
            d_hi = d_lo = t * d
        sent[i] = value
        imp_hi += d_hi
        imp_lo += d_lo
        for j in path:
            node_hi[j] += d_hi
            node_lo[j] += d_lo
    return sent


def plan_range(plan_kw: FloatArray, age_s: float, period_s: float, horizon_s: float) -> tuple[float, float]:
    """The lowest and highest period of a sent plan (``plan_kw``, kW per period of ``period_s``, sent
    ``age_s`` ago) a station may follow within ``horizon_s`` either side of now (its clock and ours)."""
    last = len(plan_kw) - 1
    k_from = min(max(int((age_s - horizon_s) // period_s), 0), last)
    k_to = min(max(int((age_s + horizon_s) // period_s), 0), last)
    near = np.asarray(plan_kw[k_from : k_to + 1], dtype=float)
    return float(near.min()), float(near.max())


def import_binds(site: SiteArrays, planned_import_kw: float) -> bool:
    """The plan's net import is closer to the import limit than to the export limit (or as close)."""
    return site.import_limit_kw - planned_import_kw <= site.export_limit_kw + planned_import_kw
