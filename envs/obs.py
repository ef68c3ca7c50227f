"""The observation of :class:`~envs.env.ChargingSiteEnv`: a flat float32 vector, its layout and scales.

Layout (``n`` chargers, forecast horizon ``H``), in this order:

1. per-charger block, feature-major: ``obs[k * n + i]`` is feature ``k`` of charger ``i``
   (:data:`CHARGER_FEATURES`);
2. site state: the billing-period peak so far, then the stationary battery's SoC (only with a battery);
3. site now: time of day/week, base load, PV, prices, headroom (:data:`SITE_NOW_FEATURES`);
4. forecast, feature-major: ``H`` values each of base load, PV, import price, export price for the steps
   ``t + 1 .. t + H``.

Powers are divided by ``power_scale_kw`` (the site's import limit), prices by ``price_scale_per_kwh``,
durations by ``time_scale_h``; every value is clipped to its documented range, so the observation always
lies inside :meth:`ObservationLayout.space`. See ``docs/environment.md`` for the table with units.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from numba import njit
from numpy.typing import NDArray

from envs.core import FloatArray, SiteArrays, SiteState

if TYPE_CHECKING:
    from gymnasium import spaces

    from envs.sim import BatchSim, Episode

F32Array = NDArray[np.float32]

CHARGER_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("ev_present", 0.0, 1.0),
    ("energy_needed", 0.0, 1.0),
    ("time_to_departure", 0.0, 1.0),
    ("laxity", -1.0, 1.0),
    ("soc", -1.0, 1.0),
    ("max_power_now", 0.0, 1.0),
    ("v2g_allowed", 0.0, 1.0),
)
"""(name, low, high) of each per-charger feature"""

RATIO_BOUND = 4.0
"""powers and prices are clipped to +-4 times their scale"""

SITE_STATE_FEATURES: tuple[tuple[str, float, float], ...] = (("peak_so_far", 0.0, RATIO_BOUND),)
BATTERY_FEATURES: tuple[tuple[str, float, float], ...] = (("battery_soc", 0.0, 1.0),)
SITE_NOW_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("time_of_day_sin", -1.0, 1.0),
    ("time_of_day_cos", -1.0, 1.0),
    ("time_of_week_sin", -1.0, 1.0),
    ("time_of_week_cos", -1.0, 1.0),
    ("base_load", 0.0, RATIO_BOUND),
    ("pv", 0.0, RATIO_BOUND),
    ("import_price", -RATIO_BOUND, RATIO_BOUND),
    ("export_price", -RATIO_BOUND, RATIO_BOUND),
    ("headroom", -RATIO_BOUND, RATIO_BOUND),
)
FORECAST_FEATURES: tuple[tuple[str, float, float], ...] = (
    ("forecast_base_load", 0.0, RATIO_BOUND),
    ("forecast_pv", 0.0, RATIO_BOUND),
    ("forecast_import_price", -RATIO_BOUND, RATIO_BOUND),
    ("forecast_export_price", -RATIO_BOUND, RATIO_BOUND),
)


@dataclass(frozen=True, eq=False)
class ObservationLayout:
    """Where each feature sits in the flat observation, its bounds, and how it is computed.

    ``rated_kw`` and ``efficiency`` are the chargers' (``(n,)``); battery limits in kWh.
    """

    n_chargers: int
    horizon: int
    power_scale_kw: float
    price_scale_per_kwh: float
    time_scale_h: float
    rated_kw: FloatArray
    efficiency: FloatArray
    import_limit_kw: float
    has_battery: bool = False
    battery_soc_min_kwh: float = 0.0
    battery_soc_max_kwh: float = 1.0
    _charger_low32: F32Array = field(init=False, repr=False)
    _charger_high32: F32Array = field(init=False, repr=False)
    _need_scale: FloatArray = field(init=False, repr=False)
    _inv_rated: FloatArray = field(init=False, repr=False)
    _consts: FloatArray = field(init=False, repr=False)

    @classmethod
    def for_site(
        cls, site: SiteArrays, horizon: int, price_scale_per_kwh: float, time_scale_h: float
    ) -> ObservationLayout:
        """The layout the environment uses for ``site`` (and every learned policy that acts on it)."""
        return cls(
            n_chargers=site.n,
            horizon=horizon,
            power_scale_kw=site.import_limit_kw,
            price_scale_per_kwh=price_scale_per_kwh,
            time_scale_h=time_scale_h,
            rated_kw=site.rated_kw,
            efficiency=site.efficiency,
            import_limit_kw=site.import_limit_kw,
            has_battery=site.has_battery,
            battery_soc_min_kwh=site.battery_soc_min_kwh,
            battery_soc_max_kwh=site.battery_soc_max_kwh,
        )

    def __post_init__(self) -> None:
        low = np.array([f[1] for f in CHARGER_FEATURES], dtype=np.float32)[:, None]
        high = np.array([f[2] for f in CHARGER_FEATURES], dtype=np.float32)[:, None]
        object.__setattr__(self, "_charger_low32", low)
        object.__setattr__(self, "_charger_high32", high)
        # energy needed as hours at the charger's full rated power, over the time scale
        object.__setattr__(self, "_need_scale", 1.0 / (self.rated_kw * self.efficiency * self.time_scale_h))
        object.__setattr__(self, "_inv_rated", 1.0 / self.rated_kw)
        span = self.battery_soc_max_kwh - self.battery_soc_min_kwh
        consts = [1.0 / self.time_scale_h, self.power_scale_kw, float(self.has_battery)]
        consts += [self.battery_soc_min_kwh, span if self.has_battery else 1.0]
        object.__setattr__(self, "_consts", np.array(consts, dtype=np.float64))

    # ------------------------------------------------------------------ sizes and slices

    @property
    def charger_size(self) -> int:
        return len(CHARGER_FEATURES) * self.n_chargers

    @property
    def state_size(self) -> int:
        return len(SITE_STATE_FEATURES) + (len(BATTERY_FEATURES) if self.has_battery else 0)

    @property
    def static_size(self) -> int:
        """Size of the block that depends only on the step (site now + forecast), precomputed at reset."""
        return len(SITE_NOW_FEATURES) + len(FORECAST_FEATURES) * self.horizon

    @property
    def size(self) -> int:
        return self.charger_size + self.state_size + self.static_size

    @property
    def static_slice(self) -> slice:
        start = self.charger_size + self.state_size
        return slice(start, start + self.static_size)

    def names(self) -> list[str]:
        """The name of every entry: ``ev_present[3]``, ``peak_so_far``, ``forecast_pv[+2]`` ..."""
        out = [f"{f[0]}[{i}]" for f in CHARGER_FEATURES for i in range(self.n_chargers)]
        out += [f[0] for f in self._site_features()]
        out += [f"{f[0]}[+{h + 1}]" for f in FORECAST_FEATURES for h in range(self.horizon)]
        return out

    def _site_features(self) -> tuple[tuple[str, float, float], ...]:
        battery = BATTERY_FEATURES if self.has_battery else ()
        return SITE_STATE_FEATURES + battery + SITE_NOW_FEATURES

    def bounds(self) -> tuple[F32Array, F32Array]:
        """``(low, high)`` float32 arrays of the observation space."""
        feats = [f for f in CHARGER_FEATURES for _ in range(self.n_chargers)]
        feats += list(self._site_features())
        feats += [f for f in FORECAST_FEATURES for _ in range(self.horizon)]
        low = np.array([f[1] for f in feats], dtype=np.float32)
        high = np.array([f[2] for f in feats], dtype=np.float32)
        return low, high

    def space(self) -> spaces.Box:
        from gymnasium import spaces

        low, high = self.bounds()
        return spaces.Box(low=low, high=high, dtype=np.float32)

    def unflatten(self, obs: NDArray[np.floating]) -> dict[str, NDArray[np.floating]]:
        """Split an observation ``(..., size)`` into named arrays: per-charger features ``(..., n)``,
        forecast features ``(..., H)``, site features ``(...)``."""
        n, H = self.n_chargers, self.horizon
        out: dict[str, NDArray[np.floating]] = {}
        for k, f in enumerate(CHARGER_FEATURES):
            out[f[0]] = obs[..., k * n : (k + 1) * n]
        pos = self.charger_size
        for f in self._site_features():
            out[f[0]] = obs[..., pos]
            pos += 1
        for f in FORECAST_FEATURES:
            out[f[0]] = obs[..., pos : pos + H]
            pos += H
        return out

    # ------------------------------------------------------------------ computing it

    def static_block(self, episode: Episode) -> F32Array:
        """(T + 1, static_size) site-now and forecast features of every step of ``episode``."""
        p, c = self.power_scale_kw, self.price_scale_per_kwh
        headroom = self.import_limit_kw - episode.base_load_kw + episode.pv_kw
        now = np.column_stack(
            [
                episode.time_features,
                episode.base_load_kw / p,
                episode.pv_kw / p,
                episode.import_price_per_kwh / c,
                episode.export_price_per_kwh / c,
                headroom / p,
            ]
        )
        fc = episode.forecast[:, :, 1 : self.horizon + 1]  # steps t+1 .. t+H
        scale = np.array([p, p, c, c])[None, :, None]
        fc = (fc / scale).reshape(len(fc), -1)
        block = np.concatenate([now, fc], axis=1)
        low, high = self.bounds()
        s = self.static_slice
        return np.clip(block, low[s], high[s]).astype(np.float32)

    def write(self, out: F32Array, sim: BatchSim, state: SiteState, hi_kw: FloatArray) -> None:
        """Fill ``out`` ``(B, size)`` with the observation of ``sim``'s current step.

        ``state`` is ``sim.state()``; ``hi_kw`` ``(B, n)`` is the upper bound of each charger's power now
        (:func:`envs.projection.charger_bounds`). One compiled kernel (:func:`_write_obs`) writes it all.
        """
        _write_obs(
            out, sim.present_f, state.energy_needed_kwh, state.time_left_h, sim.h_per_kwh, sim.net_kwh,
            sim.inv_battery, sim.soc_base, hi_kw, sim.v2g, sim.peak_so_far_kw(), sim.battery_soc_kwh,
            sim.static_obs(), self._consts, self._charger_low32, self._charger_high32, self._need_scale,
            self._inv_rated,
        )  # fmt: skip


@njit(cache=True, error_model="numpy")
def _write_obs(
    out: F32Array,
    present_f: FloatArray,
    need: FloatArray,
    left: FloatArray,
    h_per_kwh: FloatArray,
    net: FloatArray,
    inv_battery: FloatArray,
    soc_base: FloatArray,
    hi_kw: FloatArray,
    v2g: FloatArray,
    peak_kw: FloatArray,
    battery_soc_kwh: FloatArray,
    static: F32Array,
    consts: FloatArray,
    low: F32Array,
    high: F32Array,
    need_scale: FloatArray,
    inv_rated: FloatArray,
) -> None:
    """The observation (see :meth:`ObservationLayout.write`). Each feature is computed in float64, rounded
    to float32 and clipped to its float32 bounds (as numpy's ``out=`` float32 ufuncs and ``np.clip``).
    ``consts``: ``1 / time_scale_h``, ``power_scale_kw``, has battery, battery SoC min and span (kWh)."""
    B, n = need.shape
    inv_h = consts[0]
    power_scale = consts[1]
    for b in range(B):
        for i in range(n):
            lax = need[b, i] * h_per_kwh[b, i]
            lax = left[b, i] - lax
            soc = net[b, i] * inv_battery[b, i]
            f0 = np.float32(present_f[b, i])
            f1 = np.float32(need[b, i] * need_scale[i])
            f2 = np.float32(left[b, i] * inv_h)
            f3 = np.float32(lax * inv_h)
            f4 = np.float32(soc + soc_base[b, i])
            f5 = np.float32(hi_kw[b, i] * inv_rated[i])
            f6 = np.float32(v2g[b, i])
            out[b, i] = _clip32(f0, low[0, 0], high[0, 0])
            out[b, n + i] = _clip32(f1, low[1, 0], high[1, 0])
            out[b, 2 * n + i] = _clip32(f2, low[2, 0], high[2, 0])
            out[b, 3 * n + i] = _clip32(f3, low[3, 0], high[3, 0])
            out[b, 4 * n + i] = _clip32(f4, low[4, 0], high[4, 0])
            out[b, 5 * n + i] = _clip32(f5, low[5, 0], high[5, 0])
            out[b, 6 * n + i] = _clip32(f6, low[6, 0], high[6, 0])
        pos = 7 * n
        peak = peak_kw[b] / power_scale
        out[b, pos] = np.float32(peak if (peak <= RATIO_BOUND or peak != peak) else RATIO_BOUND)
        pos += 1
        if consts[2] > 0.0:
            x = (battery_soc_kwh[b] - consts[3]) / consts[4]
            x = x if (x >= 0.0 or x != x) else 0.0
            out[b, pos] = np.float32(x if (x <= 1.0 or x != x) else 1.0)
            pos += 1
        for j in range(static.shape[1]):
            out[b, pos + j] = static[b, j]


@njit(cache=True, error_model="numpy")
def _clip32(v: np.float32, lo: np.float32, hi: np.float32) -> np.float32:
    """``np.minimum(np.maximum(v, lo), hi)`` in float32 (NaN propagates)."""
    v = v if (v >= lo or v != v) else lo
    return v if (v <= hi or v != v) else hi
