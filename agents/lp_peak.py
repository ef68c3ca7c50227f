"""The optimum's plan held to the relaxation's peak (:func:`held_to_peak`).

Rounding a plan to the minimum current (off, or at least the charger's minimum) can lift a billing period's
peak above the relaxation's: seen on generated workplaces (10 chargers x 2 days), a step at the building's
own peak given 0.05-0.4 kW of charging, which the demand charge prices at 0.2-0.4 % of the site's cost, so
that the rule-based DLM, whose fills stay under its peak target, cost up to 0.25 % less than the optimum.
There the search runs again with each period's peak capped at the relaxation's (``LPData.peak_cap_kw``),
where the plan is more than :data:`HOLD_FROM` above the bound (only there could a policy beat it by more
than the optimum is held to); where nothing keeps the minimum current under that cap, a quarter of the lift
above it (:data:`HOLD_AT`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import numpy as np

from agents.lp import LPData, LPError, LPSolution, SiteLP
from agents.lp_executable import finish_plan, variants
from envs.core import FloatArray

HOLD_FROM = 1e-3
"""the share above the bound from which a plan is held to the relaxation's peak: the 0.1 % the optimum is
held to (issue 13), twice :data:`agents.lp_executable.GOOD_ENOUGH` (seen: at 50 chargers x 7 days each
held variant costs 5-10 s, and plans 0.05-0.11 % above the bound gained nothing from them)"""


HOLD_AT = (0.0, 0.25)
"""the caps tried in turn, as shares of the lift of the finished plan's peak above the relaxation's: at the
relaxation's own peak the rounding may find no plan that keeps the minimum current (the generated
workplace week, 50 chargers x 7 days, seed 0: 170.18 kW found, 165.15 relaxed, nothing under it), a
quarter of the lift above it leaves it the room (165.21 kW, +0.05 % over the bound, was +0.87 %)"""


def held_to_peak(
    lp: SiteLP,
    data: LPData,
    rate_kw: FloatArray,
    found: tuple[LPSolution, float],
    peak_cap_kw: FloatArray,
    departs: np.ndarray | None,
    node_limit: int,
    neighbourhood_nodes: int,
    tries: Sequence[tuple[float, int]],
    bound: float | None,
    good: Callable[[float], bool],
) -> tuple[LPSolution, float]:
    """``found`` (the search's finished plan and its residue cost), or the cheapest of the same variants
    (``tries``) with each billing period's peak capped at ``peak_cap_kw`` where one is cheaper and leaves
    no more energy short. Only where ``found`` lifts a period's peak above the cap and is more than
    :data:`HOLD_FROM` above ``bound`` (always without one); the variants stop once one is ``good``
    (within a hair of the bound).

    Capped, a variant often leaves EVs short that finishing (:func:`agents.lp_executable.finish_plan`) then
    serves, so they are compared finished (seen: 1.5-6 EUR dearer before finishing, within 0.01 % of the
    bound after). At a low penalty a capped plan can be cheaper by leaving EVs short that ``found``
    serves (generated depots at 1 EUR/kWh: 0.3-0.6 kWh): it is not kept, as the optimum serves what a
    hair's cost serves (:mod:`agents.lp_serve`)."""
    cap = np.asarray(peak_cap_kw, dtype=float)
    lift = np.maximum(np.asarray(found[0].peak_kw, dtype=float) - cap, 0.0)
    out = found
    for share in HOLD_AT:
        close = bound is not None and out[0].objective - bound <= HOLD_FROM * abs(bound)
        if close or not np.any(np.asarray(out[0].peak_kw) > cap + share * lift + 1e-6):
            break
        held = replace(data, peak_cap_kw=cap + share * lift)
        for u in variants(lp, held, rate_kw, departs, node_limit, neighbourhood_nodes, tries):
            try:
                cand = finish_plan(lp, u, departs, node_limit)
            except LPError:
                continue
            if (
                cand[0].objective < out[0].objective - 1e-9
                and short_kwh(cand[0], departs) <= short_kwh(out[0], departs) + 1e-6
            ):
                out = cand
            if good(out[0].objective):
                break
    return out


def short_kwh(plan: LPSolution, departs: np.ndarray | None) -> float:
    """The energy ``plan`` leaves short, kWh: of the EVs that leave within the scenario (``departs``)."""
    missing = np.asarray(plan.missing_kwh, dtype=float)
    return float(missing.sum() if departs is None else missing[np.asarray(departs, dtype=bool)].sum())
