"""The dashboard's time series: one point per control cycle over a sliding window of wall time.

Pure data, no I/O: :func:`point_from_state` reads a point out of :func:`serving.view.site_state`,
:func:`point_from_decision` out of a stored decision row (to refill the chart after a restart), and
:class:`History` keeps the last ``window_s`` seconds of them, at most ``max_points``.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True)
class HistoryPoint:
    """The site at the end of one control cycle. Power in kW; None where unknown (e.g. stale meter)."""

    t_s: float
    """unix time of the cycle, s"""
    cycle: int
    site_import_kw: float | None
    """measured net grid import, kW"""
    import_limit_kw: float
    """the grid connection's import limit, kW"""
    peak_import_kw: float | None
    """billing-period peak import so far: the target not to exceed (demand charge), kW"""
    pv_kw: float | None
    base_load_kw: float | None
    """non-EV load the controller assumed, kW"""
    planned_import_kw: float | None
    """import the last allocation planned for, kW"""

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def _num(value: object) -> float | None:
    """A finite float or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _unix_s(iso: object) -> float | None:
    if not isinstance(iso, str):
        return None
    try:
        return datetime.fromisoformat(iso).timestamp()
    except ValueError:
        return None


def point_from_state(state: Mapping[str, Any], now_s: float) -> HistoryPoint:
    """The point of the cycle ``state`` describes (``now_s``, unix s, when it has no cycle time yet)."""
    site = state["site"]
    loop = state["loop"]
    t_s = _unix_s(loop.get("time"))
    limit = _num(site.get("import_limit_kw"))
    return HistoryPoint(
        t_s=now_s if t_s is None else t_s,
        cycle=int(loop.get("cycle") or 0),
        site_import_kw=_num(site.get("site_import_kw")),
        import_limit_kw=math.inf if limit is None else limit,
        peak_import_kw=_num(site.get("peak_import_kw")),
        pv_kw=_num(site.get("pv_kw")),
        base_load_kw=_num(site.get("base_load_kw")),
        planned_import_kw=_num(loop.get("planned_import_kw")),
    )


def point_from_decision(row: Mapping[str, Any]) -> HistoryPoint | None:
    """A point from a stored decision (``Store.decisions``); PV, base load and peak were not stored."""
    t_s = _unix_s(row.get("time"))
    limit = _num(row.get("import_limit_kw"))
    if t_s is None or limit is None:
        return None
    return HistoryPoint(
        t_s=t_s,
        cycle=int(row.get("cycle") or 0),
        site_import_kw=_num(row.get("site_import_kw")),
        import_limit_kw=limit,
        peak_import_kw=None,
        pv_kw=None,
        base_load_kw=None,
        planned_import_kw=_num(row.get("planned_import_kw")),
    )


class History:
    """Points of the last ``window_s`` seconds (oldest first), at most ``max_points``."""

    def __init__(self, window_s: float = 6 * 3600.0, max_points: int = 4320) -> None:
        if window_s <= 0 or max_points < 1:
            raise ValueError("window_s must be > 0 and max_points >= 1")
        self.window_s = window_s
        self._points: deque[HistoryPoint] = deque(maxlen=max_points)

    def __len__(self) -> int:
        return len(self._points)

    def add(self, point: HistoryPoint) -> bool:
        """Append a point; one not newer than the last is ignored (returns False)."""
        if self._points and point.t_s <= self._points[-1].t_s:
            return False
        self._points.append(point)
        while self._points and self._points[0].t_s < point.t_s - self.window_s:
            self._points.popleft()
        return True

    def extend(self, points: Iterable[HistoryPoint]) -> int:
        """Add points in time order; returns how many were kept."""
        return sum(self.add(p) for p in sorted(points, key=lambda p: p.t_s))

    def points(self) -> list[HistoryPoint]:
        return list(self._points)

    def to_json(self) -> list[dict[str, float | int | None]]:
        return [p.to_json() for p in self._points]
