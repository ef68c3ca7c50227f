"""The policy decides a step once; the cycles inside the step re-project that decision (issue 15).

The environment asks its policy once per step, from the step's state. The live service runs more cycles
than steps: a cycle decided again in a step already decided (the needs of EVs that started after the
cycle before, :mod:`serving.needs`) is followed by that step's regular cycle, and before this module
every such cycle asked the policy again with the EVs a few Wh further on. The rule-based policy's decision
moves by tens of kW on that (the V2G benchmark: 160 kW at 0.59 s into the step, 204 kW at its regular
cycle 0.4 s later; a dumped snapshot 186 against 164 kW with 0.6 Wh less on some EVs), so the live EVs
charged ahead of the environment's before the discharge window and discharged more in it.

As a site's DLM does, the policy's request is now the step's plan: a cycle of a step already decided
with **nothing new** (:func:`what_is_new` is None) gets the step's request (:attr:`StepBasis`) without
asking the policy, and the controller projects it on that cycle's live snapshot as it projects every
decision: the import, export, node and phase limits on the latest base load and readings, the chargers
taken as given, the failsafe cap of a stale meter. Safety never waits for a step. The policy is asked
again, inside the step, on an event: an EV arrived, left or was released from its wait for its needs,
an EV's needs arrived, a station was lost or came back, the site meter went stale or came back, a site
limit changed, or the step's decision was not the policy's (the fallback's or the static share's).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.core import BoolArray, SiteArrays, Snapshot
from serving.live import LiveSite


@dataclass(frozen=True)
class StepBasis:
    """What a step's decision was made on (compared with each later cycle of the step)."""

    step: int
    """the policy's step index (the snapshot's ``step_index``)"""
    read_at: float
    """monotonic time its cycle read"""
    present: BoolArray
    """(n,) the EVs it decided (held transactions are none)"""
    connected: frozenset[str]
    """the stations connected when it read"""
    meter_stale: bool
    limits_kw: tuple[float, float]
    """the site's import and export limits"""
    by_policy: bool
    """the policy decided it (not the fallback, not the static share)"""

    @classmethod
    def of(
        cls, snap: Snapshot, live: LiveSite, site: SiteArrays, read_at: float, stale: bool, by_policy: bool
    ) -> StepBasis:
        present = np.asarray(snap.state.ev_present, dtype=bool).copy()
        return cls(
            int(snap.step_index), read_at, present, connected(live), stale, site_limits(site), by_policy
        )


def connected(live: LiveSite) -> frozenset[str]:
    return frozenset(sid for sid, st in live.stations.items() if st.connected)


def site_limits(site: SiteArrays) -> tuple[float, float]:
    return float(site.import_limit_kw), float(site.export_limit_kw)


def what_is_new(
    basis: StepBasis | None, snapshot: Snapshot, live: LiveSite, site: SiteArrays, stale: bool
) -> str | None:
    """Why this cycle asks the policy (``start``, ``step``, ``arrival``, ``departure``, ``needs``,
    ``station``, ``meter``, ``limit``, ``fallback``), or None: a cycle of the step ``basis`` decided,
    nothing new since, which gets the step's request re-projected."""
    if basis is None:
        return "start"
    if int(snapshot.step_index) != basis.step:
        return "step"
    present = np.asarray(snapshot.state.ev_present, dtype=bool)
    if present.shape != basis.present.shape or np.any(present & ~basis.present):
        return "arrival"
    if np.any(basis.present & ~present):
        return "departure"
    if any(c.active and c.needs_at > basis.read_at for c in live.connectors):
        return "needs"
    if connected(live) != basis.connected:
        return "station"
    if stale != basis.meter_stale:
        return "meter"
    if site_limits(site) != basis.limits_kw:
        return "limit"
    if not basis.by_policy:
        return "fallback"
    return None
