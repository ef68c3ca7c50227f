"""Meter plausibility: readings no charger or site could produce are meter faults, never load.

A station that reports watts labelled kW (7,360 "kW" on a 7.4 kW charger) must not be taken as an
offender whose impossible draw is reserved: that would give every other charger nothing. These pure
functions judge one reading against what the hardware can do; :class:`serving.ingest.LiveUpdater` counts
a fault (``meter_faults_total{kind}``), flags the charger (``flags.meter_fault`` in the state), ignores the
reading and assumes the charger at the limit it was sent.

Charger reading faults (``kind``):

- ``above_rating``: power above the charger's rating by more than ``rel_tol`` and ``abs_tol_kw``;
- ``negative``: import power below ``-abs_tol_kw``, or export power above ``abs_tol_kw`` on a charger that
  cannot discharge;
- ``register_jump``: the import energy register grew by more than the rating allows over the time since
  the last accepted register (plus ``abs_tol_kw`` for a minute of slack), or ran back by more than the
  rating could have added within ``late_window_s``.

A register a little behind the last accepted one is a **late** reading (:func:`register_is_late`: sent
after a newer one, e.g. queued by the station), not a fault: it is ignored and counted apart.

Site meter faults: a net import whose magnitude exceeds ``factor * (import limit + sum of charger
ratings)`` (``site_above_physical``): no site can draw that through a connection sized for its limit;
the reading is ignored, so a site meter that reads only nonsense turns stale and the loop steps down.
"""

from __future__ import annotations

from typing import Literal

MeterFault = Literal["above_rating", "negative", "register_jump"]
SiteMeterFault = Literal["site_above_physical"]


def charger_power_fault(
    power_import_kw: float | None,
    power_export_kw: float | None,
    rated_kw: float,
    can_discharge: bool,
    rel_tol: float,
    abs_tol_kw: float,
) -> MeterFault | None:
    """The fault of one charger power reading, kW (None where plausible)."""
    if power_import_kw is not None:
        if power_import_kw > rated_kw * (1.0 + rel_tol) + abs_tol_kw:
            return "above_rating"
        if power_import_kw < -abs_tol_kw:
            return "negative"
    if power_export_kw is not None and not can_discharge and power_export_kw > abs_tol_kw:
        return "negative"
    return None


def register_fault(
    last_wh: float | None,
    new_wh: float,
    elapsed_s: float,
    rated_kw: float,
    rel_tol: float,
    abs_tol_kw: float,
) -> MeterFault | None:
    """The fault of an import energy register reading against the last accepted one (None: plausible).

    At most ``rated_kw * (1 + rel_tol)`` over ``elapsed_s`` plus a minute at ``abs_tol_kw + rated_kw``
    (readings are timed at receipt, not at measurement) may have been added; a register never runs back.
    """
    if last_wh is None:
        return None
    if new_wh < last_wh - 1.0:
        return "register_jump"
    slack_h = 1.0 / 60.0
    most_wh = 1000.0 * (
        rated_kw * (1.0 + rel_tol) * max(elapsed_s, 0.0) / 3600.0 + (rated_kw + abs_tol_kw) * slack_h
    )
    return "register_jump" if new_wh - last_wh > most_wh else None


def register_is_late(
    last_wh: float | None, new_wh: float, rated_kw: float, rel_tol: float, late_window_s: float
) -> bool:
    """True where ``new_wh`` is behind ``last_wh`` by no more than the rating adds in ``late_window_s``:
    an older reading arriving late (ignored, not a fault)."""
    if last_wh is None or new_wh >= last_wh - 1.0:
        return False
    return last_wh - new_wh <= 1000.0 * rated_kw * (1.0 + rel_tol) * late_window_s / 3600.0 + 1.0


def site_meter_fault(
    import_kw: float, import_limit_kw: float, rated_sum_kw: float, factor: float
) -> SiteMeterFault | None:
    """The fault of a site meter reading (None where plausible): beyond ``factor`` times what the
    connection and every charger together could carry, either way."""
    bound = factor * (import_limit_kw + rated_sum_kw)
    return "site_above_physical" if abs(import_kw) > bound else None
