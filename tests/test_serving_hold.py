"""When a decrease is not accepted, only the increases that would use its headroom wait (serving/hold.py):
the site never carries more than one of the two feasible plans allows, judged by the independent checker,
and an unrelated part of the site still gets its increases."""

from __future__ import annotations

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays
from envs.limits import limit_violations
from envs.projection import project
from serving.hold import hold_rows, increases_to_send
from tests.test_projection_support import sites
from tests.test_rotation import everyone_plugged_in
from tests.test_serving_helpers import small_site


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), reserve_frac=st.floats(0.0, 0.8))
def test_what_the_site_draws_after_a_failed_decrease_stays_within_every_limit(
    data: st.DataObject, reserve_frac: float
) -> None:
    site = data.draw(sites(max_chargers=8, allow_battery=False))
    state = everyone_plugged_in(site, reserve_frac * site.import_limit_kw)
    n = site.n
    requests = st.lists(st.floats(0.0, 50.0), min_size=n, max_size=n).map(np.array)
    old = np.asarray(project(site, state, data.draw(requests)).charger_kw, dtype=float)
    new = np.asarray(project(site, state, data.draw(requests)).charger_kw, dtype=float)
    assert limit_violations(site, state, old, 0.0, 0.0).total == 0
    assert limit_violations(site, state, new, 0.0, 0.0).total == 0
    decrease = new < old
    failed = decrease & np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)))
    delta = new - old
    go = increases_to_send(hold_rows(site), np.where(failed, -delta, 0.0), np.maximum(delta, 0.0))
    assert not go[delta <= 0].any()
    # a failed decrease keeps its old limit, a held increase its old limit; the rest are the new plan
    actual = np.where(failed | ((delta > 0) & ~go), old, new)
    assert limit_violations(site, state, actual, 0.0, 0.0).total == 0


def test_a_failed_decrease_holds_only_the_increases_that_share_its_rows() -> None:
    site = SiteArrays.from_config(small_site())  # 4 chargers, one 30 kW connection
    rows = hold_rows(site)
    n = site.n
    missing = np.zeros(n)
    missing[0] = 2.0
    increase = np.zeros(n)
    increase[1:] = [3.0, 1.0, 1.5][: n - 1]
    go = increases_to_send(rows, missing, increase)
    # the largest increase alone covers the 2 kW the failed charger may still draw: only it waits
    assert not go[1] and go[2:].all()
    # nothing is missing: every increase goes out
    assert increases_to_send(rows, np.zeros(n), increase)[1:].all()
    # more missing than all increases can cover: all of them wait, as before
    missing[0] = 100.0
    assert not increases_to_send(rows, missing, increase).any()


def test_a_feeder_its_increases_cannot_cover_holds_its_own_not_the_sites() -> None:
    """Feeder A: 10 kW of decreases still on their way, one 2 kW increase; feeder B: 3 and 9 kW increases.
    A cannot be covered: its increase waits (A then carries no more than before); the site's 10 kW are
    covered by it and B's 9 kW; B's 3 kW goes out. (All were held before: a 1,000-station step dipped
    from 4,968 to 2,226 kW for two seconds while every increase waited for a feeder's decreases.)"""
    # rows: feeder A, feeder B, the import
    rows = np.array([[1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [0.0, 1.0, 1.0]])
    missing = np.array([10.0, 0.0, 0.0, 0.0])
    increase = np.array([0.0, 2.0, 3.0, 9.0])
    assert increases_to_send(rows, missing, increase).tolist() == [False, False, True, False]
    # A covered by a larger increase of its own: the largest-first rule as before
    increase[1] = 12.0
    assert increases_to_send(rows, missing, increase).tolist() == [False, False, True, True]
