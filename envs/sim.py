"""Episode dynamics of a charging site, vectorised over a batch of sites that share one configuration.

:class:`BatchSim` steps ``B`` episodes (compiled by :func:`envs.episode.compile_episode`) at once: it builds
the :class:`~envs.core.SiteState` the projection and the policies act on, applies a projected allocation
(:class:`~envs.projection.ProjectionResult`), keeps the energy books, lets EVs leave and arrive, tracks the
stationary battery and the billing-period peak, and prices the step with :func:`envs.costs.price_rows`.
A step is one call of a compiled kernel (numba, :mod:`envs._sim_kernel`) over preallocated arrays, the same
code for one site (the env) and for a batch (the vector env); there are no Python loops over chargers or
rows. The episode's time discretisation is documented in :mod:`envs.episode`.

Energy books (all kWh on the EV battery side unless named otherwise): charging at ``p > 0`` kW (grid side)
for ``dt`` hours puts ``p * efficiency * dt`` into the EV; discharging at ``p < 0`` takes
``|p| * dt / efficiency`` out of it. The stationary battery follows the same rule with its own efficiency.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np
from numpy.typing import NDArray

from envs._sim_kernel import (
    _FLOWS,
    _O_BDIS,
    _O_DEGR,
    _O_DELIV,
    _O_DEMAND,
    _O_ENERGY,
    _O_EVDIS,
    _O_EXPORT,
    _O_MISS,
    _O_MISSING,
    _O_PEAK0,
    _O_PEAK1,
    _O_REWARD,
    _PARTS,
    _ROW_FLOATS,
    _ROW_INTS,
    _SERIES,
    _SESSION_FLOATS,
    _SLOT_FLOATS,
    _STATE_FLOATS,
    OUTCOME_COUNTS,
    OUTCOME_FLOATS,
    _apply_kernel,
    _start_row,
    _state_kernel,
)
from envs.config import Tariff
from envs.core import BoolArray, FloatArray, IntArray, SiteArrays, SiteState
from envs.costs import StepCost, price_rows, tariff_constants
from envs.episode import N_TIME_FEATURES, Episode, ForecastSource, Int32Array, SessionTable, compile_episode
from envs.projection import ProjectionResult

__all__ = [
    "N_TIME_FEATURES",
    "OUTCOME_COUNTS",
    "OUTCOME_FLOATS",
    "BatchSim",
    "Episode",
    "ForecastSource",
    "SessionTable",
    "StepOutcome",
    "compile_episode",
]

_A = TypeVar("_A", bound=np.ndarray)


def _grown(old: _A, size: int, axis: int, fill: float) -> _A:
    """A copy of ``old`` grown to ``size`` along ``axis``, the new part filled with ``fill``."""
    shape = list(old.shape)
    shape[axis] = size
    new = np.full(shape, fill, dtype=old.dtype)
    new[tuple(slice(0, k) for k in old.shape)] = old
    return new  # type: ignore[return-value]


class StepOutcome:
    """What one step did, per batch element (arrays ``(B,)`` unless named otherwise).

    The projected allocation's arrays are the result's own; the rest are views of the step kernel's
    stacked output (:attr:`table`, rows :data:`OUTCOME_FLOATS`; :attr:`counts`), made on access.
    """

    __slots__ = (
        "battery_kw",
        "charger_kw",
        "counts",
        "feasible",
        "moved_kw",
        "pv_curtailed_kw",
        "site_import_kw",
        "table",
    )

    def __init__(self, result: ProjectionResult, table: FloatArray, counts: IntArray) -> None:
        self.charger_kw: FloatArray = result.charger_kw
        """(B, n) applied charger power after projection, kW"""
        self.battery_kw: FloatArray = result.battery_kw
        self.site_import_kw: FloatArray = result.site_import_kw
        """net grid import over the step, kW (negative = export)"""
        self.pv_curtailed_kw: FloatArray = result.pv_curtailed_kw
        self.moved_kw: FloatArray = result.moved_kw
        self.feasible: BoolArray = result.feasible
        self.table = table
        """(len(OUTCOME_FLOATS), B) the float outcomes, stacked"""
        self.counts = counts
        """(len(OUTCOME_COUNTS), B) the integer outcomes, stacked"""

    @property
    def cost(self) -> StepCost:
        """the step's cost parts (currency)"""
        t = self.table
        return StepCost(t[_O_ENERGY], t[_O_EXPORT], t[_O_DEMAND], t[_O_MISSING], t[_O_DEGR])

    @property
    def reward(self) -> FloatArray:
        """minus the step's total cost"""
        return self.table[_O_REWARD]

    @property
    def delivered_kwh(self) -> FloatArray:
        """energy into EV batteries this step"""
        return self.table[_O_DELIV]

    @property
    def ev_discharged_kwh(self) -> FloatArray:
        """energy out of EV batteries (V2G) this step"""
        return self.table[_O_EVDIS]

    @property
    def battery_discharged_kwh(self) -> FloatArray:
        """energy out of the stationary battery this step"""
        return self.table[_O_BDIS]

    @property
    def missing_kwh(self) -> FloatArray:
        """energy EVs still missed when they left at the end of this step"""
        return self.table[_O_MISS]

    @property
    def departures(self) -> IntArray:
        return self.counts[0]

    @property
    def arrivals(self) -> IntArray:
        return self.counts[1]

    @property
    def peak_before_kw(self) -> FloatArray:
        return self.table[_O_PEAK0]

    @property
    def peak_import_kw(self) -> FloatArray:
        """billing-period peak import after this step"""
        return self.table[_O_PEAK1]

    @property
    def terminated(self) -> BoolArray:
        """the row's episode ended with this step (a new array on each access)"""
        return self.counts[2] != 0


# --------------------------------------------------------------------------- the simulator


class BatchSim:
    """``B`` episodes of one site stepped together.

    Load an episode into row ``b`` with :meth:`load`, read the current :meth:`state`, project a request on
    it, and :meth:`apply` the (batched) result. Rows advance independently (each has its own step counter
    and length), so a vector environment can reset rows as their episodes end. The step itself
    (:meth:`apply`, :meth:`state`) runs in compiled kernels (numba) over preallocated arrays: one
    implementation for one site and for a batch.

    ``static_obs_size`` reserves a per-step float32 block for each row (filled by :meth:`load`), which an
    observation builder precomputes at reset; the simulator only stores and gathers it.
    """

    # per-slot EV state, (B, n); 0 where no EV is plugged in (views of one stacked array, _slot_floats)
    present: BoolArray
    session: IntArray
    """local session number in the row's episode, -1 where empty"""
    request_kwh: FloatArray
    """energy the EV must receive in the window (its request, pro-rated for early arrivals)"""
    room0_kwh: FloatArray
    dischargeable0_kwh: FloatArray
    net_kwh: FloatArray
    """net energy into the EV since it entered the window, kWh (battery side)"""
    ev_max_charge_kw: FloatArray
    ev_max_discharge_kw: FloatArray
    v2g: FloatArray
    """1.0 where V2G is allowed for the session"""
    priority: FloatArray
    departure_h: FloatArray
    """departure time, hours after the window start"""
    present_f: FloatArray
    h_per_kwh: FloatArray
    """hours per kWh into the battery at the EV's full rate (min of charger and EV limits)"""
    soc_base: FloatArray
    """SoC on entering the window where known, -1 where unknown (0 where empty)"""
    inv_battery: FloatArray
    """1 / battery kWh where known, else 0"""
    # per-row site state (B,) (views of _row_floats / _row_ints, updated in place)
    peak_kw: FloatArray
    """billing-period peak import after the last step, kW"""
    battery_soc_kwh: FloatArray
    battery_kw_last: FloatArray
    delivered_total_kwh: FloatArray
    missing_total_kwh: FloatArray
    ev_discharged_total_kwh: FloatArray
    cost_total: FloatArray
    _peak_now: FloatArray
    t: IntArray
    """step of each row's episode"""
    n_steps: IntArray
    start_step: IntArray
    _base: FloatArray
    _pv: FloatArray
    _price_in: FloatArray
    _price_out: FloatArray

    def __init__(self, site: SiteArrays, batch: int, dt_h: float, static_obs_size: int = 0) -> None:
        if batch < 1:
            raise ValueError("batch must be >= 1")
        self.site = site
        self.batch = batch
        self.dt_h = float(dt_h)
        self.tariff: Tariff = site.config.tariff
        self.static_obs_size = static_obs_size
        B, n = batch, site.n
        self._site_c = np.ascontiguousarray(
            np.stack(
                [site.efficiency * self.dt_h, self.dt_h / site.efficiency, site.rated_kw, site.efficiency]
            ),
            dtype=np.float64,
        )
        eff_b = site.battery_efficiency
        self._battery_c = np.array([float(site.has_battery), self.dt_h / eff_b, eff_b * self.dt_h])
        self._tariff_c = tariff_constants(self.tariff)
        self.present = np.zeros((B, n), dtype=bool)
        self.session = np.full((B, n), -1, dtype=np.int64)
        # the per-slot floats are views of one stacked array, so that a departure clears them in one write
        self._slot_floats = np.zeros((len(_SLOT_FLOATS), B, n))
        for k, name in enumerate(_SLOT_FLOATS):
            setattr(self, name, self._slot_floats[k])
        self._row_floats = np.zeros((len(_ROW_FLOATS), B))
        for k, name in enumerate(_ROW_FLOATS):
            setattr(self, name, self._row_floats[k])
        self.battery_soc_kwh[:] = site.battery_initial_kwh
        self._row_ints = np.zeros((len(_ROW_INTS), B), dtype=np.int64)
        for k, name in enumerate(_ROW_INTS):
            setattr(self, name, self._row_ints[k])
        self.n_steps[:] = 1
        self._scratch = np.zeros((3, n))
        # stacked per-step episode arrays (B, T + 1, ...) and session tables (B, S), grown on demand
        self._t_cap = 0
        self._s_cap = 0
        self._series = np.zeros((len(_SERIES), B, 0))
        self._new_period = np.zeros((B, 0), dtype=bool)
        self._slot: Int32Array = np.zeros((B, 0, n), dtype=np.int32)
        self._static_obs: NDArray[np.float32] = np.zeros((B, 0, static_obs_size), dtype=np.float32)
        self._static_now: NDArray[np.float32] = np.zeros((B, static_obs_size), dtype=np.float32)
        self._s_floats = np.zeros((len(_SESSION_FLOATS), B, 0))
        self._s_dep = np.zeros((B, 0), dtype=np.int64)
        self._reserve(2, 1)

    # ------------------------------------------------------------------ storage

    def _reserve(self, t_cap: int, s_cap: int) -> None:
        """Grow the stacked arrays to hold ``t_cap`` steps and ``s_cap`` sessions per row."""
        if t_cap > self._t_cap:
            self._series = _grown(self._series, t_cap, 2, 0.0)
            for k, name in enumerate(_SERIES):
                setattr(self, name, self._series[k])
            self._new_period = _grown(self._new_period, t_cap, 1, False)
            self._slot = _grown(self._slot, t_cap, 1, -1)
            self._static_obs = _grown(self._static_obs, t_cap, 1, 0.0)
            self._t_cap = t_cap
            self._row_base = np.arange(self.batch) * t_cap
        if s_cap > self._s_cap:
            self._s_floats = _grown(self._s_floats, s_cap, 2, 0.0)
            self._s_dep = _grown(self._s_dep, s_cap, 1, 0)
            self._s_cap = s_cap

    def load(self, b: int, episode: Episode, static_obs: NDArray[np.float32] | None = None) -> None:
        """Start ``episode`` in row ``b``: step 0, empty slots, then the arrivals of step 0."""
        if abs(episode.dt_h - self.dt_h) > 1e-12:
            raise ValueError(f"episode step {episode.dt_h} h differs from the simulator's {self.dt_h} h")
        T = episode.n_steps
        st = episode.sessions
        self._reserve(T + 1, max(st.size, 1))
        self._base[b, : T + 1] = episode.base_load_kw
        self._pv[b, : T + 1] = episode.pv_kw
        self._price_in[b, : T + 1] = episode.import_price_per_kwh
        self._price_out[b, : T + 1] = episode.export_price_per_kwh
        self._new_period[b, : T + 1] = episode.new_period
        self._slot[b, : T + 1] = episode.slot_session
        if self.static_obs_size:
            if static_obs is None or static_obs.shape != (T + 1, self.static_obs_size):
                raise ValueError("static_obs must be (n_steps + 1, static_obs_size)")
            self._static_obs[b, : T + 1] = static_obs
        S = st.size
        table = (
            st.request_kwh,
            st.room_kwh,
            st.dischargeable_kwh,
            st.max_charge_kw,
            st.max_discharge_kw,
            st.battery_kwh,
            st.start_soc,
            st.priority,
        )
        for k, column in enumerate(table):
            self._s_floats[k, b, :S] = column
        self._s_dep[b, :S] = st.departure_step
        self.t[b] = 0
        self.n_steps[b] = T
        self.start_step[b] = episode.start_step
        self._row_floats[:, b] = 0.0
        self.battery_soc_kwh[b] = self.site.battery_initial_kwh
        _start_row(
            b,
            self._slot_floats,
            self.present,
            self.session,
            self._slot,
            self._s_floats,
            self._s_dep,
            self._site_c[2],
            self._site_c[3],
            self.dt_h,
            self._row_floats,
            self._new_period,
            self._static_obs,
            self._static_now,
        )

    # ------------------------------------------------------------------ views of the current step

    def energy_needed_kwh(self) -> FloatArray:
        """(B, n) energy still to deliver before departure, kWh (0 where no EV)."""
        return self.state().energy_needed_kwh

    def time_left_h(self) -> FloatArray:
        """(B, n) hours to departure (0 where no EV)."""
        return self.state().time_left_h

    def soc(self) -> FloatArray:
        """(B, n) EV state of charge where the battery is known, -1 where unknown, 0 where no EV."""
        return self.soc_base + self.net_kwh * self.inv_battery

    def _at(self, t: IntArray) -> IntArray:
        """Flat indices of step ``t[b]`` of each row in the stacked ``(B, T_cap, ...)`` arrays (a ``take``
        with them is the gather ``a[rows, t]`` at a fraction of its cost)."""
        return self._row_base + t

    def base_load_kw(self) -> FloatArray:
        return self._base.take(self._at(self.t))

    def pv_kw(self) -> FloatArray:
        return self._pv.take(self._at(self.t))

    def import_price_per_kwh(self) -> FloatArray:
        return self._price_in.take(self._at(self.t))

    def export_price_per_kwh(self) -> FloatArray:
        return self._price_out.take(self._at(self.t))

    def peak_so_far_kw(self) -> FloatArray:
        """(B,) billing-period peak import before the current step (0 when the step opens a new period)."""
        return self._peak_now.copy()

    def static_obs(self) -> NDArray[np.float32]:
        """(B, static_obs_size) the precomputed observation block of the current step: the simulator's
        buffer (read-only by convention), valid until the next :meth:`apply` or :meth:`load`."""
        return self._static_now

    def state(self) -> SiteState:
        """The batched :class:`SiteState` of the current step (arrays ``(B, n)``, site values ``(B,)``).

        Its arrays are fresh: they do not change when the simulator steps on.
        """
        B, n = self.batch, self.site.n
        out_f = np.empty((_STATE_FLOATS, B, n))
        present = np.empty((B, n), dtype=bool)
        site = np.empty((3, B))
        _state_kernel(
            self._slot_floats, self.present, self._row_ints, self._row_floats, self._series, self.dt_h,
            out_f, present, site,
        )  # fmt: skip
        f = out_f
        return SiteState.from_arrays(
            present, f[0], f[1], f[2], f[3], f[4], f[5], site[0], site[1], site[2], self.dt_h, f[6]
        )

    # ------------------------------------------------------------------ the step

    def apply(self, result: ProjectionResult) -> StepOutcome:
        """Hold the projected allocation (batched: ``(B, n)``, ``(B,)``) for one step, then advance every
        row by one step. Rows already at their end must be reloaded first (a :class:`ValueError` otherwise).
        """
        B = self.batch
        p = result.charger_kw
        pb = result.battery_kw
        site_import = result.site_import_kw
        if p.shape != (B, self.site.n) or np.shape(pb) != (B,) or np.shape(site_import) != (B,):
            raise ValueError("apply() needs a batched projection result: (B, n) and (B,) arrays")
        vals = np.empty((len(OUTCOME_FLOATS), B))
        counts = np.empty((len(OUTCOME_COUNTS), B), dtype=np.int64)
        ok = _apply_kernel(
            p, pb, site_import, self._slot_floats, self.present, self.session, self._site_c,
            self._battery_c, self.dt_h, self._row_floats, self._row_ints, self._slot,
            self._s_floats, self._s_dep, self._series, self._new_period, self._static_obs,
            self._static_now, vals, counts, self._scratch,
        )  # fmt: skip
        if not ok:
            raise ValueError("a row is past its episode end; load a new episode first")
        price_rows(vals[_FLOWS], self.dt_h, self._tariff_c, vals[_PARTS], vals[_O_REWARD], self.cost_total)
        return StepOutcome(result, vals, counts)
