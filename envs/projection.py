"""The hard safety projection (CONTRACT STUB: being implemented; signatures are final)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays, SiteState


@dataclass(frozen=True, eq=False)
class ProjectionResult:
    """A feasible allocation. Arrays are ``(n,)`` or ``(B, n)``, site values ``()`` or ``(B,)``."""

    charger_kw: FloatArray
    """per-charger power after projection and rounding, kW (+ charge, - discharge)"""
    battery_kw: FloatArray
    """stationary battery power, kW (+ charge)"""
    pv_curtailed_kw: FloatArray
    """PV curtailed to respect the export limit, kW"""
    site_import_kw: FloatArray
    """net grid import with this allocation, kW (negative = export)"""
    feasible: BoolArray
    """False where no allocation can satisfy the site limits (then the safest one is returned)"""
    moved_kw: FloatArray
    """Euclidean distance between request and result over chargers and battery, kW"""
    paused: BoolArray
    """chargers an allocation was asked for but switched off by the minimum-current rule"""


def charger_bounds(site: SiteArrays, state: SiteState) -> tuple[FloatArray, FloatArray]:
    """Per-charger box ``(lo, hi)`` in kW from charger, EV, energy and departure limits."""
    raise NotImplementedError


def project(
    site: SiteArrays, state: SiteState, charger_kw: FloatArray, battery_kw: FloatArray | float = 0.0
) -> ProjectionResult:
    """Project a requested allocation onto the feasible set."""
    raise NotImplementedError


def priority_fill(
    site: SiteArrays, state: SiteState, scores: FloatArray, allow_discharge: bool = False
) -> ProjectionResult:
    """Fill capacity in descending score order, then project."""
    raise NotImplementedError


__all__ = ["ProjectionResult", "charger_bounds", "priority_fill", "project", "np"]
