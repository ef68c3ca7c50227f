"""``evdlm scenario generate|import|check`` through typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from envs.scenario import load_scenario
from evdlm.cli.scenario import scenario_app

FIX = Path(__file__).parent / "fixtures"
runner = CliRunner()


def test_generate_twice_gives_the_same_bytes_and_a_summary(tmp_path: Path) -> None:
    args = ["generate", "--kind", "residential", "--chargers", "5", "--days", "2", "--seed", "4"]
    first = runner.invoke(scenario_app, [*args, "--out", str(tmp_path / "a")])
    second = runner.invoke(scenario_app, [*args, "--out", str(tmp_path / "b")])
    assert first.exit_code == 0, first.output
    assert second.exit_code == 0, second.output
    for name in ("site.yaml", "sessions.csv", "timeseries.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    scn = load_scenario(tmp_path / "a")
    assert f"sessions            {len(scn.sessions)} " in first.output
    assert f"import limit        {scn.site.grid.import_limit_kw:.1f} kW" in first.output


def test_check_prints_the_summary(tmp_path: Path) -> None:
    runner.invoke(scenario_app, ["generate", "--chargers", "4", "--days", "1", "--out", str(tmp_path / "s")])
    result = runner.invoke(scenario_app, ["check", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    for key in ("sessions", "energy asked", "peak base load", "uncontrolled site", "import limit"):
        assert key in result.output
    hourly = runner.invoke(scenario_app, ["check", str(tmp_path / "s"), "--step", "1h"])
    assert hourly.exit_code == 0 and "at 60 min steps" in hourly.output


def test_bad_input_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    runner.invoke(
        scenario_app,
        ["generate", "--kind", "workplace", "--chargers", "3", "--days", "1", "--out", str(tmp_path / "s")],
    )
    sessions = tmp_path / "s" / "sessions.csv"
    lines = sessions.read_text().split("\n")
    cells = lines[1].split(",")
    cells[3] = cells[2]  # departure = arrival
    lines[1] = ",".join(cells)
    sessions.write_text("\n".join(lines))
    result = runner.invoke(scenario_app, ["check", str(tmp_path / "s")])
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert result.stderr.startswith(f"error: {sessions}: row 2, column 'departure': departure is not after")
    assert "Traceback" not in result.output

    missing = runner.invoke(scenario_app, ["check", str(tmp_path / "nothing")])
    assert missing.exit_code == 2 and "not a scenario folder" in missing.stderr

    bad_start = runner.invoke(
        scenario_app, ["generate", "--start", "2025-06-02", "--out", str(tmp_path / "x")]
    )
    assert bad_start.exit_code == 2 and "UTC offset" in bad_start.stderr


def test_import_acn_reports_drops_and_writes_a_native_folder(tmp_path: Path) -> None:
    out = tmp_path / "acn"
    result = runner.invoke(
        scenario_app,
        ["import", str(FIX / "acn_sessions.json"), "--format", "acn", "--site", str(FIX / "acn_site.yaml"),
         "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "imported 4 sessions, dropped 1 (1 unknown charger)" in result.output
    assert (out / "dropped_sessions.csv").read_text().count("\n") == 2
    assert len(load_scenario(out).sessions) == 4
    assert runner.invoke(scenario_app, ["check", str(out)]).exit_code == 0


def test_import_elaad_with_auto_mapping_and_timeseries_errors(tmp_path: Path) -> None:
    out = tmp_path / "elaad"
    args = [
        "import",
        str(FIX / "elaad_transactions.csv"),
        "--format",
        "elaad",
        "--site",
        str(FIX / "elaad_site.yaml"),
    ]
    result = runner.invoke(scenario_app, [*args, "--out", str(out), "--map-chargers", "auto"])
    assert result.exit_code == 0, result.output
    assert "imported 5 sessions, dropped none" in result.output
    bad = runner.invoke(scenario_app, [*args, "--out", str(out), "--timeseries", str(tmp_path / "none.csv")])
    assert bad.exit_code == 2 and "none.csv: no such file" in bad.stderr
    bad_site = runner.invoke(scenario_app, [*args[:-1], str(FIX / "acn_sessions.json"), "--out", str(out)])
    assert bad_site.exit_code == 2 and "error: " in bad_site.stderr
