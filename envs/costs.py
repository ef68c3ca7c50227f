"""The one cost model, shared by the environment's reward, evaluation, MPC and the optimum.

Per step: energy import cost minus export revenue, the increase of the billing-period peak import times
the demand charge, a penalty per kWh an EV still misses when it leaves, and degradation per kWh
discharged from EVs (V2G) and the stationary battery. All functions are vectorised over a leading batch
dimension; the parts sum to the total.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

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
        return self.energy - self.export_revenue + self.demand_charge + self.missing_energy + self.degradation

    def as_dict(self) -> dict[str, float]:
        """Parts as signed contributions to the total (export revenue negative); they sum to ``total``."""
        out = {f.name: float(np.sum(getattr(self, f.name))) for f in fields(self)}
        out["export_revenue"] = -out["export_revenue"]
        return out


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
    """Cost of holding ``site_import_kw`` for ``dt_h`` hours.

    ``peak_before_kw`` is the billing-period peak import before this step; the demand charge accrues on
    its increase, so the sum over a period equals the period's peak times the charge.
    """
    imp = np.maximum(site_import_kw, 0.0)
    exp = np.maximum(-np.asarray(site_import_kw), 0.0)
    peak_increase = np.maximum(imp - peak_before_kw, 0.0)
    return StepCost(
        energy=imp * dt_h * import_price_per_kwh,
        export_revenue=exp * dt_h * export_price_per_kwh,
        demand_charge=peak_increase * tariff.demand_charge_per_kw,
        missing_energy=np.asarray(missing_kwh) * tariff.missing_energy_penalty_per_kwh,
        degradation=np.asarray(ev_discharged_kwh) * tariff.ev_degradation_per_kwh
        + np.asarray(battery_discharged_kwh) * tariff.battery_degradation_per_kwh,
    )


def billing_period_ids(timestamps: object, period: str) -> np.ndarray:
    """An integer id per timestamp for its billing period ('month' or the whole 'episode')."""
    import pandas as pd

    idx = pd.DatetimeIndex(timestamps)  # type: ignore[arg-type]
    if period == "episode":
        return np.zeros(len(idx), dtype=np.int64)
    return np.asarray(idx.year * 12 + idx.month, dtype=np.int64)
