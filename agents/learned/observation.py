"""The observation of a learned policy, built from a :class:`~envs.core.Snapshot` by the env's own code.

:class:`SnapshotObserver` presents a snapshot to :class:`envs.obs.ObservationLayout` (the features the env
computes); a snapshot does not carry the EVs' state of charge, so that feature reads "unknown".
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, cast
from zoneinfo import ZoneInfo

import numpy as np

from envs.core import FloatArray, SiteArrays, SiteState, Snapshot
from envs.obs import F32Array, ObservationLayout
from envs.projection import charger_bounds

if TYPE_CHECKING:
    from envs.sim import BatchSim, Episode


@dataclass(frozen=True)
class ObservationSpec:
    """What fixes the observation besides the site: the forecast horizon and the scales."""

    horizon: int = 16
    price_scale_per_kwh: float = 0.25
    time_scale_h: float = 24.0


def layout_for(site: SiteArrays, spec: ObservationSpec) -> ObservationLayout:
    """The env's observation layout for ``site`` (as :class:`envs.env.ChargingSiteEnv` builds it)."""
    return ObservationLayout.for_site(site, spec.horizon, spec.price_scale_per_kwh, spec.time_scale_h)


def _time_features(timestamp: np.datetime64, timezone: ZoneInfo) -> FloatArray:
    """(1, 4) sin/cos of the site-local time of day and week, as :func:`envs.sim.compile_episode` has them."""
    seconds = int(np.asarray(timestamp).astype("datetime64[us]").astype(np.int64)) / 1e6
    local = datetime.fromtimestamp(seconds, tz=UTC).astimezone(timezone)
    hours = local.hour + local.minute / 60.0 + (local.second + local.microsecond / 1e6) / 3600.0
    week_h = local.weekday() * 24.0 + hours
    tod, tow = 2 * np.pi * hours / 24.0, 2 * np.pi * week_h / 168.0
    return np.array([[np.sin(tod), np.cos(tod), np.sin(tow), np.cos(tow)]])


@dataclass(frozen=True, eq=False)
class _StepWindow:
    """One step as the part of :class:`envs.sim.Episode` that the observation's static block reads."""

    time_features: FloatArray
    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray
    forecast: FloatArray


class _SnapshotView:
    """A one-row view of a snapshot with the attributes :meth:`ObservationLayout.write` reads of a
    :class:`envs.sim.BatchSim`: what the snapshot's state says, nothing delivered yet in its books, and
    the state of charge unknown (a snapshot does not carry it)."""

    batch = 1

    def __init__(self, site: SiteArrays, state: SiteState, peak_kw: float, static: F32Array) -> None:
        present = np.asarray(state.ev_present, dtype=bool)[None, :]
        self.present = present
        self.present_f = present.astype(float)
        self.request_kwh = np.asarray(state.energy_needed_kwh, dtype=float)[None, :]
        self.net_kwh = np.zeros_like(self.request_kwh)
        self.ev_max_charge_kw = np.asarray(state.ev_max_charge_kw, dtype=float)[None, :]
        self.ev_max_discharge_kw = np.asarray(state.ev_max_discharge_kw, dtype=float)[None, :]
        self.v2g = (self.ev_max_discharge_kw > 0).astype(float)
        rate_kw = np.minimum(site.rated_kw, self.ev_max_charge_kw) * site.efficiency
        self.h_per_kwh = np.where(present, 1.0 / np.where(present, rate_kw, 1.0), 0.0)
        self.soc_base = np.where(present, -1.0, 0.0)
        self.inv_battery = np.zeros_like(self.request_kwh)
        self.peak_kw = np.array([peak_kw])
        self.battery_soc_kwh = np.array([float(np.asarray(state.battery_soc_kwh))])
        self._time_left = np.where(present, np.asarray(state.time_left_h, dtype=float)[None, :], 0.0)
        self._static = static

    def time_left_h(self) -> FloatArray:
        return self._time_left

    def energy_needed_kwh(self) -> FloatArray:
        return self.request_kwh

    def soc(self) -> FloatArray:
        return self.soc_base

    def peak_so_far_kw(self) -> FloatArray:
        return self.peak_kw

    def static_obs(self) -> F32Array:
        return self._static


@dataclass(frozen=True, eq=False)
class ChargerRange:
    """A snapshot's state as a batch of one with each charger's feasible range now
    (:func:`envs.projection.charger_bounds`): what an action mode maps its action onto."""

    state: SiteState
    lo_kw: FloatArray
    """(1, n)"""
    hi_kw: FloatArray
    """(1, n)"""

    @classmethod
    def of(cls, site: SiteArrays, snapshot: Snapshot) -> ChargerRange:
        state = snapshot.state.as_batch()
        lo, hi = charger_bounds(site, state)
        return cls(state, np.asarray(lo, dtype=float), np.asarray(hi, dtype=float))


@dataclass(frozen=True, eq=False)
class Observed(ChargerRange):
    """A snapshot as the agent sees it, with the charger range the action needs."""

    obs: F32Array = field(default_factory=lambda: np.zeros(0, dtype=np.float32))
    """(size,) the observation"""


class SnapshotObserver:
    """Builds the env's observation (:class:`envs.obs.ObservationLayout`) from a :class:`Snapshot`."""

    def __init__(self, site: SiteArrays, spec: ObservationSpec) -> None:
        self.site = site
        self.spec = spec
        self.layout = layout_for(site, spec)
        self._timezone = ZoneInfo(site.config.timezone)

    def observe(self, snapshot: Snapshot) -> Observed:
        H = self.layout.horizon
        fc = snapshot.forecast
        if fc.horizon < H + 1:
            raise ValueError(
                f"the snapshot's forecast covers {fc.horizon} steps; this policy needs {H + 1} (now + {H})"
            )
        st = snapshot.state
        window = np.stack(
            [
                np.asarray(fc.base_load_kw, dtype=float)[: H + 1],
                np.asarray(fc.pv_kw, dtype=float)[: H + 1],
                np.asarray(fc.import_price_per_kwh, dtype=float)[: H + 1],
                np.asarray(fc.export_price_per_kwh, dtype=float)[: H + 1],
            ]
        )[None, :, :]
        step = _StepWindow(
            time_features=_time_features(snapshot.timestamp, self._timezone),
            base_load_kw=np.array([float(np.asarray(st.base_load_kw))]),
            pv_kw=np.array([float(np.asarray(st.pv_kw))]),
            import_price_per_kwh=np.array([snapshot.import_price_per_kwh]),
            export_price_per_kwh=np.array([snapshot.export_price_per_kwh]),
            forecast=window,
        )
        static = self.layout.static_block(cast("Episode", step))
        rng = ChargerRange.of(self.site, snapshot)
        out = np.zeros((1, self.layout.size), dtype=np.float32)
        view = _SnapshotView(self.site, st, snapshot.peak_import_kw, static)
        self.layout.write(out, cast("BatchSim", view), rng.state, rng.hi_kw)
        return Observed(rng.state, rng.lo_kw, rng.hi_kw, out[0])
