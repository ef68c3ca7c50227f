"""PV through its clear-sky index (forecasting.clearsky): planted weather, a wrong location, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import BacktestConfig, backtest, check_no_lookahead
from forecasting.clearsky import ClearSkyIndexForecaster, ClearSkyIndexParams, _quiet_nanquantile
from forecasting.data import series_spec, site_model
from forecasting.features import Location, clear_sky_shape
from forecasting.models import make_forecaster

DAY = 96
TZ = "America/Los_Angeles"


def _pv(days: int, index_of_day: np.ndarray, location: Location) -> pd.Series:
    """PV of a 10 kWp array under the sky of ``location`` (clear-sky shape x each day's index), on a
    grid starting at local midnight."""
    start = pd.Timestamp("2019-06-03", tz=TZ).tz_convert("UTC")
    index = pd.date_range(start, periods=days * DAY, freq="15min")
    cs = clear_sky_shape(index, location, pd.Timedelta("15min"))
    return pd.Series(10.0 * cs * np.repeat(index_of_day, DAY), index=index, name="pv_kw")


def test_fast_quantile_matches_numpy() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 9, 7))
    x[rng.random(x.shape) < 0.3] = np.nan
    x[0, :, 0] = np.nan  # a slice with nothing known
    for q in (0.0, 0.1, 0.5, 0.9, 1.0):
        with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
            want = np.nanquantile(x, q, axis=1)
        np.testing.assert_allclose(_quiet_nanquantile(x, q, axis=1), want, equal_nan=True)
    both = _quiet_nanquantile(x[1:], np.array([0.1, 0.9]), axis=1)
    assert both.shape == (2, 4, 7)


def test_alternating_weather_beats_yesterday_where_naive_fails() -> None:
    """Sunny and overcast days alternate: yesterday is always the wrong day, the index median is not."""
    days = 35
    k = np.where(np.arange(days) % 2 == 0, 1.0, 0.3)
    s = _pv(days, k, Location.for_timezone(TZ))
    cfg = BacktestConfig(horizon_steps=DAY, origin_every_steps=DAY, initial_train_days=21, refit_every_days=7)
    spec = series_spec("pv_kw", TZ)
    csi = backtest(make_forecaster("clear_sky_index", spec), s, cfg).metrics().mae
    naive = backtest(make_forecaster("seasonal_naive", spec), s, cfg).metrics().mae
    assert csi < 0.75 * naive


def test_a_wrong_location_does_not_cut_the_day_short() -> None:
    """PV of Amsterdam's long June days, on a site whose location is Los Angeles: the envelope comes from
    the site's own history, so output where LA's sun has already set is still forecast (the pvlib-ratio
    model of gbr forecasts 0 there)."""
    days = 22
    s = _pv(days, np.ones(days), Location(52.37, -130.0))  # Amsterdam's latitude, its noon on LA's clock
    model = ClearSkyIndexForecaster(series_spec("pv_kw", TZ)).fit(s.iloc[: 21 * DAY])
    fc = model.predict(s.index[21 * DAY], DAY, history=s.iloc[: 21 * DAY])
    truth = s.iloc[21 * DAY :].to_numpy()
    la = clear_sky_shape(pd.DatetimeIndex(fc.index), Location.for_timezone(TZ), pd.Timedelta("15min"))
    late = (la < 0.02) & (truth > 0.5)  # sun in the data, none in LA's sky
    assert late.sum() >= 4
    np.testing.assert_allclose(fc.point[late], truth[late], rtol=0.1)
    assert np.abs(fc.point - truth).max() < 0.05 * truth.max()
    night = truth == 0
    assert np.all(fc.point[night] == 0.0)


def test_quantiles_ordered_nonnegative_and_fitted_settings() -> None:
    rng = np.random.default_rng(1)
    days = 30
    s = _pv(days, rng.uniform(0.1, 1.0, days), Location.for_timezone(TZ))
    s.iloc[5 * DAY + 40 : 5 * DAY + 50] = np.nan  # a gap: imputed, not a failure
    model = ClearSkyIndexForecaster(series_spec("pv_kw", TZ)).fit(s.iloc[: 28 * DAY])
    assert set(model.settings_) == {
        "window_days",
        "envelope_quantile",
        "index_quantile",
        "persistence_weight",
        "intraday_tau_h",
    }
    fc = model.predict(s.index[28 * DAY + 50], DAY, history=s.iloc[: 28 * DAY + 50])
    assert fc.quantiles.shape == (3, DAY)
    assert np.all(np.diff(fc.quantiles, axis=0) >= 0) and np.all(fc.quantiles >= 0)
    np.testing.assert_array_equal(fc.point, fc.quantile(0.5))
    fixed = ClearSkyIndexParams(
        window_days=7, envelope_quantile=1.0, index_quantile=0.5, persistence_weight=0.0, intraday_tau_h=1.0
    )
    m2 = ClearSkyIndexForecaster(series_spec("pv_kw", TZ), fixed).fit(s.iloc[: 28 * DAY])
    assert m2.settings_["window_days"] == 7 and m2.mode_ == "index"
    with pytest.raises(ValueError, match="window_days"):
        ClearSkyIndexParams(window_days=40)


def test_no_lookahead_and_short_history() -> None:
    rng = np.random.default_rng(2)
    days = 12
    s = _pv(days, rng.uniform(0.2, 1.0, days), Location.for_timezone(TZ))
    model = ClearSkyIndexForecaster(series_spec("pv_kw", TZ)).fit(s.iloc[: 2 * DAY])  # two days only
    for now in (s.index[9 * DAY], s.index[9 * DAY + 45]):
        fc = check_no_lookahead(model, s, now, DAY, rng)
        assert np.all(np.isfinite(fc.point))


def test_site_models_forecast_pv_through_the_clear_sky_index() -> None:
    assert site_model("pv_kw") == "clear_sky_index"
    assert site_model("base_load_kw") == "gbr" and site_model("pv_kw", "seasonal_naive") == "seasonal_naive"
