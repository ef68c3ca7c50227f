"""Action spaces over :class:`~envs.env.ChargingSiteEnv`'s kW request, each a Gymnasium wrapper.

* :class:`NormalisedAction`: ``Box(-1, 1)``; ``a >= 0`` asks ``a * hi`` kW of a charger and ``a < 0``
  ``-a * lo`` kW, ``[lo, hi]`` its feasible range now (:func:`envs.projection.charger_box`: rating, EV
  limits, energy room, V2G allowance); the battery's entry asks ``a * max_charge_kw`` (``a >= 0``) or
  ``a * max_discharge_kw``.
* :class:`PriorityScores`: ``Box(-1, 1)`` of scores; capacity is filled in descending score order by
  :func:`envs.projection.priority_fill`, the battery's entry mapped as above.

Both hand the env a kW request, which it projects as every request. The mappings are also functions
(:func:`normalised_request`, :func:`priority_request`) so that a learned policy acting on snapshots maps its
action with the same code.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from numba import njit

from envs import projection
from envs.core import FloatArray, SiteArrays, SiteState
from envs.env import ChargingSiteEnv


@njit(cache=True, error_model="numpy")
def _unit(v: float) -> float:
    """``np.minimum(np.maximum(v, -1.0), 1.0)`` of one value (NaN propagates)."""
    v = v if (v >= -1.0 or v != v) else -1.0
    return v if (v <= 1.0 or v != v) else 1.0


@njit(cache=True, error_model="numpy")
def _battery_request(a: FloatArray, n: int, battery_c: FloatArray, out: FloatArray) -> None:
    """``out[b]``: the battery's kW request from ``a[b, n]`` (0 without a battery)."""
    for b in range(a.shape[0]):
        if battery_c[0] > 0.0:
            ab = _unit(a[b, n])
            out[b] = ab * battery_c[1] if ab >= 0 else ab * battery_c[2]
        else:
            out[b] = 0.0


@njit(cache=True, error_model="numpy")
def _request(
    a: FloatArray,
    lo_kw: FloatArray,
    hi_kw: FloatArray,
    battery_c: FloatArray,
    charger_kw: FloatArray,
    battery_kw: FloatArray,
) -> None:
    """``a >= 0`` asks ``a * hi``, ``a < 0`` asks ``-a * lo`` (``a`` clipped to [-1, 1])."""
    B, n = charger_kw.shape
    for b in range(B):
        for i in range(n):
            v = _unit(a[b, i])
            charger_kw[b, i] = v * hi_kw[b, i] if v >= 0 else -v * lo_kw[b, i]
    _battery_request(a, n, battery_c, battery_kw)


def unit_action_space(site: SiteArrays) -> spaces.Box:
    """``Box(-1, 1, (n_chargers + has_battery,), float32)``."""
    return spaces.Box(-1.0, 1.0, shape=(site.n + int(site.has_battery),), dtype=np.float32)


def battery_scale(site: SiteArrays, allow_discharge: bool) -> FloatArray:
    """``[has battery, kW per unit of action when charging, when discharging]``."""
    low = site.battery_max_discharge_kw if allow_discharge else 0.0
    return np.array([float(site.has_battery), site.battery_max_charge_kw, low])


def battery_request(a: FloatArray, site: SiteArrays, scale: FloatArray) -> FloatArray:
    """``(B,)`` battery kW asked by the battery entry of the actions ``a`` ``(B, n [+1])`` (0: none)."""
    out = np.empty(a.shape[0])
    _battery_request(a, site.n, scale, out)
    return out


def normalised_request(
    a: FloatArray, lo_kw: FloatArray, hi_kw: FloatArray, scale: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """The kW request ``(B, n)``, ``(B,)`` of normalised actions ``a`` ``(B, n [+1])`` (module doc)."""
    B, n = lo_kw.shape
    charger_kw = np.empty((B, n))
    battery_kw = np.empty(B)
    _request(a, lo_kw, hi_kw, scale, charger_kw, battery_kw)
    return charger_kw, battery_kw


def priority_request(
    site: SiteArrays,
    state: SiteState,
    a: FloatArray,
    allow_discharge: bool,
    *,
    plan: projection.ProjectionPlan | None = None,
    box: projection.ChargerBox | None = None,
    departure_floor: bool = False,
) -> projection.ProjectionResult:
    """Scores ``a[:, :n]`` filled in descending order; with a battery, its entry mapped as in
    :func:`normalised_request` and the whole projected again."""
    n = site.n
    res = projection.priority_fill(
        site, state, a[:, :n], allow_discharge, plan=plan, box=box, departure_floor=departure_floor
    )
    if site.has_battery:
        battery_kw = battery_request(a, site, battery_scale(site, allow_discharge))
        res = projection.project(
            site, state, res.charger_kw, battery_kw, plan=plan, box=box, departure_floor=departure_floor
        )
    return res


def _kw_vector(site: SiteArrays, charger_kw: FloatArray, battery_kw: float) -> FloatArray:
    return np.append(charger_kw, battery_kw) if site.has_battery else np.asarray(charger_kw, dtype=float)


def _unit_row(action: np.ndarray, size: int) -> FloatArray:
    a = np.asarray(action, dtype=float).reshape(1, -1)
    if a.shape[1] != size:
        raise ValueError(f"action must have {size} entries, got {a.shape[1]}")
    return a


class NormalisedAction(gym.ActionWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """``Box(-1, 1)`` actions as a fraction of each charger's feasible range now (see the module doc)."""

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        self.site_env: ChargingSiteEnv = env.unwrapped  # type: ignore[assignment]
        site = self.site_env.site
        self.action_space = unit_action_space(site)
        self._size = site.n + int(site.has_battery)
        self._scale = battery_scale(site, self.site_env.config.allow_discharge)
        # the kW request is written into one buffer (handed to the env's step, which only reads it)
        self._kw = np.zeros(site.n + 1)
        self._charger_kw = self._kw[: site.n].reshape(1, site.n)
        self._battery_kw = self._kw[site.n :]
        self._request_kw = self._kw[: self._size]

    def action(self, action: np.ndarray) -> np.ndarray:
        a = np.asarray(action, dtype=float).reshape(1, -1)
        if a.shape[1] != self._size:
            raise ValueError(f"action must have {self._size} entries, got {a.shape[1]}")
        box = self.site_env.charger_box
        _request(a, box.lo_kw, box.hi_kw, self._scale, self._charger_kw, self._battery_kw)
        return self._request_kw


class PriorityScores(gym.ActionWrapper[np.ndarray, np.ndarray, np.ndarray]):
    """``Box(-1, 1)`` scores: capacity filled in descending score order (see the module doc)."""

    def __init__(self, env: gym.Env[np.ndarray, np.ndarray]) -> None:
        super().__init__(env)
        self.site_env: ChargingSiteEnv = env.unwrapped  # type: ignore[assignment]
        self.action_space = unit_action_space(self.site_env.site)
        self._size = self.site_env.site.n + int(self.site_env.site.has_battery)

    def action(self, action: np.ndarray) -> np.ndarray:
        e = self.site_env
        a = _unit_row(action, self._size)
        res = priority_request(
            e.site, e.state, a, e.config.allow_discharge, plan=e.plan, box=e.charger_box,
            departure_floor=e.config.departure_floor,
        )  # fmt: skip
        return _kw_vector(e.site, np.asarray(res.charger_kw)[0], float(np.asarray(res.battery_kw)[0]))


__all__ = [
    "NormalisedAction",
    "PriorityScores",
    "battery_request",
    "battery_scale",
    "normalised_request",
    "priority_request",
    "unit_action_space",
]
