"""Training on a site's own history (issue 14 items 1-2): the time-ordered split, windows of the training
part, augmentation within its bounds, the fitted forecaster, and the refusal of a perfect forecast in a
registered (deployable) policy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from envs.config import ConfigError
from envs.core import SiteArrays
from envs.history import Augmentation, HistoryEpisodes, HistorySplit, SiteHistory, augment_sessions
from envs.scenario import MAX_SESSION_ENERGY_KWH, load_scenario
from evdlm.cli import app
from training.rl_config import config_from_dict, load_train_config

FIXTURES = Path(__file__).parent / "fixtures"
COPIES = 3
"""the fixture's four real JPL days (Friday 1 to Monday 4 November 2019) and two copies 4 and 8 days later:
13 whole local days (the import's time series ends with the day of the last departure)"""


def _history_csv(path: Path, copies: int) -> Path:
    """The fixture's real JPL days repeated ``copies`` times, 4 days apart (ids made unique)."""
    raw = pd.read_csv(FIXTURES / "acn_jpl_2019-11-01.csv")
    parts = []
    for k in range(copies):
        part = raw.copy()
        for col in ("arrival", "departure", "estimated_departure"):
            t = pd.to_datetime(part[col], utc=True) + pd.Timedelta(days=4 * k)
            part[col] = t.dt.tz_convert("America/Los_Angeles").map(lambda x: x.isoformat(sep=" "))
        part["session_id"] = part["session_id"].astype(str) + f"-d{k}"
        parts.append(part)
    pd.concat(parts, ignore_index=True).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def history_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scenario folder of 13 days built with `evdlm scenario import --format acn-csv` (a generated
    time series on the site's local days)."""
    tmp = tmp_path_factory.mktemp("history")
    csv = _history_csv(tmp / "sessions.csv", COPIES)
    out = tmp / "jpl"
    result = CliRunner().invoke(
        app,
        [
            "scenario",
            "import",
            str(csv),
            "--format",
            "acn-csv",
            "--site",
            str(FIXTURES / "acn_csv_site.yaml"),
            "--out",
            str(out),
            "--step",
            "1h",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def _split() -> HistorySplit:
    return HistorySplit(window_days=1, validation_days=1, test_days=1, step="1h")


def test_the_split_is_time_ordered_and_never_shuffled(history_folder: Path) -> None:
    h = SiteHistory.load([history_folder], _split(), name="jpl")
    dates = [d.date for d in h.days]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    assert h.train_days[-1].date < h.validation_days[0].date < h.test_days[0].date
    assert (len(h.validation_days), len(h.test_days)) == (1, 1)
    assert len(h.train_days) == len(h.days) - 2 >= 3
    lines = h.split_lines()
    assert lines[1].startswith("train") and lines[3].startswith("test")
    assert f"{h.test_days[-1].date:%Y-%m-%d}" in lines[3]
    # every training window lies inside the training part
    episodes = HistoryEpisodes(h, horizon=4)
    last_train_stop = h.train_days[-1].stop
    rng = np.random.default_rng(0)
    for _ in range(10):
        ep = episodes.sample(h_site(h), rng, {}, horizon=4, allow_discharge=False, v2g_min_soc=0.2)
        assert ep.start_step + ep.n_steps <= last_train_stop
        day = next(d for d in h.train_days if d.start == ep.start_step)
        assert ep.n_steps == day.stop - day.start  # 25 steps on the day the clocks go back


def h_site(h: SiteHistory) -> SiteArrays:
    return SiteArrays.from_config(h.site)


def test_a_window_holds_the_recorded_sessions_of_its_days(history_folder: Path) -> None:
    h = SiteHistory.load([history_folder], _split(), name="jpl")
    episodes = HistoryEpisodes(h, horizon=4)
    rng = np.random.default_rng(1)
    frame = episodes.window_sessions(1, rng)
    day = h.train_days[1]
    seg = h.segments[0]
    t0 = seg.timeseries.index[day.start]
    t1 = seg.timeseries.index[day.stop - 1] + seg.step
    s = seg.sessions
    expected = s[(s["arrival"] < t1) & (s["departure"] > t0)]
    assert sorted(frame["session_id"]) == sorted(expected["session_id"])


def test_too_short_a_history_is_refused_with_the_numbers(history_folder: Path) -> None:
    with pytest.raises(ValueError, match="leave 11 for training, fewer than window_days 12"):
        SiteHistory.load([history_folder], HistorySplit(12, 1, 1, "1h"))


@pytest.fixture(scope="module")
def sessions(history_folder: Path) -> pd.DataFrame:
    return load_scenario(history_folder).sessions


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    jitter_min=st.floats(0, 120),
    stay_pct=st.floats(0, 50),
    energy_pct=st.floats(0, 50),
    scale=st.tuples(st.floats(0.5, 1.5), st.floats(0.5, 1.5)).map(sorted),
    seed=st.integers(0, 2**16),
)
def test_augmentation_stays_within_its_documented_bounds(
    sessions: pd.DataFrame,
    jitter_min: float,
    stay_pct: float,
    energy_pct: float,
    scale: list[float],
    seed: int,
) -> None:
    base = sessions
    aug = Augmentation(False, jitter_min, stay_pct, energy_pct, (scale[0], scale[1]))
    out = augment_sessions(base, aug, list(base["charger_id"].unique()), np.random.default_rng(seed))
    n = len(base)
    assert len(out) <= 2 * n
    if scale[1] <= 1.0:
        assert len(out) <= n
    if scale[0] >= 1.0:
        assert len(out) >= n
    orig = base.set_index("session_id")
    own = out[out["session_id"].isin(orig.index)].set_index("session_id")
    ref = orig.loc[own.index]
    moved_min = (own["arrival"] - ref["arrival"]).dt.total_seconds().abs() / 60.0
    assert (moved_min <= jitter_min + 1e-6).all()
    stay = (own["departure"] - own["arrival"]) / (ref["departure"] - ref["arrival"])
    assert ((stay >= 1 - stay_pct / 100 - 1e-9) & (stay <= 1 + stay_pct / 100 + 1e-9)).all()
    ratio = own["energy_kwh"] / ref["energy_kwh"]
    ok = (ratio >= 1 - energy_pct / 100 - 1e-9) & (ratio <= 1 + energy_pct / 100 + 1e-9)
    assert (ok | (own["energy_kwh"] == MAX_SESSION_ENERGY_KWH)).all()
    assert (out["departure"] > out["arrival"]).all()


@pytest.mark.parametrize(
    "bad",
    [
        {"arrival_jitter_min": 121.0},
        {"stay_jitter_pct": 51.0},
        {"energy_jitter_pct": -1.0},
        {"fleet_scale": (0.4, 1.0)},
        {"fleet_scale": (1.2, 1.1)},
    ],
)
def test_augmentation_outside_its_bounds_is_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        Augmentation(**bad)  # type: ignore[arg-type]


def test_resampled_days_keep_the_real_time_series(history_folder: Path) -> None:
    h = SiteHistory.load([history_folder], _split(), name="jpl")
    episodes = HistoryEpisodes(h, Augmentation(resample_days=True, arrival_jitter_min=30.0), horizon=4)
    site = h_site(h)
    ep = episodes.sample(
        site, np.random.default_rng(3), {"start_day": 2}, horizon=4, allow_discharge=False, v2g_min_soc=0.2
    )
    day = h.train_days[2]
    real = h.segments[0].timeseries["base_load_kw"].to_numpy()[day.start : day.stop]
    assert np.array_equal(ep.base_load_kw[: ep.n_steps], real)
    assert ep.sessions.size > 0


# --------------------------------------------------------------------------- configs


def _config(folder: Path, **extra: object) -> dict[str, object]:
    data: dict[str, object] = {
        "name": "history-smoke",
        "env": {
            "history": {
                "folders": [str(folder)],
                "window_days": 1,
                "validation_days": 1,
                "test_days": 1,
                "step": "1h",
            },
            "action_mode": "rule_setpoint_hedged",
            "allow_discharge": False,
            "forecast": {"provider": "model", "horizon_steps": 4},
        },
        "algorithm": {"name": "PPO", "n_steps": 48, "batch_size": 48, "n_epochs": 1, "net_arch": [8]},
        "training": {"total_timesteps": 192, "n_envs": 2, "checkpoint_every_steps": None},
        "evaluation": {"every_steps": 96, "baselines": ["rule_based"]},
        "tracking": {
            "experiment": "evdlm-history-test",
            "registered_model": "evdlm-history-test",
            "log_plots": False,
        },
    }
    data.update(extra)
    return data


def test_perfect_forecast_with_a_registered_model_is_one_error_line(tmp_path: Path) -> None:
    data = _config(tmp_path)
    data["env"]["forecast"] = {"provider": "perfect"}  # type: ignore[index]
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as err:
        load_train_config(path)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f"{path}: env.forecast.provider: 'perfect'")
    assert "tracking.registered_model" in msg and "research_only" in msg
    data["research_only"] = True
    path.write_text(yaml.safe_dump(data))
    assert load_train_config(path).research_only


def test_generator_and_history_together_are_refused(tmp_path: Path) -> None:
    data = _config(tmp_path)
    data["env"]["generator"] = {"kind": "depot"}  # type: ignore[index]
    with pytest.raises(ConfigError, match=r"env\.generator or env\.history"):
        config_from_dict(data, "x.yaml")


def test_a_history_config_takes_overrides(tmp_path: Path) -> None:
    config = config_from_dict(_config(tmp_path), "x.yaml")
    changed = config.with_overrides({"algorithm.learning_rate": 1e-4, "env.history.window_days": 2})
    assert changed.env.history is not None and changed.env.history.window_days == 2


def test_shipped_configs_say_they_are_research_only() -> None:
    from training.rl_config import shipped_config

    for name in ("peak_shaving", "v2g", "smoke"):
        config = load_train_config(shipped_config(name))
        assert config.research_only and config.env.forecast.provider == "perfect"


def test_a_config_with_env_history_trains_on_the_real_fixture(history_folder: Path, tmp_path: Path) -> None:
    from training.train import train

    config = config_from_dict(_config(history_folder), "history.yaml")
    result = train(config, out_dir=tmp_path / "run", tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    assert result.timesteps >= 192
    assert result.history is not None
    h = result.history.history
    assert h.train_days[-1].date < h.validation_days[0].date < h.test_days[0].date
    split = (tmp_path / "run" / "split.txt").read_text()
    assert "train" in split and "validation" in split and "test" in split
    assert "fitted on the training part only" in split
    assert (tmp_path / "run" / "forecaster.joblib").is_file()
    # the forecaster saw nothing after the training part
    from forecasting.provider import SiteForecaster

    fitted = SiteForecaster.load(tmp_path / "run" / "forecaster.joblib")
    assert fitted.trained_until is not None
    seg = h.segments[0]
    assert fitted.trained_until <= seg.timeseries.index[h.validation_days[0].start]
    start = result.evaluations[0]
    assert start.timesteps == 0 and start.rule_based_cost is not None
    # rule_setpoint_hedged: the untrained policy is the registered rule-based DLM, cost for cost
    assert start.cost_total == pytest.approx(start.rule_based_cost, rel=1e-12)
    assert result.selected is not None and result.selected.violations == 0
    assert result.test is not None and result.test.violations == 0 and result.test.rule_based_cost is not None
    # one artifact: the registered bundle carries the forecaster fitted on the training part, not a path to it
    carried = result.bundle_dir / "forecaster.joblib"
    assert carried.is_file()
    assert SiteForecaster.load(carried).trained_until == fitted.trained_until


# --------------------------------------------------------------------------- cheap resets


def test_prefetched_scenarios_are_the_generated_ones_and_repeat_with_the_seed() -> None:
    from envs.env import ChargingSiteEnv
    from envs.episodes import GeneratorSpec

    gen = {"kind": "depot", "chargers": 3, "days": 1, "seed": 10_000, "pv": True}

    def names(env: ChargingSiteEnv, resets: int) -> list[str]:
        out = []
        env.reset(seed=7)
        for _ in range(resets):
            _, info = env.reset()
            out.append(info["scenario"])
            seed = int(info["scenario"].rsplit("-s", 1)[-1])  # generated names end with -s<seed>
            direct = GeneratorSpec(**gen).generate(seed, "1h")  # type: ignore[arg-type]
            ids = set(direct.sessions["session_id"])
            assert set(env.episode.sessions.session_ids) <= ids
            assert env.episode.sessions.size + env.episode.dropped_sessions == len(ids)
        return out

    a = ChargingSiteEnv(generator={**gen, "prefetch": 2}, step="1h", forecast_horizon=2)
    b = ChargingSiteEnv(generator={**gen, "prefetch": 2}, step="1h", forecast_horizon=2)
    try:
        first, second = names(a, 4), names(b, 4)
    finally:
        a.close()
        b.close()
    assert first == second and len(set(first)) == 4


def test_prefetch_and_pool_do_not_mix() -> None:
    from envs.episodes import GeneratorSpec

    with pytest.raises(ValueError, match="prefetch"):
        GeneratorSpec.from_mapping({"pool": 4, "prefetch": 2})


def test_the_site_learning_benchmark_config_is_deployable_and_its_report_renders(tmp_path: Path) -> None:
    from benchmarks.site_learning import SITES, plot_curves, site_config, table

    config = site_config(SITES[1], tmp_path, minutes=1.0, eval_every=672, seed=0)
    assert config.env.forecast.provider == "model" and not config.research_only
    assert config.env.history is not None and config.env.history.test_days >= 21
    assert config.env.action_mode == "rule_setpoint_hedged" and config.training.n_envs == 2
    policies = {
        name: {"mean_cost": cost, "costs": [cost], "evs_short": 1, "violations": 0, "vs_rule_pct": None}
        | {"gap_to_optimum_pct": None}
        for name, cost in (("rule_based", 100.0), ("learned", 98.0))
    }
    result = {
        "site": "jpl-2019-09-01",
        "split": ["history ...", "train", "validation", "test"],
        "train_minutes": 1.0,
        "timesteps": 1344,
        "selected_timesteps": 672,
        "test_weeks": ["a", "b", "c"],
        "policies": policies,
        "checks": {"zero_violations": True},
        "curve": [
            {"minutes": 0.0, "timesteps": 0.0, "gap_to_optimum_pct": 5.0, "rule_gap_to_optimum_pct": 5.0},
            {"minutes": 1.0, "timesteps": 1344.0, "gap_to_optimum_pct": 3.0, "rule_gap_to_optimum_pct": 5.0},
        ],
    }
    text = table([result])
    assert "learned" in text and "zero_violations yes" in text
    png = plot_curves([result], tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
