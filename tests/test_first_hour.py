"""Issue 17, a new user's first hour: one test per defect met by following README.md and docs/ word for word.

Each test failed on the commit the issue was filed against (eb35efc); the documented commands themselves
run in ``tests/test_documented_commands.py``.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from envs.generate import generate_scenario
from envs.scenario import save_scenario

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    scenario = generate_scenario("depot", chargers=4, days=2, seed=1, step="1h")
    assert len(scenario.sessions) > 0
    return save_scenario(scenario, tmp_path_factory.mktemp("first-hour") / "depot")


def _invoke(*args: str) -> tuple[int, str]:
    from evdlm.cli import app

    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.output


def _one_error_line(code: int, output: str) -> str:
    """The single ``error:`` line of a failed command (no traceback)."""
    assert code == 2, output
    assert "Traceback" not in output
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, output
    return errors[0]


# --------------------------------------------------------------------------- 1. one tracking store


def test_one_rule_resolves_the_tracking_store_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from evdlm.tracking_uri import resolve_tracking_store
    from forecasting.tracking import default_tracking_uri
    from training.tracking import resolve_tracking, tracking_location

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    project = f"sqlite:///{(tmp_path / '.evdlm' / 'mlflow.db').resolve()}"
    assert resolve_tracking_store().uri == project
    assert resolve_tracking().tracking_uri == default_tracking_uri() == tracking_location()[0] == project
    assert (
        resolve_tracking_store().artifact_location == (tmp_path / ".evdlm" / "mlartifacts").resolve().as_uri()
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_store().uri == default_tracking_uri() == "http://127.0.0.1:5999"
    assert resolve_tracking_store().artifact_location is None  # a server decides
    explicit = f"sqlite:///{tmp_path / 'other' / 'runs.db'}"
    store = resolve_tracking_store(explicit)
    assert store.uri == explicit and store.source == "--tracking-uri"
    # a sqlite store keeps its artifacts beside the database, never in ./mlruns of the working directory
    assert store.artifact_location == (tmp_path / "other" / "mlartifacts").resolve().as_uri()


def test_evaluate_looks_for_registered_models_in_the_projects_store(
    small_folder: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    code, out = _invoke("evaluate", "-s", str(small_folder), "-p", "models:/evdlm-nothing/1", "--no-tracking")
    line = _one_error_line(code, out)
    assert "evdlm-nothing" in line
    assert (tmp_path / ".evdlm" / "mlflow.db").exists()  # where make run registers evdlm-demo
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()


def test_serve_has_the_tracking_option_of_every_command() -> None:
    for command in ("serve", "evaluate", "train", "tune", "run"):
        code, out = _invoke(command, "--help")
        assert code == 0 and "--tracking-uri" in out, command
    code, out = _invoke("forecast", "backtest", "--help")
    assert code == 0 and "--tracking-uri" in out


# --------------------------------------------------------------------------- 2. simulate without a server


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_simulate_says_when_nothing_listens(small_folder: Path) -> None:
    url = f"ws://127.0.0.1:{_closed_port()}"
    code, out = _invoke("simulate", "--scenario", str(small_folder), "--csms", url, "--wait-s", "0.5")
    line = _one_error_line(code, out)
    assert "nothing listens" in line and url in line and "evdlm serve" in line


def test_simulate_says_how_long_the_replay_takes() -> None:
    from evdlm.cli.serve import describe_duration

    two_days = 2 * 86400.0
    assert describe_duration(two_days, 60, None).endswith("about 48 min of wall time")
    assert "about 5 min" in describe_duration(two_days, 600, None)
    assert "about 20 s" in describe_duration(two_days, 60, 20.0)


# --------------------------------------------------------------------------- 3. error lines, not tracebacks


def test_a_site_yaml_that_is_not_utf8_is_one_error_naming_the_file(
    small_folder: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "latin1"
    folder.mkdir()
    for name in ("sessions.csv", "timeseries.csv"):
        (folder / name).write_bytes((small_folder / name).read_bytes())
    text = (small_folder / "site.yaml").read_text(encoding="utf-8")
    (folder / "site.yaml").write_bytes(text.replace("name:", "# caf\xe9\nname:", 1).encode("latin-1"))
    site = folder / "site.yaml"
    for args in (
        ("scenario", "check", str(folder)),
        ("evaluate", "-s", str(folder), "-p", "edf", "--no-tracking"),
        ("serve", "--site", str(site)),
    ):
        line = _one_error_line(*_invoke(*args))
        assert str(site) in line and "UTF-8" in line, args


# --------------------------------------------------------------------------- 4. the file's own text


def test_error_lines_quote_the_files_text_not_python(small_folder: Path, tmp_path: Path) -> None:
    def broken(name: str, edit: dict[str, object], file: str = "sessions.csv") -> str:
        folder = tmp_path / name
        folder.mkdir()
        for part in ("site.yaml", "sessions.csv", "timeseries.csv"):
            (folder / part).write_bytes((small_folder / part).read_bytes())
        frame = pd.read_csv(folder / file, dtype=str, keep_default_na=False)
        for column, value in edit.items():
            if column == "drop_row":
                frame = frame.drop(index=int(str(value))).reset_index(drop=True)
            else:
                frame.loc[0, column] = str(value)
        frame.to_csv(folder / file, index=False)
        return _one_error_line(*_invoke("scenario", "check", str(folder)))

    sessions = pd.read_csv(small_folder / "sessions.csv", dtype=str)
    arrival = sessions.loc[0, "arrival"]
    line = broken("times", {"departure": arrival})
    assert f"value {arrival}" in line and "Timestamp(" not in line
    line = broken("energy", {"energy_kwh": "45000"})
    assert "value 45000)" in line and "np.float64" not in line
    line = broken("gap", {"drop_row": 5}, "timeseries.csv")
    assert "step is 1h" in line or "step is 60min" in line
    assert "0 days" not in line and "T" in line.split("before ")[1]  # 2025-06-02T05:00:00+00:00


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (pd.Timestamp("2025-06-02 14:33:00", tz="UTC"), "2025-06-02T14:33:00+00:00"),
        (pd.Timedelta(minutes=15), "15min"),
        (pd.Timedelta(days=1), "24h"),
        (__import__("numpy").float64(45000.0), "45000"),
        (0.25, "0.25"),
        ("c01", "c01"),
    ],
)
def test_values_are_shown_as_files_write_them(value: object, text: str) -> None:
    from envs.scenario import shown

    assert shown(value) == text


def test_one_day_is_not_one_days(tmp_path: Path) -> None:
    folder = save_scenario(generate_scenario("depot", chargers=2, days=1, seed=1, step="1h"), tmp_path / "d")
    code, out = _invoke("scenario", "check", str(folder))
    assert code == 0 and "1 day at" in out and "1 days" not in out


# --------------------------------------------------------------------------- 5. ACN dates without a zone


def test_acn_dates_without_a_time_zone_are_refused(tmp_path: Path) -> None:
    from envs.config import ConfigError
    from envs.loaders import read_acn

    item = {
        "stationID": "c01",
        "connectionTime": "2018-04-25T11:08:04",
        "disconnectTime": "Wed, 25 Apr 2018 17:08:04 GMT",
        "kWhDelivered": 10.0,
        "sessionID": "a",
    }
    path = tmp_path / "acn.json"
    path.write_text(json.dumps({"_items": [item]}))
    with pytest.raises(ConfigError, match=r"_items\[0\].*connectionTime.*no time zone"):
        read_acn(path)
    item["connectionTime"] = "2018-04-25T13:08:04+02:00"  # an offset is as good as GMT
    path.write_text(json.dumps({"_items": [item]}))
    frame = read_acn(path)
    assert frame["arrival"].iloc[0] == pd.Timestamp("2018-04-25 11:08:04", tz="UTC")


# --------------------------------------------------------------------------- 6. documented commands


def test_a_backtest_too_long_for_the_scenario_names_the_option(small_folder: Path) -> None:
    line = _one_error_line(*_invoke("forecast", "backtest", "--scenario", str(small_folder), "--no-mlflow"))
    assert "--initial-train-days" in line and "1 days" not in line


def test_the_demo_serving_config_gets_its_secrets_from_one_command(tmp_path: Path) -> None:
    from serving.config import load_operator_token, load_passwords, load_serving_config

    config_dir = tmp_path / "configs" / "serving"
    config_dir.mkdir(parents=True)
    for name in ("demo.yaml", "demo-site.yaml"):
        (config_dir / name).write_bytes((REPO / "configs" / "serving" / name).read_bytes())
    config = config_dir / "demo.yaml"
    code, out = _invoke("secrets", "--config", str(config))
    assert code == 0, out
    cfg = load_serving_config(config)
    assert cfg.secrets_file is not None and cfg.secrets_file.stat().st_mode & 0o077 == 0
    passwords = load_passwords(cfg, environ={})
    assert set(passwords) == {st.id for st in cfg.stations} and all(len(p) >= 16 for p in passwords.values())
    assert load_operator_token(cfg, environ={})
    before = cfg.secrets_file.read_bytes()
    assert "not overwritten" in _one_error_line(*_invoke("secrets", "--config", str(config)))
    assert cfg.secrets_file.read_bytes() == before


# --------------------------------------------------------------------------- 7. make run's story


def test_make_run_shows_install_progress_and_no_licence_banner() -> None:
    makefile = (REPO / "Makefile").read_text()
    pip_lines = [line for line in makefile.splitlines() if "pip install" in line or "$(PIP)" in line]
    assert pip_lines and not any(" -q" in line for line in pip_lines)
    pyproject = (REPO / "pyproject.toml").read_text()
    assert 'license = "Apache-2.0"' in pyproject  # a TOML table prints setuptools' deprecation banner


def test_a_run_bounded_by_minutes_shows_minutes_and_steps() -> None:
    from training.progress import TrainingProgress

    now = [0.0]
    bar = TrainingProgress(10_000_000, 120.0, lambda: now[0])
    bar.num_timesteps = 0
    bar._on_training_start()
    now[0], bar.num_timesteps = 65.0, 21_506
    bar._on_step()
    text = bar.text()
    bar._on_training_end()
    assert "1:05 of 2:00 min" in text and "21,506 steps" in text
    assert "10,000,000" not in text and "10000000" not in text
    steps = TrainingProgress(1_000, None, lambda: now[0])
    steps.num_timesteps = 0
    steps._on_training_start()
    steps.num_timesteps = 500
    steps._on_step()
    assert "500/1000 steps" in steps.text()
    steps._on_training_end()


def test_the_training_summary_names_the_scenarios_it_was_measured_on() -> None:
    from training.rl_config import load_train_config, shipped_config
    from training.train import EvalPoint, TrainResult, describe_result, held_out_scenarios

    config = load_train_config(shipped_config("smoke"))
    point = EvalPoint(128, 60.0, 100.0, 95.0, 99.5, 5.26, 4.74, -0.51, 100.0, 0, 0, 0.0)
    result = TrainResult(
        config, "run", "sqlite:///x.db", "1", "runs:/run/policy", "models:/evdlm-smoke/1",
        Path("bundle"), Path("out"), 21_506, 120.0, (point,), point,
    )  # fmt: skip
    text = describe_result(result)
    names = [s.name for s in held_out_scenarios(config)]
    assert names and all(f"held-out scenario(s) {', '.join(names)}" in text for _ in names)
    assert "21,506 steps in 2.0 min" in text


def _report(seeds: tuple[int, ...]) -> object:
    from training.evaluate import evaluate

    scenario = generate_scenario("depot", chargers=3, days=1, seed=4, step="1h")
    return evaluate(["edf", "rule_based"], [scenario], seeds=list(seeds))


def test_tables_fit_120_columns_and_name_their_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    from evdlm.cli.train import _TABLE_COLUMNS, print_report

    report = _report((0, 1))
    print_report(report)  # type: ignore[arg-type]
    narrow = capsys.readouterr().out
    assert max(len(line) for line in narrow.splitlines()) <= 120
    assert "scenario generated-depot" in narrow or "scenario depot" in narrow
    assert "(mean of seeds 0, 1)" in narrow  # was 'mean of seeds )': the list was read as markup
    print_report(report, wide=True)  # type: ignore[arg-type]
    wide = capsys.readouterr().out
    for _, header, _ in _TABLE_COLUMNS:
        assert header in wide


def test_library_noise_is_kept_off_stderr(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import warnings

    from evdlm.cli import quiet_libraries

    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    shown_warnings: list[str] = []

    def record(message: object, *_: object, **__: object) -> None:
        shown_warnings.append(str(message))

    monkeypatch.setattr(warnings, "showwarning", record)
    quiet_libraries()
    assert os.environ["MLFLOW_LOGGING_LEVEL"] == "ERROR"
    library = os.path.join(os.sep, "venv", "site-packages", "mlflow", "pyfunc", "utils.py")
    warnings.showwarning(UserWarning("add type hints"), UserWarning, library, 1)
    warnings.showwarning(UserWarning("ours"), UserWarning, str(REPO / "envs" / "sim.py"), 1)
    assert shown_warnings == ["ours"]


# --------------------------------------------------------------------------- 8. serve's log


def test_serve_logs_ocpp_frames_only_at_debug() -> None:
    import logging

    from evdlm.cli.serve import FRAME_LOGGERS, quiet_frames

    saved = {name: logging.getLogger(name).level for name in FRAME_LOGGERS}
    try:
        quiet_frames("INFO")
        assert all(not logging.getLogger(name).isEnabledFor(logging.INFO) for name in FRAME_LOGGERS)
        for name in FRAME_LOGGERS:
            logging.getLogger(name).setLevel(logging.NOTSET)
        quiet_frames("DEBUG")
        assert logging.getLogger("ocpp").level == logging.NOTSET
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


# --------------------------------------------------------------------------- 9. minor


def test_tests_leave_no_mlflow_store_in_the_repository() -> None:
    """The conftest fixture points every test at a temporary store; a sqlite store keeps its artifacts
    beside the database. (``mlruns/`` in the repository root was left by the suite.)"""
    assert os.environ["MLFLOW_TRACKING_URI"].startswith("sqlite:///")
    assert str(REPO) not in os.environ["MLFLOW_TRACKING_URI"]
