"""The failsafe rotation: every charger charges over the day, even where the static share starves it.

:func:`envs.share.safe_static_share_kw` gives each charger what it can draw with every charger drawing at
once; where that is below a charger's minimum current the charger gets 0, and with a static failsafe it
could never charge. (The share is the projection of "everyone at full rating", so a charger without a
minimum current can get 0 too.) :func:`failsafe_rotation` keeps the static share for everyone else and
lets those *starved* chargers take turns at their minimum (:func:`turn_kw`: 6 A where none is
configured):

- The starved chargers are packed, in charger order, into *groups* (first fit): a group's chargers all at
  their minimum together satisfy every limit row (:class:`envs.limit_rows.LimitRows`, plus the import
  limit less ``reserve_kw``). A starved charger whose minimum fits no limit even alone is *stranded*: it
  stays at 0 and the caller must say so.
- Each group is a *slot*: its chargers at their minimum, the non-starved chargers at the projection of
  "everyone at full rating" with the group's draw reserved on every row (so they share what is left;
  one may drop to 0 where what is left is below its own minimum). Where some non-starved charger would
  get nothing in every slot, a last slot without starved chargers (the plain static share) is added.
- The day (UTC) is cut into periods of ``slot_s`` (a divisor of 86,400 s, shortened where there are more
  slots than periods); period ``p`` runs slot ``p mod S``. The last ``guard_s`` of a period, where the
  next period runs another slot, hold each charger at the smaller of the two slots' values: every change
  of slot is a decrease first and an increase ``guard_s`` later, so stations whose clocks differ by less
  than ``guard_s`` never hold two slots' increases at once. The day repeats (a daily recurring profile).

Every value at every instant is therefore at most one slot's vector, each of which is feasible with every
charger occupied, ``reserve_kw`` of building load and no PV; ``tests/test_rotation.py`` checks that with
the independent checker :mod:`envs.limits`. Without starved chargers the rotation is the static share
alone (one slot).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from envs.core import BoolArray, FloatArray, IntArray, SiteArrays
from envs.limit_rows import LimitRows
from envs.projection import ProjectionPlan, project
from envs.share import occupied_state, safe_static_share_kw

DAY_S = 86_400
"""a rotation repeats every UTC day"""
TOL_KW = 1e-9
MIN_PILOT_A = 6.0
"""the turn of a starved charger without a configured minimum current, A per phase (IEC 61851)"""


@dataclass(frozen=True, eq=False)
class Rotation:
    """The failsafe of a site over one UTC day (build with :func:`failsafe_rotation`)."""

    share_kw: FloatArray
    """(n,) the static safe share, kW (0 where starved)"""
    slot_kw: FloatArray
    """(S, n) what each charger may draw in each slot, kW"""
    starved: BoolArray
    """(n,) the static share is 0 or below the charger's minimum (and its rating is positive)"""
    stranded: BoolArray
    """(n,) starved chargers whose minimum alone breaks a limit: 0 in every slot"""
    slot_of: IntArray
    """(n,) the slot where a starved charger takes its turn (:func:`turn_kw`); -1 for the others"""
    slot_s: int
    """length of one period of the day, s (a divisor of 86,400)"""
    guard_s: int
    """the end of a period held at the smaller of its slot's and the next slot's values, s"""

    @property
    def n_slots(self) -> int:
        return int(self.slot_kw.shape[0])

    @property
    def rotates(self) -> bool:
        """More than one slot: the failsafe changes over the day."""
        return self.n_slots > 1

    @property
    def periods_per_day(self) -> int:
        return DAY_S // self.slot_s

    def day_periods(self) -> list[tuple[int, FloatArray]]:
        """The day as ``(start s after UTC midnight, (n,) kW)``, in order, the first at 0; consecutive
        equal vectors merged. With one slot: ``[(0, share)]``."""
        out: list[tuple[int, FloatArray]] = []
        for p in range(self.periods_per_day if self.rotates else 1):
            s, nxt = self._slots(p)
            start = p * self.slot_s
            pieces = [(start, self.slot_kw[s])]
            if nxt != s:
                gap = np.minimum(self.slot_kw[s], self.slot_kw[nxt])
                pieces.append((start + self.slot_s - self.guard_s, gap))
            for t, kw in pieces:
                if not out or not np.array_equal(out[-1][1], kw):
                    out.append((t, kw))
        return out

    def kw_at(self, second_of_day: float) -> FloatArray:
        """(n,) the failsafe at ``second_of_day`` (UTC seconds after midnight; taken modulo a day)."""
        if not self.rotates:
            return self.slot_kw[0]
        t = float(second_of_day) % DAY_S
        p = min(int(t // self.slot_s), self.periods_per_day - 1)
        s, nxt = self._slots(p)
        if nxt != s and t >= (p + 1) * self.slot_s - self.guard_s:
            return np.minimum(self.slot_kw[s], self.slot_kw[nxt])
        return self.slot_kw[s]

    def kw_at_time(self, timestamp: np.datetime64) -> FloatArray:
        """(n,) the failsafe at a UTC ``timestamp``."""
        return self.kw_at(second_of_day(timestamp))

    def lowest_between(self, start_s: float, end_s: float) -> FloatArray:
        """(n,) the least each charger may draw from ``start_s`` to ``end_s`` (UTC seconds after midnight,
        ``end_s`` >= ``start_s``; a span of a day or more: :meth:`lowest_kw`)."""
        if not self.rotates:
            return self.slot_kw[0]
        if end_s - start_s >= DAY_S:
            return self.lowest_kw()
        out = self.kw_at(start_s)
        t0 = float(start_s) % DAY_S
        t1 = t0 + float(end_s) - float(start_s)
        for day in (0, DAY_S):
            for t, kw in self.day_periods():
                if t0 < t + day < t1:
                    out = np.minimum(out, kw)
        return out

    def lowest_kw(self) -> FloatArray:
        """(n,) the least each charger may draw at any time of the day (its static share at most)."""
        return np.asarray(np.min(self.slot_kw, axis=0), dtype=float)

    def _slots(self, p: int) -> tuple[int, int]:
        """The slot of period ``p`` and of the period after it (the day wraps around)."""
        s = p % self.n_slots
        nxt = ((p + 1) % self.periods_per_day) % self.n_slots
        return s, nxt


def turn_kw(site: SiteArrays) -> FloatArray:
    """(n,) what a starved charger draws in its turn, kW: its minimum current, or where it has none
    configured, 6 A (the IEC 61851 minimum an EV charges at), never above its rating."""
    six_a = np.minimum(site.rated_kw, MIN_PILOT_A * site.kw_per_a)
    return np.where(site.min_kw > 0, site.min_kw, six_a)


def second_of_day(timestamp: np.datetime64) -> float:
    """Seconds after UTC midnight of a UTC ``timestamp`` (whole seconds)."""
    return float(int(np.asarray(timestamp).astype("datetime64[s]").astype(np.int64)) % DAY_S)


def _day_slot_s(slot_s: int, n_slots: int) -> int:
    """The largest divisor of a day no longer than ``slot_s`` that gives every slot a period a day."""
    for d in range(min(int(slot_s), DAY_S), 0, -1):
        if DAY_S % d == 0 and DAY_S // d >= n_slots:
            return d
    return 1


def _slot_share_kw(
    site: SiteArrays, plan: ProjectionPlan, others: BoolArray, draw_kw: FloatArray, reserve_kw: float
) -> FloatArray:
    """(n,) the projection of ``others`` at full rating with ``draw_kw`` reserved on every row: node rows
    lose ``w . draw`` (the plan's own weights), the site row through the base load."""
    coords = np.zeros((1, plan.n + 1))
    coords[0, : plan.n] = draw_kw
    taken = plan.rows(coords)[0, :-1]
    view = dataclasses.replace(plan, row_limit=np.maximum(plan.row_limit - taken, 0.0))
    state = occupied_state(site, others, reserve_kw + float(draw_kw.sum()))
    res = project(site, state, np.where(others, site.rated_kw, 0.0), 0.0, plan=view)
    return np.where(others, np.maximum(np.asarray(res.charger_kw, dtype=float), 0.0), 0.0)


def failsafe_rotation(
    site: SiteArrays, reserve_kw: float = 0.0, slot_s: int = 3600, guard_s: int = 60
) -> Rotation:
    """The failsafe of ``site`` with ``reserve_kw`` of building load: the static share, and the starved
    chargers in turns at their minimum (module docstring). ``slot_s``: the longest period of one slot, s;
    ``guard_s``: the decrease-before-increase hold at a change of slot, s (less than half a period)."""
    share = safe_static_share_kw(site, reserve_kw)
    n = site.n
    turn = turn_kw(site)
    starved = ((share < site.min_kw - TOL_KW) | (share <= 0.0)) & (site.rated_kw > 0)
    if not starved.any():
        return Rotation(share, share[None, :], starved, starved.copy(), np.full(n, -1), DAY_S, 0)
    rows = LimitRows.from_site(site)
    weights = np.concatenate([rows.weights, np.ones((n, 1))], axis=1)
    limit = np.concatenate([rows.limit, [site.import_limit_kw - reserve_kw]])
    groups: list[list[int]] = []
    load: list[FloatArray] = []
    stranded = np.zeros(n, dtype=bool)
    slot_of = np.full(n, -1)
    for i in np.flatnonzero(starved):
        use = turn[i] * weights[i]
        if np.any(use > limit + TOL_KW):
            stranded[i] = True
            continue
        for g, total in enumerate(load):
            if np.all(total + use <= limit + TOL_KW):
                groups[g].append(int(i))
                load[g] = total + use
                slot_of[i] = g
                break
        else:
            groups.append([int(i)])
            load.append(use)
            slot_of[i] = len(groups) - 1
    plan = ProjectionPlan.from_site(site)
    others = ~starved
    slots: list[FloatArray] = []
    for members in groups:
        draw = np.zeros(n)
        draw[members] = turn[members]
        slots.append(draw + _slot_share_kw(site, plan, others, draw, reserve_kw))
    if not slots or np.any(others & (share > 0) & np.all(np.stack(slots) <= 0.0, axis=0)):
        slots.append(share.copy())
    day_slot = _day_slot_s(slot_s, len(slots))
    return Rotation(
        share, np.stack(slots), starved, stranded, slot_of, day_slot, min(int(guard_s), day_slot // 2)
    )


def describe(site: SiteArrays, rotation: Rotation) -> str:
    """One line naming the starved chargers, their slots and the stranded ones (for the start warning)."""
    if not rotation.starved.any():
        return "no charger is starved by the static safe share"
    parts: list[str] = []
    for g in range(rotation.n_slots):
        ids = [site.charger_ids[i] for i in np.flatnonzero(rotation.slot_of == g)]
        if ids:
            parts.append(f"slot {g}: " + ", ".join(ids))
    text = (
        f"{int(rotation.starved.sum())} charger(s) below their minimum current at the static safe share "
        f"take turns at their minimum: {rotation.n_slots} slot(s) of {rotation.slot_s} s "
        f"(repeating over the UTC day); " + "; ".join(parts)
    )
    if rotation.stranded.any():
        lost = ", ".join(site.charger_ids[i] for i in np.flatnonzero(rotation.stranded))
        text += f"; their minimum alone breaks a limit, they cannot charge without the central system: {lost}"
    return text


__all__ = ["DAY_S", "Rotation", "describe", "failsafe_rotation", "second_of_day", "turn_kw"]
