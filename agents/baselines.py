"""Simple baseline policies: what a site without DLM, with static or with plain dynamic load management
would do, and the classic deadline-aware allocators of the literature (acnportal style).

Every policy here charges only (no V2G, no battery) and asks for at most what an EV can take now
(:func:`agents.allocate.charge_caps_kw`: charger, EV, energy and departure limits). The sort-key
allocators are a small key function each (smaller key = served first) plus one allocator,
:class:`SortKeyPolicy` over :func:`agents.allocate.greedy_fill`. Their output still goes through the safety
projection in the environment or the live service.

==================  =========================================================================
uncontrolled        every EV at its maximum from arrival; the projection alone keeps limits
static              a fixed kW cap per charger sized so all chargers at once fit the connection; chargers
                    that cap would starve take turns at their minimum (the failsafe rotation)
equal_share         the meter's free capacity (limit - base + PV) shared equally (max-min fair)
priority_share      the same weighted by session priority, ``2 ** priority`` per EV
edf                 earliest departure first
llf                 least laxity first (time left minus time needed at full power)
round_robin         served in a rotating order; the queue moves on past those served in full
==================  =========================================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from agents.allocate import (
    Resources,
    charge_caps_kw,
    fair_with_minimum,
    greedy_fill,
    site_headroom_kw,
)
from agents.base import Decision
from envs.core import FloatArray, IntArray, SiteArrays, SiteState, Snapshot
from envs.physics import ev_terms
from envs.rotation import Rotation, failsafe_rotation
from envs.scenario import Scenario

SortKey = Callable[[SiteArrays, SiteState, FloatArray], FloatArray]
"""(site, state, caps_kw) -> key per charger; smaller is served first"""


class _AllocatorPolicy:
    """Shared plumbing: the site's resources, built once in :meth:`reset`."""

    name = "allocator"

    def __init__(self) -> None:
        self._site: SiteArrays | None = None
        self._res: Resources | None = None

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self._site = site
        self._res = Resources.from_site(site)

    def _ready(self) -> tuple[SiteArrays, Resources]:
        if self._site is None or self._res is None:
            raise RuntimeError(f"{self.name}: call reset(site) before act()")
        return self._site, self._res

    def _step(self, snapshot: Snapshot) -> _Step:
        """What every allocator reads first: the caps, the chargers that want power and the limits now."""
        site, res = self._ready()
        state = snapshot.state
        caps = charge_caps_kw(site, state)
        limits = res.limits(site_headroom_kw(site, state))
        return _Step(site, res, state, caps, np.flatnonzero(caps > 0), limits)


class _Step(NamedTuple):
    """One step as an allocator sees it (:meth:`_AllocatorPolicy._step`)."""

    site: SiteArrays
    res: Resources
    state: SiteState
    caps_kw: FloatArray
    """(n,) the most each charger should draw (:func:`agents.allocate.charge_caps_kw`)"""
    active: IntArray
    """chargers with a positive cap"""
    limits: FloatArray
    """(R,) every resource's limit with the connection's headroom now"""


class Uncontrolled(_AllocatorPolicy):
    """Every EV charges at its maximum from arrival until full: the site as it would be without DLM.
    The projection alone keeps the limits (it scales requests down where they would exceed one)."""

    name = "uncontrolled"

    def act(self, snapshot: Snapshot) -> Decision:
        site, _ = self._ready()
        return Decision(charge_caps_kw(site, snapshot.state))


class StaticShare(_AllocatorPolicy):
    """Static load management: each charger is capped by a fixed daily plan, regardless of use.

    The caps are the site's failsafe rotation (:func:`envs.rotation.failsafe_rotation`): the static safe
    share (what every charger can draw at once within every node, phase and the connection minus
    ``reserve_kw`` for the building, on the chargers' grid and at least their minimum current where they
    are on at all), and where that share is below a charger's minimum current, turns at the minimum in
    slots of the UTC day, so no charger is starved. Without an explicit reserve, the reserve is the
    scenario's peak base load when a scenario is given (what an installer sizes for), else 0. The live
    service installs the same rotation as its failsafe.
    """

    name = "static"

    def __init__(self, reserve_kw: float | None = None) -> None:
        super().__init__()
        self.reserve_kw = reserve_kw
        self._rotation: Rotation | None = None

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        super().reset(site, scenario)
        reserve = self.reserve_kw
        if reserve is None:
            reserve = float(scenario.timeseries["base_load_kw"].max()) if scenario is not None else 0.0
        self._rotation = failsafe_rotation(site, reserve)

    def act(self, snapshot: Snapshot) -> Decision:
        site, _ = self._ready()
        assert self._rotation is not None
        cap = self._rotation.kw_at_time(snapshot.timestamp)
        return Decision(np.minimum(charge_caps_kw(site, snapshot.state), cap))


class EqualShare(_AllocatorPolicy):
    """Dynamic load balancing: the free capacity the meter shows (import limit - base load + PV), and each
    node's, shared equally (max-min fair) among the connected EVs. When there is not enough for every EV's
    minimum current, EVs are admitted in charger order rotated every step, so none starves."""

    name = "equal_share"

    def __init__(self) -> None:
        super().__init__()
        self._turn = 0

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        super().reset(site, scenario)
        self._turn = 0

    def _weights(self, state: SiteState) -> FloatArray | None:
        return None

    def _admission_order(self, site: SiteArrays, state: SiteState, active: IntArray) -> IntArray:
        self._turn += 1
        return active[np.argsort((active - self._turn) % site.n, kind="stable")]

    def act(self, snapshot: Snapshot) -> Decision:
        s = self._step(snapshot)
        order = self._admission_order(s.site, s.state, s.active)
        alloc = fair_with_minimum(
            s.res.coef, s.limits, s.caps_kw, s.site.min_kw, order, self._weights(s.state)
        )
        return Decision(alloc)


class PriorityShare(EqualShare):
    """Equal share weighted by session priority: an EV of priority ``p`` gets ``2 ** p`` times the share
    of a priority-0 EV (fleet vehicles, a VIP tier, ...); higher priorities are admitted first when not
    every EV can get its minimum current."""

    name = "priority_share"

    def _weights(self, state: SiteState) -> FloatArray | None:
        if state.priority is None:
            return None
        return np.asarray(2.0 ** np.clip(np.asarray(state.priority, dtype=float), -10, 10))

    def _admission_order(self, site: SiteArrays, state: SiteState, active: IntArray) -> IntArray:
        rotated = super()._admission_order(site, state, active)
        if state.priority is None:
            return rotated
        prio = np.asarray(state.priority, dtype=float)[rotated]
        return rotated[np.argsort(-prio, kind="stable")]


# --------------------------------------------------------------------------- sort-key allocators


def edf_key(site: SiteArrays, state: SiteState, caps_kw: FloatArray) -> FloatArray:
    """Earliest deadline first: hours to departure."""
    return np.asarray(state.time_left_h, dtype=float)


def llf_key(site: SiteArrays, state: SiteState, caps_kw: FloatArray) -> FloatArray:
    """Least laxity first: hours an EV can still wait, time left minus the time its remaining energy takes
    at the rate its charger can hold (``laxity_h`` of :func:`envs.physics.ev_terms`)."""
    return ev_terms(site, state).laxity_h


class SortKeyPolicy(_AllocatorPolicy):
    """Serve EVs in the order of a sort key (smaller first), each up to its maximum, within every limit."""

    def __init__(self, name: str, key: SortKey) -> None:
        super().__init__()
        self.name = name
        self.key = key

    def _order(self, site: SiteArrays, state: SiteState, caps: FloatArray, active: IntArray) -> IntArray:
        key = self.key(site, state, caps)[active]
        return active[np.lexsort((active, key))]  # ties: charger order

    def act(self, snapshot: Snapshot) -> Decision:
        s = self._step(snapshot)
        order = self._order(s.site, s.state, s.caps_kw, s.active)
        alloc = greedy_fill(s.res, s.limits, s.caps_kw, order, s.site.min_kw)
        self._served(order, alloc, s.caps_kw)
        return Decision(alloc)

    def _served(self, order: IntArray, alloc_kw: FloatArray, caps_kw: FloatArray) -> None:
        """Called with each step's serving order and allocation (a rotating queue moves on here)."""


class RoundRobin(SortKeyPolicy):
    """Serve EVs in a rotating order: after each step the queue starts at the first EV that was not
    served in full, so every EV gets its turn at the front."""

    def __init__(self) -> None:
        super().__init__("round_robin", edf_key)
        self._start = 0

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        super().reset(site, scenario)
        self._start = 0

    def _order(self, site: SiteArrays, state: SiteState, caps: FloatArray, active: IntArray) -> IntArray:
        return active[np.argsort((active - self._start) % site.n, kind="stable")]

    def _served(self, order: IntArray, alloc_kw: FloatArray, caps_kw: FloatArray) -> None:
        short = order[alloc_kw[order] < caps_kw[order] - 1e-9]
        if len(short):
            self._start = int(short[0])


def edf() -> SortKeyPolicy:
    return SortKeyPolicy("edf", edf_key)


def llf() -> SortKeyPolicy:
    return SortKeyPolicy("llf", llf_key)
