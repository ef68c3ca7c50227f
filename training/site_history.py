"""Training on a site's own history (``env.history`` in a training config): the loaded history, its split,
the forecaster fitted on the training part, and the episode source every training env shares.

Built once per training run (:func:`training_history`) and handed to every env copy, the held-out
evaluation (the validation days, in chunks of ``window_days``) and the test scoring (the test days, in
chunks of 7 days): so the split, the forecaster and the precomputed forecast windows exist once.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from envs.forecast import ForecastProvider, PerfectForecast
from envs.history import Augmentation, HistoryEpisodes, HistorySplit, SiteHistory
from envs.scenario import Scenario
from training.rl_config import TrainConfig

if TYPE_CHECKING:
    from envs.episode import ForecastSource
    from training.held_out import EvalPoint

FORECAST_COLUMNS = ("base_load_kw", "pv_kw")
"""the series a fitted forecaster forecasts (prices are known day-ahead and passed through)"""
TEST_CHUNK_DAYS = 7


@dataclass(eq=False)
class TrainingHistory:
    """What a run on ``env.history`` shares: the history, its forecast provider and its episode source."""

    history: SiteHistory
    forecast: ForecastProvider
    episodes: HistoryEpisodes
    forecaster_path: Path | None = None
    """where the forecaster fitted on the training part was saved (None: loaded or perfect)"""

    def validation_scenarios(self) -> list[Scenario]:
        """The validation days in chunks of ``window_days`` (what checkpoints are chosen on)."""
        h = self.history
        return h.chunks(h.validation_days, h.split.window_days)

    def test_scenarios(self, days: int = TEST_CHUNK_DAYS) -> list[Scenario]:
        """The test days in chunks of ``days`` (weeks by default), never seen in training or validation."""
        return self.history.chunks(self.history.test_days, days)

    def split_lines(self) -> list[str]:
        lines = self.history.split_lines()
        lines.append(f"forecast   {describe_forecast(self)}")
        return lines


def describe_forecast(th: TrainingHistory) -> str:
    if th.forecaster_path is not None:
        return f"model fitted on the training part only, saved to {th.forecaster_path}"
    return str(getattr(th.forecast, "name", type(th.forecast).__name__))


def fit_forecaster(history: SiteHistory, out: Path) -> Path:
    """Fit the site's base-load and PV forecaster on the training part only and save it to ``out``."""
    from forecasting.provider import SiteForecaster

    fitted = SiteForecaster.fit_scenario(history.training_scenario(), columns=FORECAST_COLUMNS)
    return fitted.save(out)


def training_history(config: TrainConfig, out_dir: Path) -> TrainingHistory:
    """Load ``config.env.history``, split it, and set up its forecast: ``model`` without ``model_path`` fits
    one on the training part (saved in ``out_dir``); ``model`` with a path loads it; ``perfect``/``noisy``
    as in any training run."""
    spec = config.env.history
    if spec is None:
        raise ValueError("the config has no env.history")
    split = HistorySplit(spec.window_days, spec.validation_days, spec.test_days, spec.step)
    history = SiteHistory.load(config.history_folders(), split, name=config.name)
    f = config.env.forecast
    saved: Path | None = None
    if f.provider == "model" and not f.model_path:
        saved = fit_forecaster(history, out_dir / "forecaster.joblib")
        from forecasting.provider import ModelForecast

        provider = cast("ForecastProvider", ModelForecast.load(saved))
    else:
        from training.learner import forecast_provider

        provider = forecast_provider(f)
    a = spec.augment
    augmentation = Augmentation(
        a.resample_days, a.arrival_jitter_min, a.stay_jitter_pct, a.energy_jitter_pct, a.fleet_scale
    )
    from training.evaluate import DEFAULT_HORIZON

    horizon = max(DEFAULT_HORIZON, f.horizon_steps)
    source: ForecastSource = provider if type(provider) is not PerfectForecast else PerfectForecast()
    episodes = HistoryEpisodes(history, augmentation, source, horizon)
    return TrainingHistory(history, provider, episodes, saved)


def score_test(
    th: TrainingHistory,
    policy: str,
    timesteps: int,
    wall_s: float,
    baselines: tuple[str, ...] = ("rule_based",),
) -> EvalPoint:
    """The policy ``policy`` (a spec: bundle folder or ``models:/``) on the test weeks beside ``baselines``,
    with the forecaster of the training part, summed as one :class:`~training.held_out.EvalPoint`."""
    from training.evaluate import EnvOptions, evaluate
    from training.held_out import summarise

    options = EnvOptions(forecast=th.forecast, forecast_horizon=th.episodes.horizon)
    tests = th.test_scenarios()
    base = evaluate(list(baselines), tests, options=options).rows if baselines else []
    mine = evaluate([policy], tests, options=options).rows
    return summarise(mine, policy, base, timesteps, wall_s)
