"""Forecasting: history cleaning, models on series with planted structure, metrics, no look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forecasting.backtest import (
    BacktestConfig,
    LookAheadError,
    backtest,
    backtest_with_skill,
    check_no_lookahead,
    compute_metrics,
    pinball_loss,
)
from forecasting.data import ev_demand_frame, gbr_params, series_spec
from forecasting.features import Calendar, Location, clear_sky_shape
from forecasting.history import (
    CleaningRules,
    InsufficientHistoryError,
    clean_history,
    clean_values,
)
from forecasting.models import (
    Forecast,
    GBRParams,
    GradientBoostingForecaster,
    Persistence,
    SeasonalNaive,
    SeriesSpec,
    make_forecaster,
)
from forecasting.synthetic import arrival_rate_per_h, daily_profile_kw, synthetic_site_series

TZ = "Europe/Amsterdam"
DAY = 96
FAST = GBRParams(max_iter=30, max_rows=12_000, origin_stride_steps=8)


@pytest.fixture(scope="module")
def site_series() -> pd.DataFrame:
    return synthetic_site_series(days=28, seed=7, noise_kw=2.0)


def _spec(col: str) -> SeriesSpec:
    return series_spec(col, TZ)


def _fit(col: str, series: pd.Series, params: GBRParams = FAST) -> GradientBoostingForecaster:
    return GradientBoostingForecaster(_spec(col), gbr_params(col, params)).fit(series)


# --------------------------------------------------------------------------- history


def _series(values: np.ndarray, start: str = "2025-05-05T00:00:00+00:00") -> pd.Series:
    return pd.Series(values, index=pd.date_range(start, periods=len(values), freq="15min"), name="x")


def test_gaps_nan_and_stuck_meter_are_imputed_and_counted() -> None:
    rng = np.random.default_rng(0)
    v = 50 + rng.normal(0, 3, 3 * DAY)
    v[10:13] = np.nan  # short gap: last value
    v[150:170] = 42.0  # stuck meter: 20 identical values
    v[200:230] = np.nan  # long gap: the day before
    s = _series(v).drop(_series(v).index[250:252])  # two steps absent from the index
    clean = clean_history(s, CleaningRules())
    q = clean.quality
    assert q.n_missing == 3 + 30 + 2
    assert q.n_stuck == 20 - 7  # flagged from the 8th identical value on
    assert set(q.flags()) == {"missing", "stuck"}
    assert np.all(np.isfinite(clean.values)) and len(clean.values) == 3 * DAY
    assert np.all(clean.values[10:13] == v[9])
    # a long gap: the last value while it might still be short (causal), then the day before
    assert np.all(clean.values[200:204] == v[199])
    np.testing.assert_array_equal(clean.values[204:230], clean.values[204 - DAY : 230 - DAY])
    assert clean.imputed[157:170].all() and not clean.imputed[150:157].any()


def test_zero_runs_are_genuine_for_pv_but_stuck_for_base_load() -> None:
    v = np.tile(np.r_[np.zeros(40), np.linspace(1, 50, 56)], 2)
    assert clean_values(v, DAY, CleaningRules(allow_zero_runs=True))[3] == 0
    assert clean_values(v, DAY, CleaningRules(allow_zero_runs=False))[3] > 0


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.one_of(st.just(np.nan), st.just(5.0), st.floats(-100, 100)), min_size=2, max_size=300),
    st.integers(1, 299),
)
def test_cleaning_is_causal(values: list[float], cut: int) -> None:
    """Cleaning a series and cutting it equals cleaning the cut series (no look-ahead in imputation)."""
    raw = np.array(values)
    cut = min(cut, len(raw))
    rules = CleaningRules(max_fill_steps=2, stuck_steps=4)
    try:
        full = clean_values(raw, 8, rules)
    except InsufficientHistoryError:
        return
    try:
        part = clean_values(raw[:cut], 8, rules)
    except InsufficientHistoryError:
        assert full[4] >= cut  # the whole prefix was before the first valid value
        return
    n = len(part[0])
    np.testing.assert_array_equal(full[0][:n], part[0])
    np.testing.assert_array_equal(full[1][:n], part[1])
    assert np.all(np.isfinite(full[0]))


def test_hopeless_history_is_a_clear_error() -> None:
    with pytest.raises(InsufficientHistoryError, match="no valid value"):
        clean_history(_series(np.full(DAY, np.nan)), CleaningRules())
    v = np.full(2 * DAY, np.nan)
    v[:20] = np.arange(20.0)
    v[-5:] = 1.0
    with pytest.raises(InsufficientHistoryError, match="missing or stuck"):
        clean_history(_series(v), CleaningRules())


def test_stale_history_is_flagged_then_refused() -> None:
    s = _series(np.arange(3 * DAY, dtype=float) % 17)
    f = Persistence(SeriesSpec("x")).fit(s)
    fc = f.predict(s.index[-1] + pd.Timedelta("2h"), 8)  # 7 steps beyond the last reading
    assert fc.quality.stale_steps == 7 and "stale" in fc.quality.flags()
    assert np.all(np.isfinite(fc.point))
    with pytest.raises(InsufficientHistoryError, match="stale"):
        f.predict(s.index[-1] + pd.Timedelta("2D"), 8)


def test_naive_or_off_grid_timestamps_are_refused() -> None:
    s = _series(np.arange(DAY, dtype=float))
    f = Persistence(SeriesSpec("x")).fit(s)
    with pytest.raises(ValueError, match="grid"):
        f.predict(s.index[-1] + pd.Timedelta("20min"), 4)
    with pytest.raises(ValueError, match="timezone"):
        Persistence(SeriesSpec("x")).fit(
            pd.Series(np.ones(10), index=pd.date_range("2025-01-01", periods=10))
        )


# --------------------------------------------------------------------------- features and data


def test_calendar_is_local_time_with_holidays() -> None:
    times = pd.DatetimeIndex(["2025-12-25T23:30:00+00:00", "2025-12-26T23:30:00+00:00", "2025-06-02T10:00Z"])
    f = Calendar(TZ, extra_holidays=("2025-06-02",)).features(times)
    np.testing.assert_allclose(f[:, 0], [0.5, 0.5, 12.0])  # local hour (UTC+1 in winter, +2 in summer)
    np.testing.assert_array_equal(f[:, 1], [4, 5, 0])  # 26 Dec 2025 is a Friday, 27 Dec a Saturday
    np.testing.assert_array_equal(f[:, 2], [1, 0, 1])  # 26 Dec, not 27 Dec; the extra holiday
    np.testing.assert_array_equal(f[:, 3], [2, 1, 2])


def test_clear_sky_is_zero_at_night_and_peaks_near_solar_noon() -> None:
    times = pd.date_range("2025-06-21T00:00:00+00:00", periods=DAY, freq="15min")
    cs = clear_sky_shape(times, Location(52.37, 4.9), pd.Timedelta("15min"))
    assert cs[:8].max() == 0 and cs[-4:].max() == 0
    noon_utc_h = times[int(np.argmax(cs))].hour + times[int(np.argmax(cs))].minute / 60
    assert 11.0 <= noon_utc_h <= 12.5  # solar noon at 4.9 E is about 11:40 UTC
    assert 0.8 < cs.max() < 1.1


def test_ev_demand_counts_sessions_on_the_grid() -> None:
    index = pd.date_range("2025-05-05T00:00:00+00:00", periods=8, freq="15min")
    sessions = pd.DataFrame(
        {
            "arrival": pd.to_datetime(
                ["2025-05-05T00:05Z", "2025-05-05T00:14Z", "2025-05-05T01:00Z", "2025-05-06T00:00Z"], utc=True
            ),
            "energy_kwh": [10.0, 5.0, 7.5, 99.0],
        }
    )
    ev = ev_demand_frame(sessions, index)
    np.testing.assert_array_equal(ev["ev_arrivals"], [2, 0, 0, 0, 1, 0, 0, 0])
    np.testing.assert_array_equal(ev["ev_energy_kwh"], [15, 0, 0, 0, 7.5, 0, 0, 0])


# --------------------------------------------------------------------------- models


def test_baselines_read_the_right_lags() -> None:
    s = _series(np.arange(10 * DAY, dtype=float))
    now = s.index[-1] + pd.Timedelta("15min")
    n = len(s)
    assert np.all(Persistence(SeriesSpec("x")).fit(s).predict(now, 5).point == n - 1)
    day = SeasonalNaive(SeriesSpec("x"), "day").fit(s).predict(now, DAY + 3).point
    np.testing.assert_array_equal(day[:DAY], np.arange(n - DAY, n))
    np.testing.assert_array_equal(day[DAY:], np.arange(n - DAY, n - DAY + 3))  # two days back, known
    week = SeasonalNaive(SeriesSpec("x"), "week").fit(s).predict(now, 4).point
    np.testing.assert_array_equal(week, np.arange(n - 7 * DAY, n - 7 * DAY + 4))


def test_gbr_recovers_a_planted_daily_pattern(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"]
    cut = 21 * DAY
    model = _fit("base_load_kw", s.iloc[:cut])
    errs, naive_errs, planted_errs = [], [], []
    naive = SeasonalNaive(_spec("base_load_kw"), "day").fit(s.iloc[:cut])
    for d in range(21, 27):
        now = s.index[d * DAY]
        fc = model.predict(now, DAY, history=s.iloc[: d * DAY])
        truth = s.iloc[d * DAY : (d + 1) * DAY].to_numpy()
        cal = Calendar(TZ).features(fc.index)
        planted = daily_profile_kw(cal[:, 0], cal[:, 3])
        errs.append(np.abs(fc.point - truth).mean())
        planted_errs.append(np.abs(fc.point - planted).mean())
        naive_errs.append(np.abs(naive.predict(now, DAY, history=s.iloc[: d * DAY]).point - truth).mean())
    # the forecast follows the planted profile (level varies +-10 % by design) and beats yesterday's value
    assert np.mean(planted_errs) < 5.0
    assert np.mean(errs) < 0.8 * np.mean(naive_errs)


def test_gbr_pv_learns_the_weather_factor_on_top_of_clear_sky() -> None:
    index = pd.date_range("2025-05-05T00:00:00+00:00", periods=21 * DAY, freq="15min")
    cs = clear_sky_shape(index, Location.for_timezone(TZ), pd.Timedelta("15min"))
    rng = np.random.default_rng(3)
    pv = pd.Series(80.0 * cs * 0.6 * (1 + 0.05 * rng.standard_normal(len(index))), index=index, name="pv_kw")
    model = _fit("pv_kw", pv.iloc[: 20 * DAY])
    fc = model.predict(index[20 * DAY], DAY, history=pv.iloc[: 20 * DAY])
    expected = 80.0 * 0.6 * cs[20 * DAY :]
    assert np.abs(fc.point - expected).max() < 0.12 * expected.max()
    assert np.all(fc.point[cs[20 * DAY :] == 0] == 0)  # no PV at night


def test_quantiles_are_ordered_and_cover(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"]
    model = _fit("base_load_kw", s.iloc[: 21 * DAY])
    fc = model.predict(s.index[21 * DAY], DAY, history=s.iloc[: 21 * DAY])
    assert fc.quantile_levels == (0.1, 0.5, 0.9)
    assert np.all(np.diff(fc.quantiles, axis=0) >= 0)
    np.testing.assert_array_equal(fc.point, fc.quantile(0.5))
    assert np.mean(fc.quantile(0.9) - fc.quantile(0.1)) > 1.0  # a real band on a noisy series
    truth = s.iloc[21 * DAY : 22 * DAY].to_numpy()
    inside = np.mean((truth >= fc.quantile(0.1)) & (truth <= fc.quantile(0.9)))
    assert inside > 0.4
    assert list(fc.to_frame().columns) == ["point", "p10", "p50", "p90"]


def test_count_quantiles_find_the_planted_arrival_peak(site_series: pd.DataFrame) -> None:
    s = site_series["ev_arrivals"]
    model = _fit("ev_arrivals", s.iloc[: 21 * DAY])
    fc = model.predict(s.index[22 * DAY], DAY, history=s.iloc[: 22 * DAY])  # a Tuesday
    cal = Calendar(TZ).features(fc.index)
    rate = arrival_rate_per_h(cal[:, 0], cal[:, 3]) / 4.0
    assert np.all(fc.point == np.round(fc.point))  # counts
    assert fc.point[rate > 1.2].min() >= 1  # the median at the morning peak is at least one EV
    assert fc.point[rate < 0.05].max() == 0  # and zero at night


def test_gbr_is_deterministic_and_unfitted_copy_is_clean(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"].iloc[: 10 * DAY]
    a = _fit("base_load_kw", s)
    b = _fit("base_load_kw", s)
    now = s.index[-1] + pd.Timedelta("15min")
    np.testing.assert_array_equal(a.predict(now, 8).quantiles, b.predict(now, 8).quantiles)
    fresh = a.unfitted()
    assert fresh.models_ == [] and fresh.step is None and a.models_


def test_gbr_refuses_too_short_history() -> None:
    with pytest.raises(InsufficientHistoryError, match="more than one day"):
        _fit("base_load_kw", _series(np.arange(50.0)))


def test_damaged_history_gives_a_flagged_finite_forecast(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"].iloc[: 15 * DAY].copy()
    model = _fit("base_load_kw", s)
    bad = s.copy()
    bad.iloc[-300:-280] = np.nan
    bad.iloc[-100:-60] = bad.iloc[-100]  # stuck meter
    bad = bad.drop(bad.index[-10:])  # and the last 10 readings never arrived
    now = s.index[-1] + pd.Timedelta("15min")
    fc = model.predict(now, DAY, history=bad)
    assert np.all(np.isfinite(fc.point)) and np.all(np.isfinite(fc.quantiles))
    assert set(fc.quality.flags()) == {"missing", "stuck", "stale"}
    assert fc.quality.stale_steps == 10


# --------------------------------------------------------------------------- metrics and backtest


def test_metrics_values() -> None:
    truth = np.array([[1.0, 2.0, np.nan, 4.0]])
    point = np.array([[2.0, 2.0, 9.0, 1.0]])
    m = compute_metrics(truth, point)
    assert m.n == 3 and m.mae == pytest.approx(4 / 3) and m.rmse == pytest.approx(np.sqrt(10 / 3))
    assert m.bias == pytest.approx(-2 / 3) and m.coverage is None
    assert pinball_loss(np.array([1.0, 3.0]), np.array([2.0, 2.0]), 0.9) == pytest.approx((0.1 + 0.9) / 2)


@pytest.mark.parametrize(
    "model", ["gbr", "clear_sky_index", "seasonal_naive", "seasonal_naive_week", "persistence"]
)
def test_no_lookahead_in_any_model(model: str, site_series: pd.DataFrame) -> None:
    s = site_series["pv_kw"]
    f = make_forecaster(model, _spec("pv_kw"), gbr_params("pv_kw", FAST)).fit(s.iloc[: 15 * DAY])
    rng = np.random.default_rng(0)
    for now in (s.index[16 * DAY + 37], s.index[20 * DAY]):
        fc = check_no_lookahead(f, s, now, DAY, rng)
        assert isinstance(fc, Forecast) and fc.index[0] == now


class _Leaky(Persistence):
    """A cheat that peeks at the value at ``now``: the check must catch it."""

    def predict(self, now: pd.Timestamp, horizon: int, history: pd.Series | None = None) -> Forecast:
        fc = super().predict(now, horizon, history)
        assert history is not None
        peek = float(np.nan_to_num(history.get(now, 0.0)))
        return Forecast(fc.index, fc.point + peek, (), fc.quantiles, fc.quality)


def test_lookahead_check_catches_a_cheat(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"]
    cheat = _Leaky(_spec("base_load_kw")).fit(s.iloc[: 2 * DAY])
    with pytest.raises(LookAheadError):
        check_no_lookahead(cheat, s, s.index[3 * DAY], 8, np.random.default_rng(0))


def test_backtest_forecasts_before_t_ignore_data_from_t_on(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"].iloc[: 21 * DAY]
    cfg = BacktestConfig(origin_every_steps=DAY // 2, initial_train_days=10, refit_every_days=3)
    model = GradientBoostingForecaster(_spec("base_load_kw"), FAST)
    clean = backtest(model, s, cfg)
    t = 16 * DAY
    corrupted = s.copy()
    corrupted.iloc[t:] = 1e4
    dirty = backtest(model, corrupted, cfg)
    before = clean.origins <= s.index[t]
    assert before.sum() >= 10 and (~before).sum() >= 2
    np.testing.assert_array_equal(clean.point[before], dirty.point[before])
    np.testing.assert_array_equal(clean.quantiles[before], dirty.quantiles[before])
    assert not np.array_equal(clean.point[~before], dirty.point[~before])
    assert len(clean.fit_seconds) == 4  # refits at days 10, 13, 16, 19 (origins every 12 h to day 20)


def test_backtest_skill_against_seasonal_naive(site_series: pd.DataFrame) -> None:
    s = site_series["base_load_kw"]
    cfg = BacktestConfig(origin_every_steps=DAY, initial_train_days=14, refit_every_days=14)
    rep = backtest_with_skill(GradientBoostingForecaster(_spec("base_load_kw"), FAST), s, cfg)
    assert rep.result.truth.shape == (14, DAY) == rep.result.point.shape
    assert rep.skill("seasonal_naive_day") > 0.2
    naive = dict(rep.references)["seasonal_naive_day"]
    assert rep.skill("seasonal_naive_day") == pytest.approx(1 - rep.metrics.mae / naive.mae)
    assert rep.metrics.coverage is not None and len(rep.metrics.pinball) == 3
