"""The independent limit checker: each kind of violation is caught on a hand-built allocation, and
feasible allocations count zero."""

from __future__ import annotations

import numpy as np
import pytest

from envs.config import site_from_dict
from envs.core import SiteArrays, SiteState
from envs.limits import Violations, limit_violations


def _site(**extra: object) -> SiteArrays:
    cfg: dict[str, object] = {
        "name": "limits",
        "grid": {"import_limit_kw": 30.0, "export_limit_kw": 5.0},
        "nodes": [
            {"id": "root", "max_power_kw": 40.0},
            {"id": "g", "parent": "root", "max_power_kw": 15.0, "max_current_a": 20.0},
        ],
        "chargers": [
            {"id": "a", "node": "g", "max_power_kw": 11.0, "rate_unit": "W", "efficiency": 1.0},
            {"id": "b", "node": "g", "phases": 1, "phase": "L1", "max_current_a": 32.0, "efficiency": 1.0},
            {"id": "v", "node": "root", "max_power_kw": 11.0, "bidirectional": True, "max_discharge_kw": 7.0,
             "efficiency": 1.0, "rate_unit": "W"},
        ],
        "battery": {"capacity_kwh": 20.0, "max_charge_kw": 5.0, "max_discharge_kw": 5.0, "efficiency": 1.0},
        "pv": {"peak_kw": 20.0},
    }  # fmt: skip
    cfg.update(extra)
    return SiteArrays.from_config(site_from_dict(cfg))


def _state(**over: object) -> SiteState:
    values: dict[str, object] = {
        "ev_present": np.array([True, True, True]),
        "ev_max_charge_kw": np.array([np.inf, np.inf, 7.0]),
        "ev_max_discharge_kw": np.array([0.0, 0.0, 7.0]),
        "energy_needed_kwh": np.array([10.0, 10.0, 2.0]),
        "energy_room_kwh": np.array([20.0, 20.0, 10.0]),
        "energy_dischargeable_kwh": np.array([0.0, 0.0, 10.0]),
        "time_left_h": np.array([4.0, 4.0, 4.0]),
        "base_load_kw": 10.0,
        "pv_kw": 0.0,
        "battery_soc_kwh": 10.0,
    }
    values.update(over)
    return SiteState(**values)  # type: ignore[arg-type]


def _check(x: list[float], battery_kw: float = 0.0, curtailed_kw: float = 0.0, **state: object) -> Violations:
    return limit_violations(_site(), _state(**state), np.array(x), battery_kw, curtailed_kw)


def test_a_feasible_allocation_counts_nothing() -> None:
    v = _check([5.0, 2.76, -3.0], battery_kw=2.0)  # L1 at g: 7.25 A + 12 A
    assert v.total == 0 and v.nonzero() == {}


@pytest.mark.parametrize(
    ("x", "kwargs", "kind"),
    [
        ([11.5, 0.0, 0.0], {}, "charger_max"),
        ([0.0, 0.0, 8.0], {}, "ev_max"),
        ([0.0, 0.0, 1.0], {"ev_present": np.array([True, True, False])}, "no_ev"),
        ([10.0, 0.0, 0.0], {"energy_room_kwh": np.array([2.0, 20.0, 10.0])}, "overfill"),
        ([0.0, -1.0, 0.0], {}, "discharge_not_allowed"),
        ([0.0, 0.0, -1.0], {"ev_max_discharge_kw": np.zeros(3)}, "discharge_not_allowed"),
        ([0.0, 0.0, -7.5], {}, "discharge_max"),
        ([0.0, 0.0, -6.0], {"energy_dischargeable_kwh": np.array([0.0, 0.0, 1.0])}, "soc_floor"),
        ([0.0, 0.0, -6.0], {"energy_needed_kwh": np.array([10.0, 10.0, 25.0])}, "departure"),
        ([2.0, 0.0, 0.0], {}, "min_current"),
        ([8.0, 7.36, 0.0], {}, "node_kw"),
        ([0.0, 7.36, 0.0], {}, "node_phase_a"),
        ([11.0, 3.0, 7.0], {}, "site_import"),
        ([0.0, 0.0, -7.0], {"base_load_kw": 0.0}, "site_export"),
    ],
)
def test_each_kind_is_caught(x: list[float], kwargs: dict[str, object], kind: str) -> None:
    v = limit_violations(_site(), _state(**kwargs), np.array(x), 0.0, 0.0)
    assert getattr(v, kind) >= 1, v.nonzero()
    assert v.total == sum(v.nonzero().values())


def test_departure_margin_is_exact() -> None:
    # need 20 kWh, 7 kW for 3.75 h after the step: 26.25 kWh reachable, so 6.25 kWh may go: 25 kW * 0.25 h
    # but the discharge limit is 7 kW; with need 25 kWh only 1.25 kWh may go: 5 kW
    ok = _check([0.0, 0.0, -5.0], energy_needed_kwh=np.array([10.0, 10.0, 25.0]))
    bad = _check([0.0, 0.0, -5.1], energy_needed_kwh=np.array([10.0, 10.0, 25.0]))
    assert ok.departure == 0 and bad.departure == 1


def test_minimum_current_allows_an_ev_that_takes_less() -> None:
    room = np.array([0.5, 20.0, 10.0])  # a can take 2 kW in the 15 min step: 2 kW is allowed below 6 A
    assert _check([2.0, 0.0, 0.0], energy_room_kwh=room).min_current == 0
    assert _check([1.0, 0.0, 0.0], energy_room_kwh=room).min_current == 1


def test_curtailment_and_battery() -> None:
    assert _check([0.0, 0.0, 0.0], curtailed_kw=1.0, pv_kw=0.5).curtailment == 1
    assert _check([0.0, 0.0, 0.0], curtailed_kw=-1.0).curtailment == 1
    # 15 kW PV, base 10: 5 kW export is the limit; curtailing 2 kW keeps a 2 kW battery discharge legal
    assert _check([0.0, 0.0, 0.0], battery_kw=-2.0, pv_kw=15.0).site_export == 1
    assert _check([0.0, 0.0, 0.0], battery_kw=-2.0, curtailed_kw=2.0, pv_kw=15.0).total == 0
    assert _check([0.0, 0.0, 0.0], battery_kw=6.0).battery == 1
    assert _check([0.0, 0.0, 0.0], battery_kw=-4.0, battery_soc_kwh=2.5).battery == 1  # floor at 2 kWh
    site = _site(pv={"peak_kw": 20.0, "curtailable": False})
    v = limit_violations(site, _state(pv_kw=10.0), np.zeros(3), 0.0, 1.0)
    assert v.curtailment == 1
    no_battery = _site(battery=None)
    assert limit_violations(no_battery, _state(), np.zeros(3), 1.0, 0.0).battery == 1


def test_batch_counts_add_up() -> None:
    x = np.array([[5.0, 2.76, -3.0], [11.5, 0.0, 0.0], [11.5, 0.0, -7.5]])
    v = limit_violations(_site(), _state(), x, np.zeros(3), np.zeros(3))
    assert v.charger_max == 2 and v.discharge_max == 1


def test_tolerance_is_applied() -> None:
    assert _check([11.0 + 5e-7, 0.0, 0.0]).charger_max == 0
    assert (
        limit_violations(_site(), _state(), np.array([11.0 + 5e-7, 0.0, 0.0]), 0.0, 0.0, 1e-9).charger_max
        == 1
    )
