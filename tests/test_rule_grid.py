"""The rule-based DLM hands out power on the chargers' grid: what it asks of an EV at full power is what
the projection applies (the box's top rounded down to the grid), so the room an EV at full power cannot
draw goes to the next EV instead of staying unused.

Asked for its full 11 kW, a charger on a 0.069 kW grid draws 10.971 kW; a fill that counted 11 kW left
the 0.029 kW difference under the limit, and where the next EV's share then fell below a grid point, a
whole grid step more (on the real weeks in declared mode, 0.1-0.2 kW in steps at the peak target, and
EVs whose drivers left early were a little shorter than under LLF, which fills to the limit)."""

from __future__ import annotations

import numpy as np
import pytest

from agents.rule_based import RuleBasedDLM
from envs.projection import floor_to_grid, project
from tests.test_agents import make_site, make_snapshot, make_state

GRID_KW = 0.069
"""the grid of make_site's chargers (three-phase, 0.1 A)"""


@pytest.mark.parametrize("steps_over", [0, 1, 5])
def test_two_forced_evs_on_a_full_connection_draw_all_of_it(steps_over: int) -> None:
    # both EVs must charge at full power now (no laxity); the connection holds one at full power and the
    # other at a point of its grid: together they can draw the whole limit
    full = float(floor_to_grid(11.0, GRID_KW))
    limit = full + (73 + steps_over) * GRID_KW + 1e-6
    site = make_site(n=2, import_kw=limit, feeder_kw=100.0)
    assert np.allclose(site.resolution_kw, GRID_KW)
    state = make_state(site, [11.0, 20.0], [1.0, 1.0])
    pol = RuleBasedDLM(v2g=False, use_battery=False)
    pol.reset(site)
    decision = np.asarray(pol.act(make_snapshot(state, peak_kw=limit)).charger_kw, dtype=float)
    # no request above what the projection applies at full power
    assert decision.max() <= full + 1e-9
    applied = np.asarray(project(site, state, decision).charger_kw, dtype=float)
    assert applied.sum() == pytest.approx(limit, abs=1e-5)
    assert sorted(applied) == pytest.approx(sorted([full, limit - full]), abs=1e-5)
