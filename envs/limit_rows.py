"""The limit tree as linear rows, built once for the projection plan, the allocators' resources and the LP.

Every node of the limit tree is a kW row (``|sum of its chargers' kW| <= limit``) and, where it has a
current limit, one row per phase (``|sum of A per kW * kW| <= limit A``). A row is kept only where it can
bind (:func:`can_bind`): the most its members can push through it, at the larger of their charging and
discharging ratings, exceeds its limit. ``envs/limits.py`` stays the independent checker and does not use
this module.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.core import BoolArray, FloatArray, IntArray, SiteArrays

BIND_TOL = 1e-9
"""a row whose reach exceeds its limit by no more than this never binds (kW or A)"""


def can_bind(reach: np.ndarray | float, limit: np.ndarray | float) -> BoolArray:
    """Whether a row whose members can push at most ``reach`` through it (kW or A) can reach its
    ``limit``: the single rule for which rows exist."""
    return np.asarray(np.asarray(reach) > np.asarray(limit) + BIND_TOL)


def reach_kw(site: SiteArrays, chargers: BoolArray | None = None) -> FloatArray:
    """(n,) the largest ``|kW|`` each charger can carry (charging or discharging); 0 outside ``chargers``."""
    cap = np.maximum(site.rated_kw, site.max_discharge_kw)
    return cap if chargers is None else cap * np.asarray(chargers, dtype=bool)


@dataclass(frozen=True, eq=False)
class LimitRows:
    """The rows of a site's limit tree that can bind (build with :meth:`from_site`).

    Rows are the kW rows in node order, then the phase rows node by node (L1..L3 within a node).
    """

    weights: FloatArray
    """(n, K) use of each row per kW a charger draws: 1 on kW rows, A per kW on phase rows"""
    limit: FloatArray
    """(K,) symmetric limit of each row, kW or A"""
    node: IntArray
    """(K,) the node of each row"""
    phase: IntArray
    """(K,) -1 for a kW row, else the phase 0..2"""

    @classmethod
    def from_site(cls, site: SiteArrays, chargers: BoolArray | None = None) -> LimitRows:
        """The rows that can bind with the chargers of ``chargers`` (all when None) at full power."""
        reach = reach_kw(site, chargers)
        kw_nodes = np.flatnonzero(can_bind(reach @ site.membership, site.node_limit_kw))
        reach_a = np.einsum("n,np,nm->mp", reach, site.phase_a_per_kw, site.membership)
        a_nodes, a_phases = np.nonzero(can_bind(reach_a, site.node_limit_a[:, None]))
        cols = [site.membership[:, j] for j in kw_nodes]
        cols += [
            site.membership[:, j] * site.phase_a_per_kw[:, p] for j, p in zip(a_nodes, a_phases, strict=True)
        ]
        limit = np.concatenate([site.node_limit_kw[kw_nodes], site.node_limit_a[a_nodes]]).astype(np.float64)
        weights = np.stack(cols, axis=1) if cols else np.zeros((site.n, 0))
        return cls(
            weights=weights,
            limit=limit,
            node=np.concatenate([kw_nodes, a_nodes]).astype(np.int64),
            phase=np.concatenate([np.full(len(kw_nodes), -1), a_phases]).astype(np.int64),
        )

    def __len__(self) -> int:
        return len(self.limit)
