"""Weather-forecast columns (forecasting/weather.py): loaded when present, never required, checked; used
by the clear-sky-index PV model when present; and the PV model's memory and switching between refits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.config import ConfigError
from envs.scenario import load_scenario, save_scenario
from forecasting.backtest import BacktestConfig, backtest, check_no_lookahead
from forecasting.clearsky import NO_WEATHER, ClearSkyIndexForecaster, ClearSkyIndexParams
from forecasting.data import series_spec
from forecasting.features import Location, clear_sky_shape
from forecasting.weather import synthetic_irradiance_forecast, weather_index
from tests.test_forecasting_clearsky import DAY, TZ, _pv
from tests.test_scenario import _folder, _timeseries_csv


def _with_weather(csv: str, irradiance: str = "450", cloud: str = "60") -> str:
    lines = csv.strip().split("\n")
    out = [lines[0] + ",irradiance_forecast_w_m2,cloud_cover_forecast_pct"]
    out += [f"{line},{irradiance},{cloud}" for line in lines[1:]]
    return "\n".join(out) + "\n"


def test_weather_columns_are_kept_checked_and_saved(tmp_path: Path) -> None:
    for sub in "abcd":
        (tmp_path / sub).mkdir()
    plain = load_scenario(_folder(tmp_path / "a"))
    assert "irradiance_forecast_w_m2" not in plain.timeseries.columns  # never required
    scn = load_scenario(_folder(tmp_path / "b", timeseries=_with_weather(_timeseries_csv())))
    assert scn.timeseries["irradiance_forecast_w_m2"].eq(450.0).all()
    assert scn.timeseries["cloud_cover_forecast_pct"].eq(60.0).all()
    again = load_scenario(save_scenario(scn, tmp_path / "saved"))
    assert again.equals(scn)
    with pytest.raises(ConfigError, match=r"cloud_cover_forecast_pct.*outside 0\.\.100"):
        load_scenario(_folder(tmp_path / "c", timeseries=_with_weather(_timeseries_csv(), cloud="140")))
    with pytest.raises(ConfigError, match="irradiance_forecast_w_m2"):
        load_scenario(_folder(tmp_path / "d", timeseries=_with_weather(_timeseries_csv(), irradiance="x")))


def test_weather_index_from_irradiance_or_cloud_cover() -> None:
    times = pd.date_range("2019-06-03T00:00:00Z", periods=4, freq="6h")
    cs = np.array([0.0, 0.5, 0.8, 0.01])  # night, sun, sun, dusk
    irr = pd.DataFrame({"irradiance_forecast_w_m2": [0.0, 250.0, np.nan, 5.0]}, index=times)
    k = weather_index(irr, times, cs)
    assert np.isnan(k[0]) and k[1] == pytest.approx(0.5) and np.isnan(k[2]) and np.isnan(k[3])
    both = irr.assign(cloud_cover_forecast_pct=[0.0, 0.0, 100.0, 0.0])
    k2 = weather_index(both, times, cs)
    assert k2[1] == pytest.approx(0.5)  # the irradiance wins where it is given
    assert k2[2] == pytest.approx(0.25)  # overcast: 1 - 0.75 (Kasten-Czeplak)


def _days_of_pv(days: int, seed: int) -> pd.Series:
    rng = np.random.default_rng(seed)
    return _pv(days, rng.uniform(0.1, 1.0, days), Location.for_timezone(TZ))


def test_a_good_weather_forecast_is_used_and_a_useless_one_is_not() -> None:
    s = _days_of_pv(35, 4)  # each day's weather drawn anew: the history alone cannot know tomorrow
    spec = series_spec("pv_kw", TZ)
    cfg = BacktestConfig(horizon_steps=DAY, origin_every_steps=24, initial_train_days=21, refit_every_days=7)
    plain = backtest(ClearSkyIndexForecaster(spec), s, cfg)
    good = synthetic_irradiance_forecast(s, 10.0, np.random.default_rng(0), 0.05, 0.05).to_frame()
    with_good = backtest(ClearSkyIndexForecaster(spec, weather=good), s, cfg)
    noise = pd.DataFrame(  # unrelated to the weather that came
        {"cloud_cover_forecast_pct": np.random.default_rng(1).uniform(0, 100, len(s))}, index=s.index
    )
    with_noise = backtest(ClearSkyIndexForecaster(spec, weather=noise), s, cfg)

    def mae(r: object) -> float:
        return float(np.abs(r.point - r.truth).mean())  # type: ignore[attr-defined]

    assert mae(with_good) < 0.3 * mae(plain)
    assert mae(with_noise) < 1.1 * mae(plain)
    fitted = ClearSkyIndexForecaster(spec, weather=good).fit(s.iloc[: 28 * DAY])
    assert fitted.weather_coef_ != NO_WEATHER
    assert fitted.with_weather(None).predict(s.index[28 * DAY], DAY, s.iloc[: 28 * DAY]).point.max() > 0
    # without weather the forecast is the model's own: the fitted blend needs the columns it was fitted on
    own = ClearSkyIndexForecaster(spec).fit(s.iloc[: 28 * DAY]).predict(s.index[28 * DAY], DAY)
    blind = fitted.with_weather(None).predict(s.index[28 * DAY], DAY)
    np.testing.assert_allclose(blind.point, own.point)


def test_no_look_ahead_in_the_history_with_weather() -> None:
    s = _days_of_pv(30, 5)
    good = synthetic_irradiance_forecast(s, 10.0, np.random.default_rng(0)).to_frame()
    model = ClearSkyIndexForecaster(series_spec("pv_kw", TZ), weather=good).fit(s.iloc[: 26 * DAY])
    check_no_lookahead(model, s, s.index[27 * DAY + 30], DAY, np.random.default_rng(2))


def test_a_grey_spell_that_turns_sunny_is_followed_between_refits() -> None:
    days = 32
    k = np.r_[np.full(24, 0.25), np.full(days - 24, 1.0)]  # three grey weeks, then sun every day
    s = _pv(days, k, Location.for_timezone(TZ))
    spec = series_spec("pv_kw", TZ)
    adaptive = ClearSkyIndexForecaster(spec).fit(s.iloc[: 24 * DAY])
    fixed = ClearSkyIndexForecaster(spec, ClearSkyIndexParams(adapt=False)).fit(s.iloc[: 24 * DAY])
    origin = 26 * DAY  # two sunny days after the fit, no refit
    truth = s.iloc[origin : origin + DAY].to_numpy()
    err_adaptive = np.abs(adaptive.predict(s.index[origin], DAY, s.iloc[:origin]).point - truth).mean()
    err_fixed = np.abs(fixed.predict(s.index[origin], DAY, s.iloc[:origin]).point - truth).mean()
    assert err_adaptive < 0.5 * err_fixed
    assert ClearSkyIndexForecaster(spec, ClearSkyIndexParams(memory_days=3.0)).fit(s).memory_days_ == 3.0
    with pytest.raises(ValueError, match="memory_days"):
        ClearSkyIndexParams(memory_days=0.0)
    cs = clear_sky_shape(pd.DatetimeIndex(s.index), Location.for_timezone(TZ), pd.Timedelta("15min"))
    assert cs.max() > 0
