"""Scenario folders: validation errors name row and column, resampling, round trips and the summary."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from envs.config import ConfigError, dump_site, site_from_dict
from envs.scenario import (
    _ramp_profile,
    load_scenario,
    make_scenario,
    resample_timeseries,
    save_scenario,
    scenario_summary,
    spread_load_kw,
    uncontrolled_load_kw,
    validate_timeseries,
)

SITE = site_from_dict(
    {
        "name": "tiny",
        "timezone": "Europe/Amsterdam",
        "grid": {"import_limit_kw": 20},
        "nodes": [{"id": "root", "max_power_kw": 30}],
        "chargers": [
            {"id": "c1", "node": "root", "phases": 3, "max_current_a": 16, "efficiency": 1.0},
            {"id": "c2", "node": "root", "phases": 3, "max_current_a": 16, "efficiency": 1.0},
        ],
        "pv": {"peak_kw": 10},
    }
)
SESSIONS_CSV = """session_id,charger_id,arrival,departure,energy_kwh,max_power_kw
a,c1,2025-06-02T00:00:00+02:00,2025-06-02T02:00:00+02:00,5.52,
b,c2,2025-06-02T00:10:00+02:00,2025-06-02T01:30:00+02:00,2.5,5
c,c1,2025-06-02T02:00:00+02:00,2025-06-02T03:00:00+02:00,1,
"""


def _timeseries_csv(n: int = 16, step_min: int = 15) -> str:
    rows = ["timestamp,base_load_kw,pv_kw,import_price_per_kwh,export_price_per_kwh"]
    t0 = pd.Timestamp("2025-06-02T00:00:00+02:00")
    for k in range(n):
        t = t0 + pd.Timedelta(minutes=step_min * k)
        rows.append(f"{t.isoformat()},{4.0 + k % 3},{0.5 * (k % 2)},0.2,0.05")
    return "\n".join(rows) + "\n"


def _folder(tmp_path: Path, sessions: str = SESSIONS_CSV, timeseries: str | None = None) -> Path:
    folder = tmp_path / "scn"
    folder.mkdir(exist_ok=True)
    dump_site(SITE, folder / "site.yaml")
    (folder / "sessions.csv").write_text(sessions)
    (folder / "timeseries.csv").write_text(timeseries if timeseries is not None else _timeseries_csv())
    return folder


def _edit(line: int, column: str, value: str) -> str:
    """SESSIONS_CSV with one cell replaced (line 1 = header)."""
    lines = SESSIONS_CSV.strip().split("\n")
    header = lines[0].split(",")
    cells = lines[line - 1].split(",")
    cells[header.index(column)] = value
    lines[line - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def test_load_normalises_types_and_sorts(tmp_path: Path) -> None:
    scn = load_scenario(_folder(tmp_path))
    s = scn.sessions
    assert list(s["session_id"]) == ["a", "b", "c"]
    assert str(s["arrival"].dtype) == "datetime64[ns, UTC]"
    assert s["arrival"].iloc[0] == pd.Timestamp("2025-06-01T22:00:00Z")
    assert np.isnan(s["max_power_kw"].iloc[0]) and s["max_power_kw"].iloc[1] == 5.0
    assert s["v2g"].dtype == bool and s["priority"].dtype == np.int64
    assert scn.n_steps == 16 and scn.dt_h == 0.25
    assert scn.end == pd.Timestamp("2025-06-02T04:00:00+02:00")


def test_save_load_round_trip_is_exact_and_byte_stable(tmp_path: Path) -> None:
    scn = load_scenario(_folder(tmp_path))
    out1 = save_scenario(scn, tmp_path / "one")
    again = load_scenario(out1)
    assert again.equals(scn)
    out2 = save_scenario(again, tmp_path / "two")
    for name in ("site.yaml", "sessions.csv", "timeseries.csv"):
        assert (out1 / name).read_bytes() == (out2 / name).read_bytes()
    assert "2025-06-02T00:10:00+02:00" in (out1 / "sessions.csv").read_text()


BAD_SESSIONS = [
    (SESSIONS_CSV.replace("energy_kwh", "energy"), None, "missing required column(s) ['energy_kwh']"),
    (_edit(3, "departure", "2025-06-02T00:05:00+02:00"), "row 3, column 'departure'", "not after arrival"),
    (_edit(2, "charger_id", "c9"), "row 2, column 'charger_id'", "unknown charger 'c9'"),
    (_edit(4, "energy_kwh", "-1"), "row 4, column 'energy_kwh'", "negative energy"),
    (_edit(2, "energy_kwh", "5520"), "row 2, column 'energy_kwh'", "check units: kWh, not Wh"),
    (_edit(3, "max_power_kw", "5000"), "row 3, column 'max_power_kw'", "check units: kW, not W"),
    (_edit(2, "arrival", "2025-06-02T00:00:00"), "row 2, column 'arrival'", "no UTC offset"),
    (_edit(3, "arrival", "yesterday+01:00"), "row 3, column 'arrival'", "not an ISO 8601 time"),
    (_edit(4, "energy_kwh", "lots"), "row 4, column 'energy_kwh'", "not a number"),
    (_edit(4, "session_id", "a"), "row 4, column 'session_id'", "duplicate id 'a'"),
    (
        _edit(4, "arrival", "2025-06-02T01:00:00+02:00"),
        "row 4, column 'arrival'",
        "before session 'a' (row 2)",
    ),
    (SESSIONS_CSV.replace("max_power_kw", "colour"), None, "unknown column(s) ['colour']"),
    (_edit(3, "departure", "2025-06-02T09:00:00+02:00"), None, "after the time series ends"),
]


@pytest.mark.parametrize(("sessions", "where", "why"), BAD_SESSIONS, ids=[b[2][:25] for b in BAD_SESSIONS])
def test_bad_sessions_name_row_and_column(tmp_path: Path, sessions: str, where: str | None, why: str) -> None:
    folder = _folder(tmp_path, sessions=sessions)
    with pytest.raises(ConfigError) as info:
        load_scenario(folder)
    message = str(info.value)
    assert why in message
    if where is not None:
        assert message.startswith(f"{folder / 'sessions.csv'}: {where}")
    assert "\n" not in message


def test_v2g_and_soc_columns_are_checked(tmp_path: Path) -> None:
    header = "session_id,charger_id,arrival,departure,energy_kwh,v2g,battery_kwh,arrival_soc\n"
    a = "a,c1,2025-06-02T00:00:00+02:00,2025-06-02T02:00:00+02:00,5.52,{v2g},40,0.2\n"
    b = "b,c2,2025-06-02T00:10:00+02:00,2025-06-02T01:30:00+02:00,{energy},no,40,0.2\n"
    with pytest.raises(ConfigError, match=r"row 2, column 'v2g': not a boolean: 'maybe'"):
        load_scenario(_folder(tmp_path, sessions=header + a.format(v2g="maybe") + b.format(energy=2.5)))
    with pytest.raises(ConfigError, match=r"row 3, column 'energy_kwh': more energy asked than the battery"):
        load_scenario(_folder(tmp_path, sessions=header + a.format(v2g="yes") + b.format(energy=33)))
    scn = load_scenario(_folder(tmp_path, sessions=header + a.format(v2g="yes") + b.format(energy=2.5)))
    assert list(scn.sessions["v2g"]) == [True, False]


def _ts_with(row: int, column: str, value: str) -> str:
    lines = _timeseries_csv().strip().split("\n")
    header = lines[0].split(",")
    cells = lines[row - 1].split(",")
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    return "\n".join(lines) + "\n"


def _drop_line(text: str, line: int) -> str:
    lines = text.strip().split("\n")
    del lines[line - 1]
    return "\n".join(lines) + "\n"


BAD_TIMESERIES = [
    (_drop_line(_timeseries_csv(), 6), "row 6, column 'timestamp'", "gap or irregular step"),
    (_ts_with(3, "pv_kw", "-1"), "row 3, column 'pv_kw'", "negative power"),
    (
        _ts_with(5, "import_price_per_kwh", ""),
        "row 5, column 'import_price_per_kwh'",
        "missing or not a number",
    ),
    (_ts_with(4, "timestamp", "2025-06-02T00:30:00"), "row 4, column 'timestamp'", "no UTC offset"),
    (_ts_with(3, "base_load_kw", "4500"), "row 3, column 'base_load_kw'", "check units: kW, not W"),
    (_ts_with(3, "import_price_per_kwh", "210"), "row 3, column 'import_price_per_kwh'", "not per MWh"),
    (_ts_with(3, "pv_kw", "9000"), "row 3, column 'pv_kw'", "check units"),
    (_timeseries_csv().replace("pv_kw", "solar"), None, "missing required column(s) ['pv_kw']"),
]


@pytest.mark.parametrize(("ts", "where", "why"), BAD_TIMESERIES, ids=[b[2][:25] for b in BAD_TIMESERIES])
def test_bad_timeseries_name_row_and_column(tmp_path: Path, ts: str, where: str | None, why: str) -> None:
    folder = _folder(tmp_path, timeseries=ts)
    with pytest.raises(ConfigError) as info:
        load_scenario(folder)
    message = str(info.value)
    assert why in message
    if where is not None:
        assert where in message
    assert "\n" not in message


def test_sessions_before_the_time_series_are_an_error(tmp_path: Path) -> None:
    text = _edit(2, "arrival", "2025-06-01T23:00:00+02:00")
    with pytest.raises(ConfigError, match="before the time series starts"):
        load_scenario(_folder(tmp_path, sessions=text))


def test_missing_file_and_not_a_folder(tmp_path: Path) -> None:
    folder = _folder(tmp_path)
    (folder / "timeseries.csv").unlink()
    with pytest.raises(ConfigError, match=r"timeseries.csv: missing"):
        load_scenario(folder)
    with pytest.raises(ConfigError, match="not a scenario folder"):
        load_scenario(tmp_path / "none")


def test_hourly_file_is_resampled_on_load(tmp_path: Path) -> None:
    folder = _folder(tmp_path, timeseries=_timeseries_csv(n=4, step_min=60))
    scn = load_scenario(folder, step="15min")
    assert scn.n_steps == 16 and scn.dt_h == 0.25
    np.testing.assert_allclose(scn.timeseries["base_load_kw"].to_numpy()[:8], [4, 4, 4, 4, 5, 5, 5, 5])
    coarse = load_scenario(_folder(tmp_path), step="1h")
    assert coarse.n_steps == 4
    np.testing.assert_allclose(coarse.timeseries["base_load_kw"].iloc[0], (4 + 5 + 6 + 4) / 4)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(0, 100), min_size=2, max_size=40),
    current_min=st.sampled_from([5, 10, 15, 30, 60]),
    target_min=st.sampled_from([5, 10, 15, 20, 30, 60]),
)
def test_resampling_preserves_energy(values: list[float], current_min: int, target_min: int) -> None:
    idx = pd.date_range("2025-01-01T00:00Z", periods=len(values), freq=f"{current_min}min")
    frame = pd.DataFrame({c: values for c in ("base_load_kw", "pv_kw")}, index=idx)
    frame["import_price_per_kwh"] = 0.2
    frame["export_price_per_kwh"] = 0.05
    ts = validate_timeseries(frame)
    out = resample_timeseries(ts, f"{target_min}min")
    span_min = len(values) * current_min
    edges = np.minimum(np.arange(len(out) + 1) * target_min, span_min)
    energy_out = float(np.sum(out["base_load_kw"].to_numpy() * np.diff(edges)))
    assert energy_out == pytest.approx(sum(values) * current_min, rel=1e-9, abs=1e-6)
    assert out["base_load_kw"].max() <= max(values) + 1e-9
    assert out["base_load_kw"].min() >= min(values) - 1e-9


def test_summary_hand_computed(tmp_path: Path) -> None:
    scn = load_scenario(_folder(tmp_path))
    rated = 3 * 230 * 16 / 1000  # 11.04 kW
    ev = uncontrolled_load_kw(scn)
    # a: 5.52 kWh at 11.04 kW = 30 min from 00:00; b: 2.5 kWh at 5 kW = 30 min from 00:10;
    # c: 1 kWh at 11.04 kW from 02:00 for 5.43 min
    expected = np.zeros(16)
    expected[0:2] += rated
    expected[0] += 5 * 5 / 15
    expected[1] += 5
    expected[2] += 5 * 10 / 15
    expected[8] += 1 / 0.25
    np.testing.assert_allclose(ev, expected, atol=1e-9)
    spread = spread_load_kw(scn)
    assert spread[0] == pytest.approx(5.52 / 2 + 2.5 / (80 / 60) * (5 / 15))
    assert spread[8] == pytest.approx(1.0)
    summary = scenario_summary(scn)
    base = np.array([4.0 + k % 3 for k in range(16)])
    pv = np.array([0.5 * (k % 2) for k in range(16)])
    assert summary.n_sessions == 3 and summary.n_chargers == 2
    assert summary.energy_asked_kwh == pytest.approx(9.02)
    assert summary.peak_base_load_kw == 6.0
    assert summary.uncontrolled_ev_peak_kw == pytest.approx(rated + 5)
    assert summary.uncontrolled_site_peak_kw == pytest.approx(np.max(base + expected - pv))
    assert summary.uncontrolled_steps_over_limit == int(np.sum(base + expected - pv > 20))
    assert summary.uncontrolled_steps_over_limit == 1 and summary.over_limit
    assert summary.max_concurrent_evs == 2
    assert summary.undeliverable_sessions == 0
    assert summary.start == "2025-06-02T00:00:00+02:00" and summary.days == pytest.approx(4 / 24)
    assert any("EXCEEDS the import limit" in line for line in summary.lines())


def _naive_profile(n: int, a: np.ndarray, e: np.ndarray, p: np.ndarray) -> np.ndarray:
    out = np.zeros(n)
    for k in range(n):
        out[k] = np.sum(p * np.clip(np.minimum(e, k + 1) - np.maximum(a, k), 0, None))
    return out


@settings(max_examples=60, deadline=None)
@given(
    sessions=st.lists(
        st.tuples(st.floats(0, 30), st.floats(0.01, 10), st.floats(0, 50)), min_size=1, max_size=25
    )
)
def test_ramp_profile_matches_naive_overlap(sessions: list[tuple[float, float, float]]) -> None:
    a = np.array([s[0] for s in sessions])
    e = a + np.array([s[1] for s in sessions])
    p = np.array([s[2] for s in sessions])
    np.testing.assert_allclose(_ramp_profile(32, a, e, p), _naive_profile(32, a, e, p), atol=1e-7)


def test_make_scenario_validates_in_memory_frames(tmp_path: Path) -> None:
    scn = load_scenario(_folder(tmp_path))
    again = make_scenario(scn.site, scn.sessions, scn.timeseries, "again")
    assert again.equals(scn)
    bad = scn.sessions.copy()
    bad.loc[1, "energy_kwh"] = -2.0
    with pytest.raises(ConfigError, match=r"again/sessions: row 3, column 'energy_kwh': negative energy"):
        make_scenario(scn.site, bad, scn.timeseries, "again")
