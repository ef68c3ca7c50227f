"""The V2G serving benchmark's scenario (:mod:`benchmarks.serving_v2g`): its EVs differ as a real site's
do (what each asks, its state of charge on arrival, when it leaves), within the ranges the builder
documents, and the same seed gives the same scenario. No live run."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from benchmarks.serving_v2g import V2G_STEP_S, build_v2g_scenario
from envs.scenario import load_scenario

START = pd.Timestamp("2026-01-05 12:00", tz="UTC")


def _sessions(folder: Path, seed: int | None, n: int = 50, minutes: float = 8.0) -> pd.DataFrame:
    return load_scenario(build_v2g_scenario(folder, n, START, minutes, seed)).sessions.reset_index(drop=True)


@pytest.mark.parametrize("seed", [0, 1, 7])
def test_the_evs_differ_within_the_documented_ranges(tmp_path: Path, seed: int) -> None:
    s = _sessions(tmp_path, seed)
    end = START + pd.Timedelta(minutes=8.0)
    stay_h = (s["departure"] - s["arrival"]).dt.total_seconds() / 3600.0
    share = s["energy_kwh"] / (11.04 * 0.95 * stay_h)  # of what its charger could give it in its stay
    assert s["energy_kwh"].nunique() >= 40 and s["arrival_soc"].nunique() >= 40  # to the Wh, the 0.001
    assert share.between(0.15 - 1e-3, 0.35 + 1e-3).all()
    assert share.max() - share.min() > 0.1  # spread over the range, not one value
    assert s["arrival_soc"].between(0.3, 0.7).all() and s["arrival_soc"].std() > 0.05
    assert (s["arrival"] == START).all()
    # departures on the 10 s grid, 0 to round(20 %) of the 48 steps (10) before the end, a few steps apart
    early_s = (end - s["departure"]).dt.total_seconds()
    assert (early_s % V2G_STEP_S == 0).all() and early_s.between(0, 10 * V2G_STEP_S).all()
    assert s["departure"].nunique() >= 6
    assert bool(s["v2g"].all())


def test_the_same_seed_gives_the_same_scenario_and_another_seed_another(tmp_path: Path) -> None:
    a = _sessions(tmp_path / "a", 0)
    b = _sessions(tmp_path / "b", 0)
    c = _sessions(tmp_path / "c", 1)
    pd.testing.assert_frame_equal(a, b)
    assert not a["energy_kwh"].equals(c["energy_kwh"])
    assert not a["arrival_soc"].equals(c["arrival_soc"])
    assert not a["departure"].equals(c["departure"])


def test_no_seed_gives_the_identical_evs_of_the_earlier_rounds(tmp_path: Path) -> None:
    s = _sessions(tmp_path, None)
    assert s["energy_kwh"].nunique() == 1 and s["arrival_soc"].nunique() == 1
    assert float(s["energy_kwh"].iloc[0]) == round(0.25 * 11.04 * 0.95 * 8.0 / 60.0, 3)
    assert (s["departure"] == START + pd.Timedelta(minutes=8.0)).all()


def test_the_site_battery_is_sized_on_the_chargers_and_absent_unless_asked(tmp_path: Path) -> None:
    with_battery = load_scenario(build_v2g_scenario(tmp_path / "b", 50, START, 8.0, 0, battery=True)).site
    b = with_battery.battery
    assert b is not None
    assert b.max_charge_kw == b.max_discharge_kw == pytest.approx(0.04 * 50 * 11.04, abs=0.05)
    assert b.capacity_kwh == pytest.approx(0.5 * b.max_charge_kw, abs=0.05) and b.initial_soc == 0.5
    assert load_scenario(build_v2g_scenario(tmp_path / "n", 50, START, 8.0, 0)).site.battery is None
