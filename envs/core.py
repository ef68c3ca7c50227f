"""The pure, vectorised numpy core shared by the environment, every allocator and the live service.

:class:`SiteArrays` is a site configuration compiled once into arrays; :class:`SiteState` is a frozen
snapshot of one instant (which chargers hold an EV, what each EV can take or give, base load, PV, the
stationary battery). Arrays are shaped ``(n,)`` for one site or ``(B, n)`` for a batch of ``B`` states of
the same site; site scalars are ``()`` or ``(B,)``. The safety projection (:mod:`envs.projection`) and the
cost model (:mod:`envs.costs`) work on these.

Sign convention everywhere: charger and battery power in kW at the grid side, positive = charging
(drawing from the site), negative = discharging (V2G, battery discharge). Site import is positive.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from envs.config import PHASES, SiteConfig

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


@dataclass(frozen=True, eq=False)
class SiteArrays:
    """A :class:`~envs.config.SiteConfig` compiled into arrays (build with :meth:`from_config`).

    Chargers are indexed ``0..n-1`` in configuration order, nodes ``0..m-1`` in configuration order.
    """

    config: SiteConfig
    charger_ids: tuple[str, ...]
    node_ids: tuple[str, ...]
    rated_kw: FloatArray
    """(n,) maximum charging power of each charger, kW."""
    min_kw: FloatArray
    """(n,) power at the minimum pilot current, kW (a charger is off or at least this)."""
    max_discharge_kw: FloatArray
    """(n,) maximum discharge power, kW (0 where not bidirectional)."""
    bidirectional: BoolArray
    efficiency: FloatArray
    """(n,) grid-to-battery efficiency (the same both ways)."""
    kw_per_a: FloatArray
    """(n,) kW per ampere of per-phase current (phases * voltage / 1000)."""
    resolution_kw: FloatArray
    """(n,) granularity of the limits a charger accepts, in kW (resolution_a * kw_per_a)."""
    phase_a_per_kw: FloatArray
    """(n, 3) current in A on phases L1..L3 per kW the charger draws."""
    node_parent: IntArray
    """(m,) index of each node's parent, -1 for a root."""
    node_limit_kw: FloatArray
    """(m,) kW limit of each node (both directions)."""
    node_limit_a: FloatArray
    """(m,) per-phase current limit of each node, A (inf where none)."""
    membership: FloatArray
    """(n, m) 1.0 where charger i sits below (or on) node j, else 0."""
    node_depth: IntArray
    """(m,) depth of each node, 0 for a root."""
    import_limit_kw: float
    export_limit_kw: float
    has_battery: bool
    battery_capacity_kwh: float
    battery_max_charge_kw: float
    battery_max_discharge_kw: float
    battery_soc_min_kwh: float
    battery_soc_max_kwh: float
    battery_initial_kwh: float
    battery_efficiency: float
    phase_index: IntArray = field(repr=False)
    """(n,) phase index 0..2 of single-phase chargers, -1 for three-phase ones."""

    @property
    def n(self) -> int:
        return len(self.charger_ids)

    @property
    def m(self) -> int:
        return len(self.node_ids)

    @classmethod
    def from_config(cls, site: SiteConfig) -> SiteArrays:
        n = site.n_chargers
        node_ids = tuple(nd.id for nd in site.nodes)
        node_pos = {nid: j for j, nid in enumerate(node_ids)}
        m = len(node_ids)
        node_parent = np.array(
            [-1 if nd.parent is None else node_pos[nd.parent] for nd in site.nodes], dtype=np.int64
        )
        depth = np.zeros(m, dtype=np.int64)
        for j in range(m):
            k, d = j, 0
            while node_parent[k] >= 0:
                k, d = int(node_parent[k]), d + 1
            depth[j] = d
        membership = np.zeros((n, m))
        phase_a_per_kw = np.zeros((n, 3))
        phase_index = np.full(n, -1, dtype=np.int64)
        for i, c in enumerate(site.chargers):
            for nid in site.ancestors(c.node):
                membership[i, node_pos[nid]] = 1.0
            amps_per_kw = 1000.0 / (c.phases * c.voltage_v)
            if c.phases == 3:
                phase_a_per_kw[i, :] = amps_per_kw
            else:
                assert c.phase is not None
                p = PHASES.index(c.phase)
                phase_a_per_kw[i, p] = amps_per_kw
                phase_index[i] = p
        kw_per_a = np.array([c.kw_per_a for c in site.chargers])
        resolution_kw = np.array(
            [c.resolution_a * c.kw_per_a if c.rate_unit == "A" else 0.001 for c in site.chargers]
        )
        b = site.battery
        return cls(
            config=site,
            charger_ids=site.charger_ids,
            node_ids=node_ids,
            rated_kw=np.array([c.rated_power_kw for c in site.chargers]),
            min_kw=np.array([c.min_power_kw for c in site.chargers]),
            max_discharge_kw=np.array(
                [c.max_discharge_kw if c.bidirectional else 0.0 for c in site.chargers]
            ),
            bidirectional=np.array([c.bidirectional for c in site.chargers]),
            efficiency=np.array([c.efficiency for c in site.chargers]),
            kw_per_a=kw_per_a,
            resolution_kw=resolution_kw,
            phase_a_per_kw=phase_a_per_kw,
            node_parent=node_parent,
            node_limit_kw=np.array([nd.max_power_kw for nd in site.nodes]),
            node_limit_a=np.array(
                [np.inf if nd.max_current_a is None else nd.max_current_a for nd in site.nodes]
            ),
            membership=membership,
            node_depth=depth,
            import_limit_kw=site.grid.import_limit_kw,
            export_limit_kw=site.grid.export_limit_kw,
            has_battery=b is not None,
            battery_capacity_kwh=b.capacity_kwh if b else 0.0,
            battery_max_charge_kw=b.max_charge_kw if b else 0.0,
            battery_max_discharge_kw=b.max_discharge_kw if b else 0.0,
            battery_soc_min_kwh=b.soc_min * b.capacity_kwh if b else 0.0,
            battery_soc_max_kwh=b.soc_max * b.capacity_kwh if b else 0.0,
            battery_initial_kwh=b.initial_soc * b.capacity_kwh if b else 0.0,
            battery_efficiency=b.efficiency if b else 1.0,
            phase_index=phase_index,
        )

    # ------------------------------------------------------------------ aggregate flows

    def node_power_kw(self, charger_kw: FloatArray) -> FloatArray:
        """Net kW through each node: ``(..., n) -> (..., m)``."""
        return np.asarray(charger_kw @ self.membership)

    def node_phase_current_a(self, charger_kw: FloatArray) -> FloatArray:
        """Net current per node and phase, A: ``(..., n) -> (..., m, 3)``."""
        per_phase = charger_kw[..., :, None] * self.phase_a_per_kw  # (..., n, 3)
        return np.einsum("...np,nm->...mp", per_phase, self.membership)

    def site_import_kw(
        self,
        charger_kw: FloatArray,
        base_load_kw: FloatArray | float,
        pv_kw: FloatArray | float,
        battery_kw: FloatArray | float = 0.0,
    ) -> FloatArray:
        """Net grid import (negative = export): base + chargers + battery - PV."""
        return np.asarray(np.sum(charger_kw, axis=-1) + base_load_kw + battery_kw - pv_kw)


@dataclass(frozen=True, eq=False)
class SiteState:
    """A frozen snapshot of the site at one instant: what the projection and every policy act on.

    Per-charger arrays are ``(n,)`` or ``(B, n)``; site values are scalars or ``(B,)``. Energies are on
    the EV battery side (after charging losses).
    """

    ev_present: BoolArray
    """an EV is plugged in"""
    ev_max_charge_kw: FloatArray
    """the EV's own charging limit, kW (inf where unknown; the charger's rating still applies)"""
    ev_max_discharge_kw: FloatArray
    """the EV's discharge limit, kW (0 where V2G is not allowed for this session)"""
    energy_needed_kwh: FloatArray
    """energy still to deliver before departure, kWh (>= 0): what the driver declared minus what was
    delivered so far (the simulator scores the actual need, which a policy does not see)"""
    energy_room_kwh: FloatArray
    """energy the EV can still take before it is full, kWh (equal to the need where the battery is unknown)"""
    energy_dischargeable_kwh: FloatArray
    """energy above the EV's SoC floor, kWh (0 where V2G is not allowed)"""
    time_left_h: FloatArray
    """hours to the declared departure (0 where no EV); an EV still plugged in after it is shown as leaving
    at the end of the part of this step it is present (``dt * present_fraction``)"""
    base_load_kw: FloatArray | float
    pv_kw: FloatArray | float
    """PV generation available now, kW (before any curtailment)"""
    battery_soc_kwh: FloatArray | float = 0.0
    """stationary battery energy now, kWh (ignored without a battery)"""
    dt_h: float = 0.25
    """length of the step the allocation holds for, h"""
    priority: FloatArray | None = None
    """session priority (higher first), used by priority allocators; None = all equal"""
    present_fraction: FloatArray | None = None
    """fraction of this step the EV is plugged in, in (0, 1] where present (it arrives or leaves
    mid-step): it draws at most this fraction of its rate on average over the step; None = 1"""

    @property
    def batch_shape(self) -> tuple[int, ...]:
        return tuple(self.ev_present.shape[:-1])

    @classmethod
    def from_arrays(
        cls,
        ev_present: BoolArray,
        ev_max_charge_kw: FloatArray,
        ev_max_discharge_kw: FloatArray,
        energy_needed_kwh: FloatArray,
        energy_room_kwh: FloatArray,
        energy_dischargeable_kwh: FloatArray,
        time_left_h: FloatArray,
        base_load_kw: FloatArray | float,
        pv_kw: FloatArray | float,
        battery_soc_kwh: FloatArray | float,
        dt_h: float,
        priority: FloatArray | None,
        present_fraction: FloatArray | None = None,
    ) -> SiteState:
        """The state the constructor makes, for a caller that builds one every step (the simulator):
        every field given, set in one dictionary update instead of the frozen dataclass's setattr per
        field (about a third of the cost). The class has no ``__post_init__``; keep it that way or call
        the constructor here."""
        state = object.__new__(cls)
        state.__dict__.update(
            ev_present=ev_present,
            ev_max_charge_kw=ev_max_charge_kw,
            ev_max_discharge_kw=ev_max_discharge_kw,
            energy_needed_kwh=energy_needed_kwh,
            energy_room_kwh=energy_room_kwh,
            energy_dischargeable_kwh=energy_dischargeable_kwh,
            time_left_h=time_left_h,
            base_load_kw=base_load_kw,
            pv_kw=pv_kw,
            battery_soc_kwh=battery_soc_kwh,
            dt_h=dt_h,
            priority=priority,
            present_fraction=present_fraction,
        )
        return state

    def _map(self, per_charger: Callable[[Any], Any], site_value: Callable[[Any], Any]) -> SiteState:
        """A state with every per-charger array and every site value mapped (``dt_h`` kept)."""
        changes: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "dt_h" or value is None:
                continue
            site = f.name in ("base_load_kw", "pv_kw", "battery_soc_kwh")
            changes[f.name] = site_value(value) if site else per_charger(value)
        return replace(self, **changes)

    def row(self, b: int = 0) -> SiteState:
        """Row ``b`` of a batched state as an independent unbatched copy (site values as floats)."""

        def take(x: Any) -> Any:
            return np.array(np.asarray(x)[b]) if np.ndim(x) >= 1 else x

        return self._map(take, lambda x: float(take(x)))

    def as_batch(self) -> SiteState:
        """An unbatched state as a one-row batch ``(1, n)`` (site values ``(1,)``)."""

        def one(x: Any) -> Any:
            return np.asarray(x)[None, ...]

        return self._map(one, one)

    @classmethod
    def empty(cls, n: int, base_load_kw: float = 0.0, pv_kw: float = 0.0, dt_h: float = 0.25) -> SiteState:
        z = np.zeros(n)
        return cls(
            ev_present=np.zeros(n, dtype=bool),
            ev_max_charge_kw=z.copy(),
            ev_max_discharge_kw=z.copy(),
            energy_needed_kwh=z.copy(),
            energy_room_kwh=z.copy(),
            energy_dischargeable_kwh=z.copy(),
            time_left_h=z.copy(),
            base_load_kw=base_load_kw,
            pv_kw=pv_kw,
            dt_h=dt_h,
        )


@dataclass(frozen=True, eq=False)
class ForecastWindow:
    """Forecast of the next ``H`` steps, the current step first: arrays ``(H,)`` (or ``(B, H)``)."""

    base_load_kw: FloatArray
    pv_kw: FloatArray
    import_price_per_kwh: FloatArray
    export_price_per_kwh: FloatArray

    @property
    def horizon(self) -> int:
        return int(self.base_load_kw.shape[-1])


@dataclass(frozen=True, eq=False)
class Snapshot:
    """What every policy acts on: the physical state plus time, prices, forecast and the peak so far.

    Produced alike by the environment (simulation) and the live service (serving), so that a policy
    cannot tell them apart. Single-site (unbatched) by design: batched training goes through the env.
    """

    state: SiteState
    timestamp: np.datetime64
    """start of the step, UTC"""
    step_index: int
    """index of the step in the scenario (simulation) or since start (live)"""
    import_price_per_kwh: float
    export_price_per_kwh: float
    forecast: ForecastWindow
    peak_import_kw: float
    """billing-period peak import so far, kW"""
    battery_kw_last: float = 0.0
