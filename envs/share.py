"""Static sizing and units shared by the policies and the live service.

:func:`safe_static_share_kw` is the one static safe share: the per-charger kW that stays feasible with every
charger occupied and drawing it at once. The ``static`` baseline caps each charger at it, and the live
service installs it as each station's failsafe profile and steps down to it on a stale meter.

:func:`kw_to_profile` / :func:`profile_to_kw` are the one conversion between kW and the unit a charger's
charging profiles use: A per phase (``kw_per_a`` = phases x voltage / 1000) or W. A limit sent to a station
is rounded down to one decimal of its unit, never above the kW it came from.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np

from envs.core import BoolArray, FloatArray, SiteArrays, SiteState
from envs.projection import project

RateUnit = Literal["A", "W"]


def occupied_state(site: SiteArrays, present: BoolArray, base_load_kw: float) -> SiteState:
    """Every charger of ``present`` with an EV that takes anything for ever, ``base_load_kw`` of other
    (building) load, no PV: the state a failsafe share must be feasible in."""
    n = site.n
    return SiteState(
        ev_present=present,
        ev_max_charge_kw=np.where(present, np.inf, 0.0),
        ev_max_discharge_kw=np.zeros(n),
        energy_needed_kwh=np.full(n, 1e6),
        energy_room_kwh=np.full(n, 1e6),
        energy_dischargeable_kwh=np.zeros(n),
        time_left_h=np.full(n, 1e3),
        base_load_kw=base_load_kw,
        pv_kw=0.0,
        dt_h=1.0,
    )


def safe_static_share_kw(site: SiteArrays, reserve_kw: float = 0.0) -> FloatArray:
    """(n,) per-charger kW that is feasible with every charger occupied and drawing it at once.

    The projection of "everyone at full rating" with all EVs present, unbounded needs, no PV and
    ``reserve_kw`` of other (building) load: whatever the projection returns is feasible by construction.
    Chargers it switches off (below the minimum current) get 0: they cannot charge without a central system.
    """
    state = occupied_state(site, np.ones(site.n, dtype=bool), reserve_kw)
    res = project(site, state, site.rated_kw.copy(), 0.0)
    return np.maximum(np.asarray(res.charger_kw, dtype=float), 0.0)


def amps_mask(site: SiteArrays) -> BoolArray:
    """(n,) True where a charger's profiles are in A per phase (else W)."""
    return np.array([c.rate_unit == "A" for c in site.config.chargers], dtype=bool)


def kw_to_profile(site: SiteArrays, kw: FloatArray, amps: BoolArray | None = None) -> FloatArray:
    """(n,) kW -> (n,) A per phase or W, each charger in its profile unit (``amps``: :func:`amps_mask`),
    rounded down to one decimal: never above the kW asked; negative kW -> 0."""
    amps = amps_mask(site) if amps is None else amps
    return _to_unit(np.asarray(kw, dtype=float), np.asarray(site.kw_per_a, dtype=float), amps)


def profile_to_kw(site: SiteArrays, value: FloatArray, amps: BoolArray | None = None) -> FloatArray:
    """(n,) limits in A per phase (where ``amps``, default :func:`amps_mask`) or W -> (n,) kW, unrounded."""
    amps = amps_mask(site) if amps is None else amps
    return _from_unit(np.asarray(value, dtype=float), np.asarray(site.kw_per_a, dtype=float), amps)


def kw_to_profile_one(site: SiteArrays, i: int, kw: float) -> float:
    """:func:`kw_to_profile` of charger ``i`` alone (plain floats: the loop's per-charger paths call it
    thousands of times a cycle; the same IEEE arithmetic as the arrays, so the same value)."""
    amps = site.config.chargers[i].rate_unit == "A"
    value = max(kw / float(site.kw_per_a[i]) if amps else kw * 1000.0, 0.0) * 10.0 + 1e-9
    return (math.floor(value) if math.isfinite(value) else value) / 10.0


def profile_to_kw_one(site: SiteArrays, i: int, value: float, unit: RateUnit | None = None) -> float:
    """:func:`profile_to_kw` of charger ``i`` alone; ``unit``: the limit's unit where it is not the
    charger's own (a station's profile may be in either)."""
    amps = (unit or site.config.chargers[i].rate_unit) == "A"
    return value * float(site.kw_per_a[i]) if amps else value / 1000.0


def kw_to_profile_at(site: SiteArrays, i: int, kw: FloatArray) -> FloatArray:
    """:func:`kw_to_profile` of charger ``i`` for many kW values at once (a schedule's periods)."""
    amps = np.full(np.shape(kw), site.config.chargers[i].rate_unit == "A")
    return _to_unit(np.asarray(kw, dtype=float), np.full(np.shape(kw), float(site.kw_per_a[i])), amps)


def profile_to_kw_at(site: SiteArrays, i: int, value: FloatArray) -> FloatArray:
    """:func:`profile_to_kw` of charger ``i`` for many limits at once (a schedule's periods)."""
    if site.config.chargers[i].rate_unit == "A":
        return np.asarray(value, dtype=float) * float(site.kw_per_a[i])
    return np.asarray(value, dtype=float) / 1000.0


def _to_unit(kw: FloatArray, kw_per_a: FloatArray, amps: BoolArray) -> FloatArray:
    value = np.where(amps, kw / np.where(amps, kw_per_a, 1.0), kw * 1000.0)
    return np.floor(np.maximum(value, 0.0) * 10.0 + 1e-9) / 10.0


def _from_unit(value: FloatArray, kw_per_a: FloatArray, amps: BoolArray) -> FloatArray:
    return np.where(amps, value * kw_per_a, value / 1000.0)
