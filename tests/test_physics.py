"""The deadline terms and the battery box of :mod:`envs.physics`: one formula, shared by the kernel."""

from __future__ import annotations

import numpy as np

from envs import _kernel
from envs.physics import BIG, battery_box, ev_terms, round_trip_pays
from envs.projection import ProjectionPlan, charger_bounds
from tests.test_agents import make_site, make_state


def test_ev_terms_hold_the_rate_on_the_chargers_grid() -> None:
    site = make_site(n=2, import_kw=40.0, feeder_kw=100.0)
    state = make_state(site, [2.7, -1.0], [2.0, 0.0])
    t = ev_terms(site, state)
    rate = float(t.rate_kw[0])
    assert rate < 11.0 and rate == float(
        np.floor(11.0 / site.resolution_kw[0] + 1e-9) * site.resolution_kw[0]
    )
    assert t.rate_kw[1] == 0.0 and t.laxity_h[1] == BIG and t.must_kw[1] == 0.0
    eff = float(site.efficiency[0])
    np.testing.assert_allclose(t.laxity_h[0], 2.0 - 2.7 / (rate * eff))
    np.testing.assert_allclose(t.spare_kwh[0], rate * eff * 1.75 - 2.7)
    assert t.steps_left.tolist() == [8, 1]
    # one step left: everything must come now, up to the box
    urgent = ev_terms(site, make_state(site, [2.7, -1.0], [0.25, 0.0]))
    np.testing.assert_allclose(urgent.must_kw[0], min(2.7 / (eff * 0.25), urgent.hi_kw[0]))


def test_ev_terms_are_the_kernels_terms_batched() -> None:
    site = make_site(n=3, import_kw=40.0, feeder_kw=100.0)
    one = make_state(site, [5.0, 30.0, -1.0], [1.0, 3.0, 0.0])
    batch = one.as_batch()
    t1, tb = ev_terms(site, one), ev_terms(site, batch)
    np.testing.assert_array_equal(tb.laxity_h[0], t1.laxity_h)
    plan = ProjectionPlan.from_site(site)
    arrays = [np.asarray(a, dtype=float).reshape(1, -1) for a in (
        one.ev_max_charge_kw, one.ev_max_discharge_kw, one.energy_needed_kwh, one.energy_room_kwh,
        one.energy_dischargeable_kwh, one.time_left_h,
    )]  # fmt: skip
    present = np.asarray(one.ev_present).reshape(1, -1)
    _, hi, lax, must = _kernel.ev_bounds(plan.site_c, (present, *arrays), one.dt_h)
    np.testing.assert_array_equal(hi[0], t1.hi_kw)
    np.testing.assert_array_equal(lax[0], t1.laxity_h)
    np.testing.assert_array_equal(must[0], t1.must_kw)
    np.testing.assert_array_equal(charger_bounds(site, one)[1], t1.hi_kw)


def test_battery_box_and_round_trip() -> None:
    site = make_site(n=1, import_kw=40.0, feeder_kw=100.0)
    assert battery_box(site, 0.0, 0.25) == (0.0, 0.0) or site.has_battery
    assert bool(round_trip_pays(0.40, 0.10, 0.9, 0.05))  # 0.324 > 0.15
    assert not bool(round_trip_pays(0.20, 0.10, 0.8, 0.05))  # 0.128 < 0.15
    np.testing.assert_array_equal(round_trip_pays(0.3, 0.2, np.array([0.9, 0.8]), 0.0), [True, False])
