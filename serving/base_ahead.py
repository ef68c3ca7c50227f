"""The base load a persistence forecast carries past now (a pure function of the live loop's estimates)."""

from __future__ import annotations


def base_ahead_kw(
    settled_kw: float | None, high_kw: float, low_kw: float | None, tol_kw: float
) -> tuple[float, float | None]:
    """The base load a persistence forecast carries past now, and the settled estimate to keep.

    The base load now errs high (``high_kw``: the import limit is safe on it) while the chargers'
    readings straddle limit changes, down to ``low_kw``; that bracket is about the reading, not the
    future. Carried forward, a bracket 130 kW wide at the cycle V2G began (200 stations) became a
    forecast 120 kW above the load all horizon, and the rule-based DLM discharged a third of what the
    environment does (its recharge room under the peak target shrank). So the future persists the last
    estimate taken with a bracket within ``tol_kw`` (``settled_kw``), moved into the bracket now; the
    bracket's high side without one. Safe for the limits: a schedule's later periods never exceed its
    first (:mod:`serving.schedule`), which is decided on ``high_kw``."""
    if low_kw is None:
        return high_kw, settled_kw
    if high_kw - low_kw <= tol_kw:
        return high_kw, high_kw
    if settled_kw is None:
        return high_kw, None
    return min(max(settled_kw, low_kw), high_kw), settled_kw
