"""The view model of the operator API and the dashboard: the live site as JSON-ready data.

Pure functions over the live state, the last cycle and the counters; no I/O. :func:`site_state` is what
``/api/state`` returns, what the server-sent events carry after every cycle and what the dashboard draws
(``docs/dashboard.md``); :func:`health` is ``/health``.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from envs.core import FloatArray, SiteArrays
from serving.config import ServingConfig
from serving.live import LiveSite
from serving.metrics import Metrics
from serving.violations import Violation

if TYPE_CHECKING:
    from serving.battery import BatteryStatus
    from serving.forecast import LiveForecast
    from serving.loop import CycleSummary


def health(
    live: LiveSite, cycle: int, last: CycleSummary | None, control_interval_s: float
) -> tuple[dict[str, Any], bool]:
    """``(body, ok)`` of ``/health``: stalled (not ok) when no cycle ran for three intervals and 5 s."""
    age = None if last is None else time.time() - last.time.timestamp()
    stalled = age is not None and age > 3 * control_interval_s + 5
    body = {
        "status": "stalled" if stalled else "ok",
        "cycle": cycle,
        "last_cycle_age_s": age,
        "stations_connected": sum(s.connected for s in live.stations.values()),
        "stations_configured": len(live.stations),
    }
    return body, not stalled


def site_state(
    site: SiteArrays,
    live: LiveSite,
    cfg: ServingConfig,
    metrics: Metrics,
    safe_share_kw: FloatArray,
    cycle: int,
    last: CycleSummary | None,
    forecast: LiveForecast | None,
    violations: Sequence[Violation] = (),
    battery: BatteryStatus | None = None,
) -> dict[str, Any]:
    """The live site as JSON-ready data: ``/api/state``, the server-sent events and the dashboard.

    ``violations`` are the last attributed limit violations (:mod:`serving.violations`); ``loop.violations``
    counts the controllable ones, the others are apart."""
    now = time.monotonic()
    utc = datetime.now(UTC)
    measured = live.measured_kw(now, cfg.station_meter_timeout_s)
    measured0 = np.where(np.isfinite(measured), measured, 0.0)
    node_kw = site.node_power_kw(measured0)
    planned_node_kw = site.node_power_kw(last.outcome.assumed_kw if last else np.zeros(site.n))
    meter = live.meter
    chargers = []
    for c in live.connectors:
        st = live.stations.get(c.station_id)
        time_left = None
        if c.departure is not None:
            time_left = max((c.departure - utc).total_seconds() / 3600.0, 0.0)
        chargers.append(
            {
                "id": c.charger_id,
                "station_id": c.station_id,
                "connector_id": c.connector_id,
                "connected": bool(st and st.connected),
                "status": c.status,
                "transaction_id": c.ocpp_tx_id,
                "energy_delivered_kwh": round(c.delivered_kwh, 3),
                "energy_asked_kwh": c.energy_asked_kwh,
                "departure": c.departure.isoformat() if c.departure else None,
                "time_left_h": time_left,
                "limit_kw": c.limit_kw,
                "limit_value": c.limit_value,
                "limit_unit": site.config.chargers[c.index].rate_unit,
                "power_kw": None if not np.isfinite(measured[c.index]) else float(measured[c.index]),
                "safe_share_kw": float(safe_share_kw[c.index]),
                "v2g_mode": c.v2g_mode,
                "v2g_reason": c.v2g_reason,
                "discharge_kw": (
                    float(max(-measured[c.index], 0.0)) if np.isfinite(measured[c.index]) else None
                ),
                "energy_exported_kwh": round(c.exported_kwh, 3),
                "schedule_kw": None if c.plan_kw is None else [round(float(v), 3) for v in c.plan_kw],
                "flagged_at": (
                    (utc - timedelta(seconds=now - c.offender_since)).isoformat() if c.offender else None
                ),
                "flags": {
                    "not_following_profile": c.offender,
                    "offline": not bool(st and st.connected),
                    "v2g_active": bool(c.limit_kw is not None and c.limit_kw < 0),
                    "meter_fault": c.meter_fault is not None,
                },
                "meter_fault": c.meter_fault,
            }
        )
    h, cpu = metrics.loop_latency_s, metrics.loop_cpu_s
    return {
        "site": {
            "name": site.config.name,
            "import_limit_kw": site.import_limit_kw,
            "export_limit_kw": float(site.export_limit_kw) if np.isfinite(site.export_limit_kw) else None,
            "site_import_kw": None if meter is None else meter.import_kw,
            "export_kw": None if meter is None else max(-meter.import_kw, 0.0),
            "discharge_kw": float(np.sum(np.maximum(-measured0, 0.0))),
            "pv_kw": None if meter is None else meter.pv_kw,
            "base_load_kw": None if last is None else last.base_load_kw,
            "peak_import_kw": live.peak_import_kw,
            "meter_age_s": None if meter is None else now - meter.at,
            "meter_stale": None if last is None else last.outcome.meter_stale,
            "meter_fault": live.site_meter_fault,
        },
        "loop": {
            "cycle": cycle,
            "time": None if last is None else last.time.isoformat(),
            "policy": None if last is None else last.outcome.policy,
            "fallback_reason": None if last is None else last.outcome.fallback_reason,
            "latency_ms": None if last is None else last.latency_ms,
            "p99_latency_ms": None if h.n == 0 else h.quantile(0.99) * 1000.0,
            "p99_cpu_ms": None if cpu.n == 0 else cpu.quantile(0.99) * 1000.0,
            "fallbacks": metrics.count("fallbacks_total"),
            "violations": metrics.count("violations_total", cause="controllable"),
            "violations_base_load_rise": metrics.count("violations_total", cause="base_load_rise"),
            "overloads_uncontrollable": metrics.count("violations_total", cause="uncontrollable"),
            "last_uncontrollable": next(
                (v.time.isoformat() for v in reversed(violations) if v.cause == "uncontrollable"), None
            ),
            "recent_violations": [v.to_json() for v in list(violations)[-5:]],
            "planned_import_kw": None if last is None else last.outcome.planned_import_kw,
            "control_interval_s": cfg.control_interval_s,
        },
        "nodes": [
            {
                "id": nid,
                "parent": None if site.node_parent[j] < 0 else site.node_ids[int(site.node_parent[j])],
                "limit_kw": float(site.node_limit_kw[j]),
                "measured_kw": float(node_kw[j]),
                "planned_kw": float(planned_node_kw[j]),
            }
            for j, nid in enumerate(site.node_ids)
        ],
        "stations": [
            {
                "id": s.id,
                "connected": s.connected,
                "ocpp_version": s.ocpp_version,
                "registered": s.registered,
                "failsafe": s.failsafe,
                "v2x_operation_modes": None if s.operation_modes is None else list(s.operation_modes),
                "failsafe_attempts": s.failsafe_attempts,
                "vendor": s.vendor,
                "model": s.model,
            }
            for s in live.stations.values()
        ],
        "chargers": chargers,
        "forecast": forecast_state(forecast, metrics),
        "battery": battery_state(site, battery, last),
    }


def battery_state(
    site: SiteArrays, status: BatteryStatus | None, last: CycleSummary | None
) -> dict[str, Any] | None:
    """The site battery's part of :func:`site_state` (None without a battery link configured): its link,
    SoC, measured power and the setpoint (kW, + charge), and whether the last decision could use it."""
    if status is None:
        return None
    soc = status.soc_frac
    return {
        "link": status.link,
        "present": status.present,
        "soc_pct": None if soc is None else round(soc * 100.0, 2),
        "soc_kwh": None if soc is None else round(soc * site.battery_capacity_kwh, 3),
        "capacity_kwh": site.battery_capacity_kwh,
        "power_kw": status.power_kw,
        "setpoint_kw": status.setpoint_kw,
        "planned_kw": None if last is None else last.outcome.battery_kw,
        "max_charge_kw": site.battery_max_charge_kw,
        "max_discharge_kw": site.battery_max_discharge_kw,
        "age_s": status.age_s,
    }


def forecast_state(fc: LiveForecast | None, metrics: Metrics) -> dict[str, Any] | None:
    """The forecast's part of :func:`site_state` (None without a forecast)."""
    if fc is None:
        return None
    run = fc.run
    return {
        "model": fc.model is not None,
        "source": "model" if run is not None else "persistence",
        "fallback_reason": fc.fallback_reason,
        "origin": None if run is None else run.origin.isoformat(),
        "step_s": fc.step.total_seconds(),
        "horizon_steps": fc.horizon_steps,
        "window_steps": fc.window_steps,
        "history_steps": len(fc.history),
        "fallbacks": metrics.count("forecast_fallbacks_total"),
    }
