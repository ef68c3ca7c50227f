"""The price and peak rules of the rule-based DLM (:mod:`agents.rule_based`): the billing-period peak target
(the cheapest deadline-feasible import level), the power each EV can expect under it, and which EVs charge
now because now is among the cheapest steps of their stay."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import pandas as pd

from agents.rule_deadlines import Deadlines
from envs.core import FloatArray, IntArray, SiteArrays

LEVELS = 48
"""import levels the peak target is chosen among"""


class BillingClock:
    """Hours left in the billing period (a calendar month in the site's timezone, where the tariff bills
    monthly) and in the episode (when its end is known)."""

    def __init__(self, site: SiteArrays, episode_end: pd.Timestamp | None) -> None:
        self._site = site
        self._episode_end = episode_end
        self._month_end: np.datetime64 | None = None

    def hours_left(self, now: np.datetime64, horizon_h: float) -> float:
        """Hours from ``now`` (UTC) to the end of the billing period or the episode, whichever comes first,
        at least ``horizon_h``."""
        site = self._site
        now = now.astype("datetime64[s]")
        ends: list[float] = []
        if site.config.tariff.billing_period == "month":
            if (
                self._month_end is None
                or now >= self._month_end
                or now < self._month_end - np.timedelta64(32, "D")
            ):  # computed once per month, not every step
                tz = site.config.timezone
                local = pd.Timestamp(now, tz="UTC").tz_convert(tz).tz_localize(None)
                end = (local.to_period("M") + 1).to_timestamp().tz_localize(tz).tz_convert("UTC")
                self._month_end = end.tz_localize(None).to_datetime64().astype("datetime64[s]")
            ends.append(float((self._month_end - now) / np.timedelta64(1, "s")) / 3600.0)
        if self._episode_end is not None:
            end_s = (
                self._episode_end.tz_convert("UTC").tz_localize(None).to_datetime64().astype("datetime64[s]")
            )
            ends.append(float((end_s - now) / np.timedelta64(1, "s")) / 3600.0)
        left = min(ends) if ends else horizon_h
        return max(left, horizon_h)


class Room(NamedTuple):
    """Room under an import level, kWh, summed over the first ``k`` steps for each departure step ``k``."""

    with_now: FloatArray
    """over the first ``k`` steps from now"""
    after_now: FloatArray
    """over the ``k - 1`` steps after now"""


def room_kwh(net_h: FloatArray, level: float | FloatArray, dt: float, ks: IntArray, margin: float) -> Room:
    """Room under import ``level`` (scalar or ``(G,)``) times ``margin``, summed over the first ``k`` steps
    (from now) and over the ``k - 1`` steps after now, for each ``k`` of ``ks``; past the forecast horizon
    the window's mean room per step is assumed. Shapes ``(K,)`` or ``(G, K)``."""
    lv = np.asarray(level, dtype=float)[..., None]
    H = net_h.shape[-1]
    room = np.maximum(lv - net_h, 0.0) * (dt * margin)  # (..., H)
    cum = np.concatenate([np.zeros(lv.shape), np.cumsum(room, axis=-1)], axis=-1)  # (..., H + 1)
    mean = cum[..., -1:] / H
    kk = np.minimum(ks, H)
    beyond = np.maximum(ks - H, 0)
    with_now = cum[..., kk] + beyond * mean
    return Room(with_now, with_now - room[..., :1])


def peak_target(
    site: SiteArrays,
    dt: float,
    need: FloatArray,
    eff: FloatArray,
    steps_left: np.ndarray,
    active: np.ndarray,
    net_h: FloatArray,
    price_h: FloatArray,
    peak_so_far: float,
    dl: Deadlines,
    windows: float,
    margin: float,
    arrivals_due: FloatArray,
    import_h: FloatArray | None = None,
) -> float:
    """The import level to stay under: the cheapest of a grid of levels that still lets every present
    EV finish (cumulative energy by deadline under the forecast net load, within ``margin`` of the room),
    counting the demand charge once and the window's energy cost ``windows`` times (the windows left in
    the billing period). ``price_h`` is the marginal price of charging (what surplus PV would earn
    exported where there is a surplus); only the surplus's share of the room costs it, the rest is imported
    at ``import_h`` (default ``price_h``)."""
    tariff = site.config.tariff
    H = len(net_h)
    grid_kwh = np.where(active, need / eff, 0.0)
    deadline = np.minimum(steps_left, H) - 1
    share = np.where(steps_left > H, H / np.maximum(steps_left, 1), 1.0)
    due = np.cumsum(np.bincount(deadline[active], weights=(grid_kwh * share)[active], minlength=H)[:H])
    if due[-1] <= 1e-9:
        return peak_so_far
    lo = max(peak_so_far, float(net_h.min()), 0.0)
    hi = site.import_limit_kw
    if hi <= lo:
        return peak_so_far
    levels = np.linspace(lo, hi, LEVELS)
    room = np.maximum(levels[:, None] - net_h[None, :], 0.0) * dt  # (G, H) kWh per step under each level
    # feasible: what deadlines force by each departure step, and what the EVs expected to arrive want by
    # then (``arrivals_due``, (K,)), fits under the level (times the margin)
    due_k = dl.site_kwh + arrivals_due
    feasible = (room_kwh(net_h, levels, dt, dl.ks, margin).with_now >= due_k[None, :] - 1e-6).all(axis=1)
    if not feasible.any():
        return hi
    if tariff.demand_charge_per_kw <= 0:
        return hi
    # the room under a level in a step with PV surplus: the surplus (at the price it would earn exported),
    # then imports (at the import price): a higher level buys no more of the cheap surplus
    pv_room = np.minimum(room, np.maximum(-net_h, 0.0)[None, :] * dt)
    pieces = np.concatenate([pv_room, room - pv_room], axis=1)  # (G, 2H)
    piece_price = np.concatenate([price_h, price_h if import_h is None else import_h])
    order = np.argsort(piece_price, kind="stable")
    room_sorted = pieces[:, order]
    before = np.cumsum(room_sorted, axis=1) - room_sorted
    take = np.clip(due[-1] - before, 0.0, room_sorted)
    energy_cost = take @ piece_price[order]
    cost = tariff.demand_charge_per_kw * np.maximum(levels - peak_so_far, 0.0) + windows * energy_cost
    cost = np.where(feasible, cost, np.inf)
    return float(levels[int(np.argmin(cost))])


def expected_kw(
    need: FloatArray,
    rate: FloatArray,
    steps_left: np.ndarray,
    active: np.ndarray,
    net_h: FloatArray,
    target: float,
    H: int,
    arriving_kwh: FloatArray,
) -> FloatArray:
    """The power each EV can expect on average for the rest of its stay: its rate, or, when the site
    is crowded, its need-weighted share of the average room under the target over its stay, shared also
    with the energy EVs arriving before it leaves are expected to ask for (``arriving_kwh``, ``(H,)``)."""
    room_h = np.maximum(target - net_h, 0.0)
    mean_room = np.cumsum(room_h) / np.arange(1, H + 1)
    stay = np.minimum(steps_left, H)
    total_need = float(need[active].sum()) + np.cumsum(arriving_kwh)[stay - 1]
    share = np.divide(need, total_need, out=np.zeros_like(need), where=total_need > 0)
    share_kw = mean_room[stay - 1] * share
    return np.where(active, np.maximum(np.minimum(rate, share_kw), 1e-6), 0.0)


def cheap_now(
    need: FloatArray,
    rate: FloatArray,
    expect_kw: FloatArray,
    eff: FloatArray,
    dt: float,
    steps_left: np.ndarray,
    active: np.ndarray,
    price_h: FloatArray,
    H: int,
) -> FloatArray:
    """Power each EV wants now because now is among the cheapest steps of its stay that it needs
    (counted at the power it can expect)."""
    stay = np.minimum(steps_left, H)
    steps_needed = np.ceil(need / (np.maximum(expect_kw, 1e-6) * eff * dt) - 1e-9)
    cheaper = np.concatenate([[0], np.cumsum(price_h[1:] < price_h[0] - 1e-12)])  # (H,)
    n_cheaper = cheaper[stay - 1].astype(float)
    beyond = steps_left > H
    if beyond.any() and H > 1:
        n_cheaper = np.where(beyond, n_cheaper * (steps_left - 1) / (H - 1), n_cheaper)
    return np.where(active & (n_cheaper < steps_needed), rate, 0.0)
