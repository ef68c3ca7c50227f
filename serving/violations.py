"""Honest violations: every limit exceeded is attributed (which limit, when, by how much, and why).

A site import above its limit is not always the chargers' doing. :func:`site_cause` tells three causes
apart from what the loop measured:

- ``uncontrollable``: the load that is not chargers (import minus the chargers' measured draw) is above
  the limit on its own: with every charger at 0 the site would still be over (a building load alone);
- ``base_load_rise``: the last plan kept the site within its limit, and the non-charger load rose since
  by at least the excess: the chargers followed their limits, the load moved between two cycles, and
  this cycle corrects it;
- ``controllable``: anything else (the chargers drew more than a plan within the limit allows, or the
  plan itself was over): the chargers could have prevented it.

A node (feeder) above its limit is measured from the chargers' own meters, so it is ``controllable``.
Counted as ``violations_total{limit, cause}``; the operator view shows the controllable ones and the
others apart, with the last of each.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

Cause = Literal["controllable", "base_load_rise", "uncontrollable"]
TOLERANCE_KW = 1e-6


@dataclass(frozen=True)
class Violation:
    """One limit exceeded at one cycle's reading."""

    time: datetime
    limit: str
    """``site`` or the node id"""
    limit_kw: float
    measured_kw: float
    excess_kw: float
    cause: Cause

    def to_json(self) -> dict[str, object]:
        return {
            "time": self.time.isoformat(),
            "limit": self.limit,
            "limit_kw": self.limit_kw,
            "measured_kw": round(self.measured_kw, 3),
            "excess_kw": round(self.excess_kw, 3),
            "cause": self.cause,
        }


def site_cause(
    import_kw: float,
    limit_kw: float,
    chargers_kw: float,
    last_other_kw: float | None,
    last_planned_import_kw: float | None,
) -> Cause | None:
    """The cause of a site import above its limit (None where it is not above).

    ``chargers_kw`` is the chargers' measured draw now; ``last_other_kw`` the non-charger net load (import
    minus chargers) measured when the last plan was made, ``last_planned_import_kw`` that plan's import.
    """
    excess = import_kw - limit_kw
    if excess <= TOLERANCE_KW:
        return None
    other_kw = import_kw - chargers_kw
    if other_kw > limit_kw + TOLERANCE_KW:
        return "uncontrollable"
    if (
        last_other_kw is not None
        and last_planned_import_kw is not None
        and last_planned_import_kw <= limit_kw + TOLERANCE_KW
        and other_kw - last_other_kw >= excess - TOLERANCE_KW
    ):
        return "base_load_rise"
    return "controllable"
