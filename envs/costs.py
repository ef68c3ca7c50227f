"""The one cost model, shared by the environment's reward, evaluation, MPC and the optimum.

Per step: energy import cost minus export revenue, the increase of the billing-period peak import times
the demand charge, a penalty per kWh an EV still misses when it leaves, and degradation per kWh
discharged from EVs (V2G) and the stationary battery. The formulas live in one compiled function,
:func:`cost_terms`; :func:`price_rows` applies it to a batch of steps (the simulator's step prices its
rows with it) and :func:`step_cost` to broadcast arguments. The parts sum to the total.

The simulator calls :func:`price_rows` from Python, not from its own compiled kernel: numba's cache
checks only the file a function is defined in, so a kernel in another file that called into this one
would keep a stale copy of these formulas after an edit here.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from numba import njit

from envs.config import Tariff
from envs.core import FloatArray


@dataclass(frozen=True)
class StepCost:
    """Cost of one step (currency), each part scalar or ``(B,)``. ``total`` is their signed sum."""

    energy: FloatArray | float
    """import energy times the import price"""
    export_revenue: FloatArray | float
    """export energy times the export price (subtracted in the total)"""
    demand_charge: FloatArray | float
    """increase of the billing-period peak import, kW, times the demand charge per kW"""
    missing_energy: FloatArray | float
    """kWh still missing at departures this step times the penalty"""
    degradation: FloatArray | float
    """kWh discharged from EVs and the battery times their degradation cost"""

    @property
    def total(self) -> FloatArray | float:
        # the same sum, in the same order, as price_rows() (the simulator's reward)
        return self.energy - self.export_revenue + self.demand_charge + self.missing_energy + self.degradation

    def as_dict(self) -> dict[str, float]:
        """Parts as signed contributions to the total (export revenue negative); they sum to ``total``."""
        out = {f.name: float(np.sum(getattr(self, f.name))) for f in fields(self)}
        out["export_revenue"] = -out["export_revenue"]
        return out


def tariff_constants(tariff: Tariff) -> FloatArray:
    """``(4,)`` the tariff's per-unit costs in the order :func:`cost_terms` reads them: demand charge per
    kW, missing-energy penalty per kWh, EV and battery degradation per kWh discharged."""
    return np.array(
        [
            tariff.demand_charge_per_kw,
            tariff.missing_energy_penalty_per_kwh,
            tariff.ev_degradation_per_kwh,
            tariff.battery_degradation_per_kwh,
        ],
        dtype=np.float64,
    )


@njit(cache=True, error_model="numpy")
def cost_terms(
    site_import_kw: float,
    import_price_per_kwh: float,
    export_price_per_kwh: float,
    peak_before_kw: float,
    dt_h: float,
    ev_discharged_kwh: float,
    battery_discharged_kwh: float,
    missing_kwh: float,
    tariff_c: FloatArray,
) -> tuple[float, float, float, float, float]:
    """The parts of one site's step cost: ``(energy, export_revenue, demand_charge, missing_energy,
    degradation)``, currency. ``tariff_c``: :func:`tariff_constants`. Maxima propagate NaN like
    ``np.maximum``."""
    x = site_import_kw
    imp = x if (x >= 0.0 or x != x) else 0.0
    neg = -x
    exp = neg if (neg >= 0.0 or neg != neg) else 0.0
    inc = imp - peak_before_kw
    inc = inc if (inc >= 0.0 or inc != inc) else 0.0
    return (
        imp * dt_h * import_price_per_kwh,
        exp * dt_h * export_price_per_kwh,
        inc * tariff_c[0],
        missing_kwh * tariff_c[1],
        ev_discharged_kwh * tariff_c[2] + battery_discharged_kwh * tariff_c[3],
    )


FLOW_ROWS = (
    "site_import_kw",
    "import_price_per_kwh",
    "export_price_per_kwh",
    "peak_before_kw",
    "ev_discharged_kwh",
    "battery_discharged_kwh",
    "missing_kwh",
)
"""rows of the ``flows`` input of :func:`price_rows`"""
PART_ROWS = ("energy", "export_revenue", "demand_charge", "missing_energy", "degradation")
"""rows of the ``parts`` output of :func:`price_rows` (the fields of :class:`StepCost`)"""


@njit(cache=True, error_model="numpy")
def price_rows(
    flows: FloatArray,
    dt_h: float,
    tariff_c: FloatArray,
    parts: FloatArray,
    reward: FloatArray,
    cost_acc: FloatArray,
) -> None:
    """Price ``K`` steps at once: ``flows`` ``(7, K)`` (rows :data:`FLOW_ROWS`) -> ``parts`` ``(5, K)``
    (rows :data:`PART_ROWS`), ``reward[k]`` = minus the total, and ``cost_acc[k]`` += the total.
    The simulator's step calls this for its rows, :func:`step_cost` for its arguments."""
    for k in range(flows.shape[1]):
        p = cost_terms(
            flows[0, k], flows[1, k], flows[2, k], flows[3, k], dt_h, flows[4, k], flows[5, k], flows[6, k],
            tariff_c,
        )  # fmt: skip
        total = p[0] - p[1] + p[2] + p[3] + p[4]  # the order of StepCost.total
        for j in range(5):
            parts[j, k] = p[j]
        reward[k] = -total
        cost_acc[k] += total


def step_cost(
    tariff: Tariff,
    site_import_kw: FloatArray | float,
    import_price_per_kwh: FloatArray | float,
    export_price_per_kwh: FloatArray | float,
    peak_before_kw: FloatArray | float,
    dt_h: float,
    ev_discharged_kwh: FloatArray | float = 0.0,
    battery_discharged_kwh: FloatArray | float = 0.0,
    missing_kwh: FloatArray | float = 0.0,
) -> StepCost:
    """Cost of holding ``site_import_kw`` for ``dt_h`` hours (arguments broadcast together).

    ``peak_before_kw`` is the billing-period peak import before this step; the demand charge accrues on
    its increase, so the sum over a period equals the period's peak times the charge.
    """
    inputs = np.broadcast_arrays(
        *(
            np.asarray(v, dtype=np.float64)
            for v in (
                site_import_kw,
                import_price_per_kwh,
                export_price_per_kwh,
                peak_before_kw,
                ev_discharged_kwh,
                battery_discharged_kwh,
                missing_kwh,
            )
        )
    )
    shape = inputs[0].shape
    flows = np.stack([v.ravel() for v in inputs])
    K = flows.shape[1]
    parts = np.empty((5, K))
    price_rows(flows, float(dt_h), tariff_constants(tariff), parts, np.empty(K), np.zeros(K))
    return StepCost(*[parts[j].reshape(shape)[()] for j in range(5)])


def billing_period_ids(timestamps: object, period: str) -> np.ndarray:
    """An integer id per timestamp for its billing period ('month' or the whole 'episode')."""
    import pandas as pd

    idx = pd.DatetimeIndex(timestamps)  # type: ignore[arg-type]
    if period == "episode":
        return np.zeros(len(idx), dtype=np.int64)
    return np.asarray(idx.year * 12 + idx.month, dtype=np.int64)
