"""The sent plans (multi-period TxProfiles) as the site loop tracks them: the limit each station follows
now, and the chargers whose plan moved enough to be sent again."""

from __future__ import annotations

import time

import numpy as np

from envs.core import FloatArray, SiteArrays
from envs.share import profile_to_kw_one
from serving.config import ServingConfig
from serving.dispatch import signed_profile
from serving.live import ConnectorLive
from serving.schedule import plan_moved


def follow_plans(site: SiteArrays, connectors: list[ConnectorLive], period_s: float, now: float) -> None:
    """A station follows its schedule on its own: each charger's current limit is its sent plan's
    period now (the last one past its end), so the deadband, the feasibility check and the offender
    check compare with what the station does."""
    for c in connectors:
        if not c.active or c.plan_kw is None or c.limit_kw is None or len(c.plan_kw) < 2:
            continue
        k = min(int(max(now - c.plan_start, 0.0) // period_s), len(c.plan_kw) - 1)
        value = signed_profile(site, c.index, float(c.plan_kw[k]))
        if value != c.limit_value:
            c.limit_value = value
            c.limit_kw = profile_to_kw_one(site, c.index, value)
            c.note_limit(c.plan_start + k * period_s)


def plans_moved(
    site: SiteArrays,
    connectors: list[ConnectorLive],
    cfg: ServingConfig,
    schedule: FloatArray,
    updates: list[int],
) -> list[int]:
    """Chargers whose plan moved beyond the deadband in a future period (or ran half out), at most
    once a minute (or a period, if shorter) each."""
    now = time.monotonic()
    chosen = set(updates)
    out = []
    for c in connectors:
        if not c.active or c.index in chosen or c.plan_kw is None:
            continue
        if now - c.plan_start < min(cfg.schedule_period_s, 60.0):
            continue  # a plan-only change waits a little: no resend storm from a shifting period
        ch = site.config.chargers[c.index]
        band_kw = cfg.deadband_a * ch.kw_per_a if ch.rate_unit == "A" else cfg.deadband_w / 1e3
        if plan_moved(c.plan_kw, now - c.plan_start, schedule[c.index], cfg.schedule_period_s, band_kw):
            out.append(c.index)
    return out


def plans_step_away(
    site: SiteArrays,
    connectors: list[ConnectorLive],
    cfg: ServingConfig,
    limits_kw: FloatArray,
    now: float,
    read_at: float | None = None,
) -> list[int]:
    """Chargers whose sent plan will be, halfway through the next control interval, in a later period
    further than the deadband from this cycle's decision: they get the decision now. The deadband
    compares the decision with the period in force when the cycle read; a station about to step into its
    next period on its own (a plan sent one period ago, with periods as long as the control interval)
    would otherwise follow that period, not this cycle's decision, for most of the interval (in the V2G
    benchmark, EVs kept discharging by the decision stopped at their plan's next period, every third
    cycle). ``read_at``: when the cycle read the periods in force (default ``now``); every later period
    up to halfway through the next interval is compared: with cycles on the plan's grid, a station
    steps between the cycle's reading and ``now`` about every other cycle, and the period it stepped
    into (the one in force by now) was compared by nothing."""
    out = []
    for c in connectors:
        if not c.active or c.plan_kw is None or len(c.plan_kw) < 2 or c.limit_kw is None:
            continue
        last = len(c.plan_kw) - 1
        age = max(now - c.plan_start, 0.0)
        k_read = min(
            int(max((now if read_at is None else read_at) - c.plan_start, 0.0) // cfg.schedule_period_s), last
        )
        k_next = min(int((age + cfg.control_interval_s / 2) // cfg.schedule_period_s), last)
        if k_next == k_read:
            continue
        ch = site.config.chargers[c.index]
        band_kw = cfg.deadband_a * ch.kw_per_a if ch.rate_unit == "A" else cfg.deadband_w / 1e3
        ahead = np.asarray(c.plan_kw[k_read + 1 : k_next + 1], dtype=float)
        if np.any(np.abs(ahead - float(limits_kw[c.index])) > band_kw):
            out.append(c.index)
    return out
