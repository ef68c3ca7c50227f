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


def stages(
    site: SiteArrays, old_kw: FloatArray, new_kw: FloatArray, other_kw: float, max_stages: int = 8
) -> list[FloatArray]:
    """The limits to go out stage by stage, each acknowledged before the next, the last ``new_kw``.

    Two stages (:func:`first_phase`, then the rest) where the site stays within its limits in between.
    Where neither order does (EVs swapping between charging and discharging by more than the room
    between the import and the export limit), the moves alternate direction, each stage taking as many
    whole moves (largest first, then part of one) as keep the site within its import, export and node kW
    limits (no further above one than at either end); a charger may get a limit on its way first. After
    ``max_stages`` the rest goes out in one stage. Each stage (n,) holds every charger's limit then."""
    old = np.asarray(old_kw, dtype=float)
    new = np.asarray(new_kw, dtype=float)
    first = first_phase(site, old, new, other_kw)
    between = np.where(first, new, old)
    allowed = max(site_excess_kw(site, old, other_kw), site_excess_kw(site, new, other_kw), 0.0) + TOL_KW
    if site_excess_kw(site, between, other_kw) <= allowed:
        return [between, new] if first.any() and not np.array_equal(between, new) else [new]
    out: list[FloatArray] = []
    cur = old.copy()
    down = bool(first[new < old].any()) if first.any() else True
    stuck = 0
    while len(out) < max_stages - 1 and not np.allclose(cur, new, atol=TOL_KW) and stuck < 2:
        nxt = _fill(site, cur, new, other_kw, down, allowed)
        stuck = stuck + 1 if np.array_equal(nxt, cur) else 0
        if stuck == 0:
            out.append(nxt)
            cur = nxt
        down = not down
    if not out or not np.array_equal(out[-1], new):
        out.append(new)
    return out


def _fill(
    site: SiteArrays, cur: FloatArray, new: FloatArray, other_kw: float, down: bool, allowed: float
) -> FloatArray:
    """``cur`` with the moves toward ``new`` in one direction, largest first, each whole where the import,
    export and node kW limits allow it (within ``allowed`` above them), else the part of it that fits
    where that is worth a profile (0.5 kW). One pass over the chargers, each checked on the site and the
    nodes above it only."""
    move = np.minimum(new - cur, 0.0) if down else np.maximum(new - cur, 0.0)
    out = cur.copy()
    member = np.asarray(site.membership, dtype=float) > 0
    lim = [float(x) for x in site.node_limit_kw]
    node = [float(x) for x in site.node_power_kw(cur)]
    imp = float(np.sum(cur)) + other_kw
    hi_imp, lo_imp = site.import_limit_kw + allowed, -site.export_limit_kw - allowed
    for i in np.argsort(-np.abs(move), kind="stable"):
        d = float(move[i])
        if abs(d) <= TOL_KW:
            break
        path = np.flatnonzero(member[i])
        # the largest fraction of the move every row it loads allows (rows are linear in it)
        t = 1.0
        if d > 0:
            t = min(t, (hi_imp - imp) / d)
        else:
            t = min(t, (lo_imp - imp) / d)
        for j in path:
            room = (lim[j] + allowed - node[j]) / d if d > 0 else (-lim[j] - allowed - node[j]) / d
            t = min(t, room)
        t = max(t, 0.0)
        if t < 1.0 - 1e-9 and t * abs(d) <= 0.5:
            continue  # not worth a profile on its way
        step = d if t >= 1.0 - 1e-9 else t * d
        out[i] = new[i] if t >= 1.0 - 1e-9 else cur[i] + step
        imp += step
        for j in path:
            node[j] += step
    return out


def import_binds(site: SiteArrays, planned_import_kw: float) -> bool:
    """The plan's net import is closer to the import limit than to the export limit (or as close)."""
    return site.import_limit_kw - planned_import_kw <= site.export_limit_kw + planned_import_kw
