"""ACN-Data and ElaadNL loaders: the fixtures load into the same scenarios as the native format."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.config import ConfigError, load_site
from envs.loaders import load_acn, load_elaad, read_acn, read_elaad
from envs.scenario import load_scenario, read_csv, save_scenario, validate_sessions

FIX = Path(__file__).parent / "fixtures"
ACN, ACN_SITE = FIX / "acn_sessions.json", FIX / "acn_site.yaml"
ELAAD, ELAAD_SITE = FIX / "elaad_transactions.csv", FIX / "elaad_site.yaml"


def _expected(name: str, site_path: Path) -> pd.DataFrame:
    path = FIX / name / "sessions.csv"
    raw = read_csv(path, dtype={"session_id": str, "charger_id": str})
    return validate_sessions(raw, load_site(site_path), str(path))


@pytest.mark.parametrize(
    ("loader", "path", "site", "expected"),
    [(load_acn, ACN, ACN_SITE, "acn_expected"), (load_elaad, ELAAD, ELAAD_SITE, "elaad_expected")],
)
def test_fixture_equals_hand_written_native_sessions(
    tmp_path: Path, loader: object, path: Path, site: Path, expected: str
) -> None:
    result = loader(path, site)  # type: ignore[operator]
    pd.testing.assert_frame_equal(result.scenario.sessions, _expected(expected, site))
    # import -> save -> load native gives the same scenario
    folder = save_scenario(result.scenario, tmp_path / "native")
    native = load_scenario(folder)
    assert native.equals(result.scenario)
    pd.testing.assert_frame_equal(native.sessions, result.scenario.sessions)
    pd.testing.assert_frame_equal(native.timeseries, result.scenario.timeseries)


def test_acn_unknown_station_is_reported_and_dropped() -> None:
    result = load_acn(ACN, ACN_SITE)
    assert list(result.dropped["session_id"]) == ["1_1_179_810_2018-04-25 16:00:00.000000"]
    assert result.dropped["reason"].iloc[0] == "unknown charger (1-1-179-810)"
    assert result.report() == "imported 4 sessions, dropped 1 (1 unknown charger)"
    ts = result.scenario.timeseries
    # a generated profile over the whole local day (PDT)
    assert result.scenario.start == pd.Timestamp("2018-04-25T00:00:00-07:00")
    assert result.scenario.end == pd.Timestamp("2018-04-26T00:00:00-07:00")
    assert len(ts) == 96 and (ts["pv_kw"] == 0).all()  # the site has no PV


def test_acn_requested_energy() -> None:
    raw = read_acn(ACN, energy="requested")
    assert raw.loc[raw["source_charger"] == "2-39-95-27", "energy_kwh"].item() == 25.0
    assert raw.loc[raw["source_charger"] == "2-39-91-437", "energy_kwh"].item() == 5.821


def test_acn_auto_mapping_round_robin_onto_free_chargers() -> None:
    result = load_acn(ACN, ACN_SITE, map_chargers="auto")
    placed = dict(
        zip(result.scenario.sessions["session_id"], result.scenario.sessions["charger_id"], strict=True)
    )
    ids = [s for s in read_acn(ACN)["session_id"]]
    assert placed == {
        ids[0]: "2-39-78-362",  # 11:08, first charger
        ids[1]: "2-39-95-27",  # 13:45, next
        ids[2]: "2-39-91-437",  # 14:37, next
        ids[3]: "2-39-78-362",  # 15:20, round robin back to the first, free since 13:20
    }
    assert list(result.dropped["reason"]) == ["no free charger"]


def test_mapping_file_and_busy_chargers(tmp_path: Path) -> None:
    mapping = tmp_path / "map.csv"
    mapping.write_text("source,charger\n1-1-179-810,2-39-78-362\n")
    result = load_acn(ACN, ACN_SITE, map_chargers=mapping)
    assert (
        result.dropped["reason"].iloc[0] == "charger busy (overlaps 2_39_78_362_2018-04-25 14:37:06.130512)"
    )
    yaml_map = tmp_path / "map.yaml"
    yaml_map.write_text("2-39-78-362: 2-39-91-437\n2-39-91-437: 2-39-78-362\n")
    swapped = load_acn(ACN, ACN_SITE, map_chargers=yaml_map).scenario.sessions
    assert (
        swapped.loc[swapped["session_id"].str.startswith("2_39_91_437"), "charger_id"].item() == "2-39-78-362"
    )
    mapping.write_text("source,charger\n1-1-179-810,nowhere\n")
    with pytest.raises(ConfigError, match=r"map.csv: row 2, column 'charger': 'nowhere' is not a charger"):
        load_acn(ACN, ACN_SITE, map_chargers=mapping)


def test_user_timeseries_is_resampled_and_bounds_the_sessions() -> None:
    result = load_acn(ACN, ACN_SITE, timeseries=FIX / "acn_timeseries_hourly.csv")
    ts = result.scenario.timeseries
    assert len(ts) == 96 and result.scenario.dt_h == 0.25
    np.testing.assert_allclose(ts["import_price_per_kwh"].to_numpy()[:4], 0.13)
    np.testing.assert_allclose(ts["import_price_per_kwh"].to_numpy()[16 * 4 : 16 * 4 + 4], 0.40)
    short = pd.read_csv(FIX / "acn_timeseries_hourly.csv").iloc[:12]
    result = load_acn(ACN, ACN_SITE, timeseries=short)
    reasons = set(result.dropped["reason"])
    assert "outside the time series" in reasons and len(result.scenario.sessions) == 1


def _acn_with(tmp_path: Path, k: int, field: str, value: object) -> Path:
    data = json.loads(ACN.read_text())
    if value is ...:
        del data["_items"][k][field]
    else:
        data["_items"][k][field] = value
    path = tmp_path / "acn.json"
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize(
    ("k", "field", "value", "why"),
    [
        (1, "connectionTime", ..., "_items[1], field 'connectionTime': missing"),
        (2, "disconnectTime", "yesterday", "_items[2], field 'disconnectTime': not an RFC 1123 date"),
        (
            0,
            "disconnectTime",
            "Wed, 25 Apr 2018 10:00:00 GMT",
            "_items[0], field 'disconnectTime': departure",
        ),
        (3, "kWhDelivered", -1.5, "_items[3], field 'kWhDelivered': negative energy"),
        (3, "kWhDelivered", 5821.0, "check units: kWh, not Wh"),
        (0, "stationID", None, "_items[0], field 'stationID': missing"),
    ],
)
def test_bad_acn_rows_name_item_and_field(
    tmp_path: Path, k: int, field: str, value: object, why: str
) -> None:
    with pytest.raises(ConfigError, match=rf"acn.json: .*{__import__('re').escape(why)}"):
        read_acn(_acn_with(tmp_path, k, field, value))


def test_bad_acn_files(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON at line 1"):
        read_acn(bad)
    bad.write_text('{"_meta": {}}')
    with pytest.raises(ConfigError, match="expected an ACN-Data object with '_items'"):
        read_acn(bad)


def test_elaad_semicolon_decimal_comma_variant(tmp_path: Path) -> None:
    text = ELAAD.read_text().replace(",", ";")
    lines = text.split("\n")
    lines[1:] = [line.replace(".", ",") if line else line for line in lines[1:]]
    path = tmp_path / "elaad_nl.csv"
    path.write_text("\n".join(lines))
    pd.testing.assert_frame_equal(read_elaad(path), read_elaad(ELAAD))


def test_elaad_missing_stop_uses_connected_time(tmp_path: Path) -> None:
    lines = ELAAD.read_text().split("\n")
    lines[1] = lines[1].replace("2019-01-02 16:10:00", "")
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines))
    raw = read_elaad(path)
    assert raw["departure"].iloc[0] == pd.Timestamp("2019-01-02T07:52:00Z") + pd.Timedelta(hours=8.3)


@pytest.mark.parametrize(
    ("old", "new", "why"),
    [
        ("TotalEnergy", "Energy", "missing required column(s) ['TotalEnergy']"),
        (
            ",15.75,7.36",
            ",15.75,7360",
            "row 3, field 'MaxPower': 7360 is implausibly large (check units: kW",
        ),
        (",15.75,7.36", ",15750,7.36", "row 3, field 'TotalEnergy': 15750 is implausibly large"),
        (
            "2019-01-02 12:30:00,2019-01-02 14:00:00",
            "2019-01-02 12:30:00,2019-01-02 11:00:00",
            "row 4, field",
        ),
        (",5.5,11.04", ",-5.5,11.04", "row 4, field 'TotalEnergy': negative energy"),
        ("2019-01-02 09:00:00", "soon", "row 5, field 'UTCTransactionStart': not a date and time"),
    ],
)
def test_bad_elaad_rows_name_row_and_field(tmp_path: Path, old: str, new: str, why: str) -> None:
    path = tmp_path / "t.csv"
    path.write_text(ELAAD.read_text().replace(old, new))
    with pytest.raises(ConfigError) as info:
        read_elaad(path)
    assert why in str(info.value) and str(info.value).startswith(str(path))
