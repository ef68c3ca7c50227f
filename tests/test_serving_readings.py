"""What a charger drew when the site meter read (:meth:`serving.live.ConnectorLive.draw_bounds_kw`): the
reading nearest the site meter's with no limit change between them, so the base load is neither too low
(unsafe) nor, from a change the site meter read before, a whole charger too high (a cut that flaps)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from envs.core import SiteArrays
from serving.at_meter import draws_at_meter
from serving.config import connector_map
from serving.live import ConnectorLive, LiveSite, SiteMeterReading
from tests.test_serving_helpers import serving_config, small_site

SLACK_S = 0.05  # reading_slack_s at a 0.2 s control interval


def _live(tmp_path: Path) -> tuple[LiveSite, ConnectorLive]:
    site = small_site()
    live = LiveSite.build(
        SiteArrays.from_config(site), connector_map(serving_config(tmp_path), site), ["CP1", "CP2"]
    )
    c = live.connectors[0]
    c.tx_pk, c.started_at = 1, 0.0
    return live, c


def _limits(c: ConnectorLive, changes: list[tuple[float, float]]) -> None:
    for at, kw in changes:
        c.limit_kw = kw
        c.note_limit(at)


def _read(c: ConnectorLive, at: float, kw: float, taken_after: float = -np.inf) -> None:
    c.power_kw, c.power_at = kw, at
    c.readings.append((at, kw, taken_after))


def test_a_site_meter_read_before_a_cut_takes_the_reading_before_it(tmp_path: Path) -> None:
    """The end-to-end test's flapping: the site meter read at 10.3 s, the charger was cut at 10.5 s and
    read 0 kW at 10.8 s. It drew 6.21 kW when the site meter read (its reading at 10.0 s, no change
    until after the meter): the last reading alone took it as maybe drawing nothing, the base load 6.21
    kW too high."""
    live, c = _live(tmp_path)
    cfg = serving_config(tmp_path, control_interval_s=0.2)
    _limits(c, [(9.0, 6.21), (10.5, 0.0)])
    _read(c, 10.0, 6.21)
    _read(c, 10.8, 0.0)
    measured = live.measured_kw(11.0, 10.0)
    assert c.draw_floor_kw(10.3 - SLACK_S, 10.8 + SLACK_S) == 0.0  # the last reading's window: the cut
    assert c.draw_bounds_kw(10.3, SLACK_S) == (6.21, 6.21)
    assert draws_at_meter(live, measured, SiteMeterReading(0.0, None, 10.3), cfg, None).chargers_kw == 6.21
    # read after the cut: the reading after it says what it drew, exactly
    assert c.draw_bounds_kw(10.7, SLACK_S) == (0.0, 0.0)
    assert draws_at_meter(live, measured, SiteMeterReading(0.0, None, 10.7), cfg, None)[::2] == (0.0, 0.0)
    # read within the slack of the cut: no reading without the change between, the last one across both
    assert c.draw_bounds_kw(10.52, SLACK_S) == (0.0, 6.21)
    then = draws_at_meter(live, measured, SiteMeterReading(0.0, None, 10.52), cfg, None)
    assert (then.chargers_kw, then.chargers_high_kw) == (0.0, 6.21)


def test_a_reading_asked_for_after_a_change_was_taken_after_it(tmp_path: Path) -> None:
    """The end-to-end test's flapping on a loaded machine: a station's own readings arrive just after each
    change (each maybe taken before it), so no reading tells the draw under the new limit and the charger
    counts as maybe drawing nothing. The reading a TriggerMessage sent after the change asked for (sent at
    10.51 s, arriving at 10.53 s) was taken after the change: it says what the charger drew."""
    _, c = _live(tmp_path)
    _limits(c, [(9.0, 0.0), (10.5, 6.21)])
    _read(c, 10.3, 0.0)
    _read(c, 10.53, 6.21)  # of itself: within the slack of the change, maybe taken before it
    assert c.draw_bounds_kw(10.6, SLACK_S) == (0.0, 6.21)
    c.readings.pop()
    _read(c, 10.53, 6.21, taken_after=10.51)  # asked for at 10.51 s
    assert c.draw_bounds_kw(10.6, SLACK_S) == (6.21, 6.21)
    # a site meter read within the slack of the change is still either side of it
    assert c.draw_bounds_kw(10.52, SLACK_S) == (0.0, 6.21)


def test_an_ev_drawing_less_than_its_limit_keeps_the_limit_as_ceiling(tmp_path: Path) -> None:
    _, c = _live(tmp_path)
    _limits(c, [(9.0, 6.21)])
    _read(c, 10.0, 4.0)
    _read(c, 10.2, 3.5)
    assert c.draw_bounds_kw(10.25, SLACK_S) == (3.5, 6.21)  # the nearest reading
    assert c.draw_bounds_kw(10.02, SLACK_S) == (4.0, 6.21)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.sampled_from([0.0, 1.4, 4.14, 6.21, 7.4])), min_size=1, max_size=8
    ),
    reads=st.lists(
        st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 1.0), st.none() | st.floats(0.0, 3.0)),
        min_size=1,
        max_size=8,
    ),
    meter=st.tuples(st.floats(0.0, 5.0), st.floats(0.0, 1.0)),
)
def test_the_bounds_hold_the_draw_when_the_site_meter_read(
    changes: list[tuple[float, float]],
    reads: list[tuple[float, float, float | None]],
    meter: tuple[float, float],
) -> None:
    """A station at its limit at once (the limit in force when the service logged it): every reading
    taken up to the slack before it arrived, and so the site meter's; a triggered one (``asked`` not None)
    also after its TriggerMessage went out (up to three slacks before it arrived). Whatever the
    times, the bounds hold what the charger drew when the site meter read."""
    _, c = _live(Path("never-written"))  # the config only names its files
    changes = sorted(changes)
    _limits(c, [(-1.0, 6.21), *changes])

    def drew(t: float) -> float:
        return [kw for at, kw in c.limit_log if at <= t][-1]

    for arrived, lag, asked in sorted(reads, key=lambda r: r[0]):
        if asked is None:
            _read(c, arrived, drew(arrived - lag * SLACK_S))
        else:  # asked for before it arrived; taken after that and up to the slack before it arrived
            asked_at = arrived - asked * SLACK_S
            earliest = max(asked_at, arrived - SLACK_S)
            _read(c, arrived, drew(earliest + lag * (arrived - earliest)), taken_after=asked_at)
    arrived, lag = meter
    bounds = c.draw_bounds_kw(arrived, SLACK_S)
    assert bounds is not None
    assert bounds[0] <= drew(arrived - lag * SLACK_S) <= bounds[1]


def _bounds_from_every_reading(c: ConnectorLive, at: float, slack: float) -> tuple[float, float] | None:
    """:meth:`ConnectorLive.draw_bounds_kw` as first written: every reading's window and span, then the
    nearest clean one (its lowest span on a tie)."""
    if c.power_kw is None:
        return None
    clean = []
    for t, kw, taken_after in c.readings:
        since, until = min(at - slack, max(t - slack, taken_after)), max(at, t) + slack
        if not any(since < t_lim <= until for t_lim, _ in c.limit_log):
            limits = c.limits_in_force(since, until)
            clean.append((abs(at - t), min([kw, *limits]), max([kw, *limits])))
    if clean:
        _, lo, hi = min(clean)
        return lo, hi
    since, until = min(at - slack, c.power_taken_from(slack)), max(at, c.power_at) + slack
    limits = c.limits_in_force(since, until)
    return min([c.power_kw, *limits]), max([c.power_kw, *limits])


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    changes=st.lists(
        st.tuples(st.floats(0.0, 2.0), st.sampled_from([0.0, 1.4, 6.21])), min_size=0, max_size=10
    ),
    reads=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0]), st.sampled_from([0.0, 3.5, 6.21]),
            st.sampled_from([-np.inf, 0.4, 1.0]),
        ),
        min_size=0,
        max_size=8,
    ),
    at=st.sampled_from([0.0, 0.7, 1.0, 1.3, 2.5]),
)  # fmt: skip
@example(changes=[], reads=[(0.5, 6.21, -np.inf), (1.5, 3.5, -np.inf)], at=1.0)  # one either side: the later
def test_the_nearest_clean_reading_is_found_without_scanning_every_one(
    changes: list[tuple[float, float]], reads: list[tuple[float, float, float]], at: float
) -> None:
    """The bounds search stops at the nearest clean reading: the same bounds as scanning every reading,
    ties in distance (a reading either side of the meter's, two at one time) included."""
    _, c = _live(Path("never-written"))
    _limits(c, sorted(changes))
    for t, kw, taken_after in reads:
        _read(c, t, kw, taken_after)
    assert c.draw_bounds_kw(at, 0.1) == _bounds_from_every_reading(c, at, 0.1)
