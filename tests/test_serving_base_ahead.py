"""The base load a persistence forecast carries past now (:func:`serving.base_ahead.base_ahead_kw`): the
last estimate read in a narrow bracket, moved into the bracket now, not the bracket's safe high side."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.base_ahead import base_ahead_kw
from serving.live import SiteMeterReading, build_snapshot
from tests.test_serving_helpers import drawing_live


def test_a_wide_bracket_now_does_not_become_the_forecast() -> None:
    # the 200-station V2G run: 20 kW read in a narrow bracket, then [0, 152.1] kW as EVs turned to discharge
    ahead, settled = base_ahead_kw(None, 20.0, 20.0, 5.0)
    assert (ahead, settled) == (20.0, 20.0)
    ahead, settled = base_ahead_kw(settled, 152.1, 0.0, 5.0)
    assert (ahead, settled) == (20.0, 20.0)
    # the load really rose: the bracket leaves the settled value behind, the forecast follows its low side
    ahead, settled = base_ahead_kw(settled, 180.0, 90.0, 5.0)
    assert (ahead, settled) == (90.0, 20.0)
    # narrow again: settled anew
    assert base_ahead_kw(settled, 95.0, 93.0, 5.0) == (95.0, 95.0)
    # nothing settled yet, or no bracket (stale meter, no site meter): the estimate now
    assert base_ahead_kw(None, 152.1, 0.0, 5.0) == (152.1, None)
    assert base_ahead_kw(20.0, 30.0, None, 5.0) == (30.0, 20.0)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    settled=st.none() | st.floats(0.0, 2000.0),
    low=st.floats(0.0, 2000.0),
    width=st.floats(0.0, 500.0),
    tol=st.floats(0.5, 50.0),
)
def test_the_forecast_base_is_in_the_bracket_now(
    settled: float | None, low: float, width: float, tol: float
) -> None:
    high = low + width
    ahead, kept = base_ahead_kw(settled, high, low, tol)
    assert low <= ahead <= high
    assert kept == (high if high - low <= tol else settled)


def test_the_snapshot_forecasts_the_settled_base_load_beyond_now(tmp_path: Path) -> None:
    """A charger cut after its reading (drew 6 kW or nothing when the site meter read): the base load now
    is the bracket's high side (11 kW, safe for the import limit), the forecast beyond now the 5 kW read
    before, when every draw was known."""
    live, cfg = drawing_live(tmp_path)
    for c in live.connectors:
        c.note_limit(0.0)
    live.meter = SiteMeterReading(5.0 + 24.0, None, 1.0)
    snap, info = build_snapshot(live, cfg, 1, np.full(4, np.inf), now_mono=1.0)
    assert info.base_load_kw == pytest.approx(5.0) and live.base_settled_kw == pytest.approx(5.0)
    assert np.allclose(snap.forecast.base_load_kw, 5.0)
    cut = live.connectors[0]
    cut.limit_kw = 0.0
    cut.note_limit(1.05)
    live.meter = SiteMeterReading(5.0 + 24.0, None, 1.1)
    snap, info = build_snapshot(live, cfg, 2, np.full(4, np.inf), now_mono=1.1)
    assert info.base_load_kw == pytest.approx(11.0) and info.base_load_low_kw == pytest.approx(5.0)
    assert snap.forecast.base_load_kw[0] == pytest.approx(11.0)
    assert np.allclose(snap.forecast.base_load_kw[1:], 5.0)
