"""A small Prometheus text-format registry (counters, gauges, one histogram); one instance per service."""

from __future__ import annotations

import bisect
import math
from dataclasses import dataclass, field

LATENCY_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.5, 5.0, 10.0)


def _labels(labels: tuple[tuple[str, str], ...]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{v}"' for k, v in labels)
    return "{" + inner + "}"


@dataclass
class Histogram:
    buckets: tuple[float, ...] = LATENCY_BUCKETS_S
    counts: list[int] = field(default_factory=list)
    total: float = 0.0
    n: int = 0
    window: list[float] = field(default_factory=list)
    window_size: int = 4096

    def __post_init__(self) -> None:
        self.counts = [0] * (len(self.buckets) + 1)

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.total += value
        self.n += 1
        self.window.append(value)
        if len(self.window) > self.window_size:
            del self.window[: len(self.window) - self.window_size]

    def quantile(self, q: float) -> float:
        """Quantile over the last ``window_size`` observations (NaN when none)."""
        if not self.window:
            return math.nan
        data = sorted(self.window)
        k = min(len(data) - 1, max(0, math.ceil(q * len(data)) - 1))
        return data[k]


@dataclass
class Metrics:
    """Counters and gauges keyed by ``(name, labels)``; :meth:`render` writes the Prometheus text format."""

    prefix: str = "evdlm_"
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    gauges: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)
    loop_latency_s: Histogram = field(default_factory=Histogram)
    loop_cpu_s: Histogram = field(default_factory=Histogram)
    """CPU time of the control cycle beside its wall time (the cycle does not yield: the loop thread's CPU
    time over it, plus the policy worker's): on a loaded machine the wall time also counts the time the
    cycle waited for a core"""
    help: dict[str, str] = field(
        default_factory=lambda: {
            "messages_total": "OCPP messages received, by action and outcome",
            "messages_sent_total": "OCPP calls sent to stations, by action and outcome",
            "fallbacks_total": "control cycles decided by the fallback, by reason",
            "violations_total": "control cycles that measured the site above its import limit",
            "offenders_total": "station measurements above the limit sent",
            "cycles_total": "control cycles run",
            "step_decisions_total": "control cycles by why the policy was asked (held: the step's plan)",
            "profiles_sent_total": "charging profiles sent",
            "stale_meter_cycles_total": "control cycles with a stale site meter",
            "stations_connected": "stations connected now",
            "transactions_active": "transactions running now",
            "site_import_kw": "measured net site import, kW",
            "import_limit_kw": "site import limit, kW",
            "loop_latency_seconds": "control loop latency, read to profiles queued",
            "loop_cpu_seconds": "control loop CPU time (loop thread and policy worker thread)",
            "loop_phase_seconds_total": "control loop wall time by phase (read: the snapshot, decide: the "
            "policy and the projection, write: the profiles and the battery's setpoint)",
            "forecast_refreshes_total": "forecast refreshes, by outcome (model or why it fell back)",
            "forecast_fallbacks_total": "forecast refreshes that fell back to persistence, by reason",
            "forecast_cycles_total": "control cycles by where the forecast window came from",
        }
    )

    def inc(self, name: str, value: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self.gauges[(name, tuple(sorted(labels.items())))] = value

    def count(self, name: str, **labels: str) -> float:
        """Sum of a counter over all label sets matching ``labels``."""
        want = set(labels.items())
        return sum(v for (n, lab), v in self.counters.items() if n == name and want <= set(lab))

    def render(self) -> str:
        lines: list[str] = []
        seen: set[str] = set()

        def header(name: str, kind: str) -> None:
            if name not in seen:
                seen.add(name)
                lines.append(f"# HELP {self.prefix}{name} {self.help.get(name, name)}")
                lines.append(f"# TYPE {self.prefix}{name} {kind}")

        for (name, labels), value in sorted(self.counters.items()):
            header(name, "counter")
            lines.append(f"{self.prefix}{name}{_labels(labels)} {value:g}")
        for (name, labels), value in sorted(self.gauges.items()):
            header(name, "gauge")
            lines.append(f"{self.prefix}{name}{_labels(labels)} {value:g}")
        for name, h in (("loop_latency_seconds", self.loop_latency_s), ("loop_cpu_seconds", self.loop_cpu_s)):
            header(name, "histogram")
            cum = 0
            for bound, c in zip(h.buckets, h.counts, strict=False):
                cum += c
                lines.append(f'{self.prefix}{name}_bucket{{le="{bound:g}"}} {cum}')
            lines.append(f'{self.prefix}{name}_bucket{{le="+Inf"}} {h.n}')
            lines.append(f"{self.prefix}{name}_sum {h.total:g}")
            lines.append(f"{self.prefix}{name}_count {h.n}")
        return "\n".join(lines) + "\n"
