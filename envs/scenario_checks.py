"""Validation of scenario inputs: the session table, the time series and their consistency with the site.

Bad input is a :class:`~envs.config.ConfigError` naming the file (``source``), the row and the column, never a
silent fix. Rows are numbered as in the CSV file: the header is row 1, the first record row 2.
:mod:`envs.scenario` builds its :class:`~envs.scenario.Scenario` from these checks.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

from envs.config import ConfigError, SiteConfig

SESSION_REQUIRED = ("session_id", "charger_id", "arrival", "departure", "energy_kwh")
SESSION_DECLARED = ("declared_departure", "declared_energy_kwh")
"""What the driver declared at plug-in (optional; an empty cell or no column: the actual value)."""
SESSION_OPTIONAL = (
    "max_power_kw",
    "battery_kwh",
    "arrival_soc",
    "departure_soc",
    "v2g",
    "priority",
    *SESSION_DECLARED,
)
TIMESERIES_COLUMNS = ("base_load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh")
TIMESERIES_WEATHER = ("irradiance_forecast_w_m2", "cloud_cover_forecast_pct")
"""Optional weather-forecast columns (the forecast for each step, issued before it): kept when present,
never required; the PV forecaster uses them (:mod:`forecasting.weather`)."""
WEATHER_RANGE = {"irradiance_forecast_w_m2": (0.0, 1500.0), "cloud_cover_forecast_pct": (0.0, 100.0)}
SESSION_DEFAULTS: dict[str, float | bool | int] = {
    "max_power_kw": np.nan,
    "battery_kwh": np.nan,
    "arrival_soc": np.nan,
    "departure_soc": np.nan,
    "v2g": False,
    "priority": 0,
}

MAX_SESSION_ENERGY_KWH = 1000.0
"""No EV battery holds more; a larger ``energy_kwh`` is taken for Wh given as kWh."""
MAX_EV_POWER_KW = 1000.0
"""No EV charges faster; a larger ``max_power_kw`` is taken for W given as kW."""
MAX_PRICE_PER_KWH = 10.0
"""Above this (in the currencies of :data:`_PRICE_CHECK_CURRENCIES`) a price is taken for per-MWh."""
_PRICE_CHECK_CURRENCIES = frozenset({"EUR", "USD", "GBP", "CHF", "CAD", "AUD", "NZD"})
_TIME_UNIT: Literal["ns"] = "ns"


def grid_step(index: pd.Index) -> pd.Timedelta:
    """The step of a regular DatetimeIndex (its ``freq``, else the first difference)."""
    freq = getattr(index, "freq", None)
    return pd.Timedelta(freq) if freq is not None else pd.Timedelta(index[1] - index[0])


def _as_freq(step: pd.Timedelta) -> BaseOffset:
    return to_offset(step)


# --------------------------------------------------------------------------- validation


def _fail(source: str, row: int | None, column: str, why: str) -> ConfigError:
    where = f"row {row}, " if row is not None else ""
    return ConfigError(f"{source}: {where}column {column!r}: {why}")


def shown(value: object) -> str:
    """A value as a file writes it, never a Python repr: ``2025-06-02T14:33:00+00:00`` (not
    ``Timestamp(...)``), ``45000`` (not ``np.float64(45000.0)``), ``15min`` (not ``0 days 00:15:00``)."""
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    if isinstance(value, pd.Timedelta):
        minutes = value.total_seconds() / 60.0
        return f"{minutes:g}min" if minutes < 120 else f"{minutes / 60.0:g}h"
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def plural(count: float, unit: str) -> str:
    """``1 day``, ``2 days``, ``1.5 days``."""
    return f"{count:.4g} {unit}" + ("" if count == 1 else "s")


def _first(mask: pd.Series | np.ndarray) -> int:
    return int(np.flatnonzero(np.asarray(mask))[0])


def _to_utc(values: pd.Series | pd.DatetimeIndex) -> pd.Series:
    return pd.Series(pd.DatetimeIndex(values).tz_convert("UTC").as_unit(_TIME_UNIT), index=None)


def _parse_times(values: pd.Series, source: str, column: str, *, optional: bool = False) -> pd.Series:
    """ISO 8601 strings with a UTC offset -> ``datetime64[ns, UTC]``; rows as in the CSV.

    ``optional``: empty cells are NaT instead of an error.
    """
    text = values.astype(str).str.strip()
    empty = values.isna().to_numpy() | (optional & (text == "").to_numpy())
    if empty.any() and not optional:
        raise _fail(source, _first(empty) + 2, column, "missing timestamp")
    no_offset = ~empty & ~text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True)
    if no_offset.any():
        row = _first(no_offset)
        raise _fail(
            source, row + 2, column, f"time {text.iloc[row]!r} has no UTC offset (ISO 8601 with offset)"
        )
    parsed = pd.to_datetime(text.where(~empty), errors="coerce", utc=True, format="ISO8601")
    if (parsed.isna() & ~empty).any():
        row = _first(parsed.isna() & ~empty)
        raise _fail(source, row + 2, column, f"not an ISO 8601 time: {text.iloc[row]!r}")
    return _to_utc(parsed)


def validate_sessions(df: pd.DataFrame, site: SiteConfig, source: str = "sessions.csv") -> pd.DataFrame:
    """Check and normalise a sessions frame; rows are numbered as in the CSV (header = row 1).

    Returns the sessions sorted by arrival (then id) with exactly the columns :data:`SESSION_REQUIRED` +
    :data:`SESSION_OPTIONAL`, times in UTC, optional columns filled with :data:`SESSION_DEFAULTS`.
    """
    df = df.rename(columns=lambda c: str(c).strip())
    missing = [c for c in SESSION_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{source}: missing required column(s) {missing}")
    unknown = [c for c in df.columns if c not in SESSION_REQUIRED + SESSION_OPTIONAL]
    if unknown:
        raise ConfigError(f"{source}: unknown column(s) {unknown}")
    out = df.copy().reset_index(drop=True)
    text = df.reset_index(drop=True)  # the file's own text, for the error lines
    for col in ("session_id", "charger_id"):
        empty = out[col].isna() | (out[col].astype(str).str.strip() == "")
        if empty.any():
            raise _fail(source, _first(empty) + 2, col, "missing")
        out[col] = out[col].astype(str).str.strip()
    for col, default in SESSION_DEFAULTS.items():
        if col not in out.columns:
            out[col] = default
    for col in SESSION_DECLARED:
        if col not in out.columns:
            out[col] = np.nan
    dup = out["session_id"].duplicated()
    if dup.any():
        row = _first(dup)
        raise _fail(source, row + 2, "session_id", f"duplicate id {out['session_id'].iloc[row]!r}")
    for col in ("arrival", "departure"):
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            if getattr(out[col].dt, "tz", None) is None:
                raise _fail(source, None, col, "timestamps must be timezone-aware")
            out[col] = _to_utc(out[col])
        else:
            out[col] = _parse_times(out[col], source, col)
    numeric = ("energy_kwh", "max_power_kw", "battery_kwh", "arrival_soc", "departure_soc", "priority")
    for col in (*numeric, "declared_energy_kwh"):
        raw = out[col]
        vals = pd.to_numeric(raw, errors="coerce")
        bad = vals.isna() & raw.notna() & (raw.astype(str).str.strip() != "")
        if bad.any():
            row = _first(bad)
            raise _fail(source, row + 2, col, f"not a number: {raw.iloc[row]!r}")
        out[col] = vals.astype(float)
    if out["energy_kwh"].isna().any():
        raise _fail(source, _first(out["energy_kwh"].isna()) + 2, "energy_kwh", "missing")
    _declared(out, source)
    prio = out["priority"].fillna(0.0)
    if (prio != np.round(prio)).any():
        row = _first(prio != np.round(prio))
        raise _fail(
            source, row + 2, "priority", f"must be a whole number (value {shown(text['priority'][row])})"
        )
    out["priority"] = prio.astype(np.int64)
    v2g = []
    for k, value in enumerate(out["v2g"]):
        try:
            v2g.append(_as_bool(value))
        except ValueError as err:
            raise _fail(source, k + 2, "v2g", str(err)) from None
    out["v2g"] = np.array(v2g, dtype=bool)

    rated = {c.id: c.rated_power_kw for c in site.chargers}
    eff = {c.id: c.efficiency for c in site.chargers}
    known = out["charger_id"].isin(rated)
    if not known.all():
        row = _first(~known)
        raise _fail(source, row + 2, "charger_id", f"unknown charger {out['charger_id'].iloc[row]!r}")
    dwell_h = (out["departure"] - out["arrival"]).dt.total_seconds() / 3600.0
    rate_kw = np.minimum(out["charger_id"].map(rated).to_numpy(float), out["max_power_kw"].fillna(np.inf))
    deliverable_kwh = rate_kw * out["charger_id"].map(eff).to_numpy(float) * dwell_h.clip(lower=0.0)
    room_kwh = out["battery_kwh"] * (1.0 - out["arrival_soc"].fillna(0.0))
    checks: list[tuple[str, pd.Series, str]] = [
        ("departure", out["departure"] <= out["arrival"], "departure is not after arrival"),
        ("energy_kwh", out["energy_kwh"] < 0, "negative energy"),
        (
            "energy_kwh",
            (out["energy_kwh"] > MAX_SESSION_ENERGY_KWH) | (out["energy_kwh"] > 10.0 * deliverable_kwh + 1.0),
            "implausibly large: more than ten times what the charger can deliver in the stay "
            "(check units: kWh, not Wh)",
        ),
        ("max_power_kw", out["max_power_kw"] <= 0, "must be positive"),
        ("max_power_kw", out["max_power_kw"] > MAX_EV_POWER_KW, "implausibly large (check units: kW, not W)"),
        ("battery_kwh", out["battery_kwh"] <= 0, "must be positive"),
        (
            "battery_kwh",
            out["battery_kwh"] > MAX_SESSION_ENERGY_KWH,
            "implausibly large (check units: kWh, not Wh)",
        ),
        ("arrival_soc", (out["arrival_soc"] < 0) | (out["arrival_soc"] > 1), "must lie in [0, 1]"),
        ("departure_soc", (out["departure_soc"] < 0) | (out["departure_soc"] > 1), "must lie in [0, 1]"),
        (
            "energy_kwh",
            out["energy_kwh"] > room_kwh.fillna(np.inf) + 1e-6,
            "more energy asked than the battery can take from its arrival state of charge",
        ),
    ]
    for col, mask, why in checks:
        if mask.any():
            row = _first(mask)
            value = text[col][row] if col in text.columns else out[col].iloc[row]
            raise _fail(source, row + 2, col, f"{why} (value {shown(value)})")
    out["_row"] = np.arange(len(out)) + 2
    out = out.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    # one EV per charger at a time: after sorting by arrival, consecutive sessions on a charger suffice
    order = out.sort_values(["charger_id", "arrival", "session_id"], kind="stable")
    same = order["charger_id"].to_numpy()[1:] == order["charger_id"].to_numpy()[:-1]
    overlap = same & (order["arrival"].to_numpy()[1:] < order["departure"].to_numpy()[:-1])
    if overlap.any():
        k = _first(overlap)
        prev, cur = order.iloc[k], order.iloc[k + 1]
        raise _fail(
            source,
            int(cur["_row"]),
            "arrival",
            f"session {cur['session_id']!r} arrives before session {prev['session_id']!r} (row "
            f"{int(prev['_row'])}) leaves charger {cur['charger_id']!r} (one EV per charger at a time)",
        )
    return out[list(SESSION_REQUIRED + SESSION_OPTIONAL)]


def _declared(out: pd.DataFrame, source: str) -> None:
    """Parse, check and fill (empty: the actual value) the :data:`SESSION_DECLARED` columns in place."""
    col = "declared_departure"
    raw = out[col]
    if pd.api.types.is_datetime64_any_dtype(raw):
        if getattr(raw.dt, "tz", None) is None:
            raise _fail(source, None, col, "timestamps must be timezone-aware")
        parsed = _to_utc(raw).set_axis(out.index)
    else:
        parsed = _parse_times(raw, source, col, optional=True)
    early = parsed.notna() & (parsed <= out["arrival"])
    if early.any():
        row = _first(early)
        raise _fail(source, row + 2, col, f"not after arrival (value {raw.iloc[row]!r})")
    out[col] = parsed.where(parsed.notna(), out["departure"])
    energy = out["declared_energy_kwh"]
    checks = [
        (energy < 0, "negative energy"),
        (energy > MAX_SESSION_ENERGY_KWH, "implausibly large (check units: kWh, not Wh)"),
    ]
    for mask, why in checks:
        if mask.any():
            row = _first(mask)
            raise _fail(source, row + 2, "declared_energy_kwh", f"{why} (value {energy.iloc[row]!r})")
    out["declared_energy_kwh"] = energy.fillna(out["energy_kwh"])


def _as_bool(value: object) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    text = str(value).strip().lower()
    if text in ("1", "1.0", "true", "yes", "y", "t"):
        return True
    if text in ("0", "0.0", "false", "no", "n", "f", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def validate_timeseries(df: pd.DataFrame, source: str = "timeseries.csv") -> pd.DataFrame:
    """Check a time-series frame; return it on a regular UTC index with :data:`TIMESERIES_COLUMNS`.

    Accepts a ``timestamp`` column or a DatetimeIndex. A grid with gaps is an error; a regular grid of
    another resolution is fine (use :func:`resample_timeseries` to change it). The optional weather
    columns (:data:`TIMESERIES_WEATHER`) are kept when present (complete, numeric, within
    :data:`WEATHER_RANGE`); other extra columns are dropped.
    """
    out = df.rename(columns=lambda c: str(c).strip())
    if "timestamp" in out.columns:
        ts = out["timestamp"]
        out = out.drop(columns="timestamp")
        if pd.api.types.is_datetime64_any_dtype(ts):
            if getattr(ts.dt, "tz", None) is None:
                raise _fail(source, None, "timestamp", "timestamps must carry a UTC offset")
            ts = _to_utc(ts)
        else:
            ts = _parse_times(ts.reset_index(drop=True), source, "timestamp")
        out.index = pd.DatetimeIndex(ts)
    if not isinstance(out.index, pd.DatetimeIndex):
        raise ConfigError(f"{source}: missing required column 'timestamp'")
    if out.index.tz is None:
        raise _fail(source, None, "timestamp", "timestamps must carry a UTC offset")
    missing = [c for c in TIMESERIES_COLUMNS if c not in out.columns]
    if missing:
        raise ConfigError(f"{source}: missing required column(s) {missing}")
    weather = tuple(c for c in TIMESERIES_WEATHER if c in out.columns)
    out = out[list(TIMESERIES_COLUMNS + weather)].copy()
    for col in TIMESERIES_COLUMNS + weather:
        vals = pd.to_numeric(out[col], errors="coerce")
        bad = vals.isna() | ~np.isfinite(vals.to_numpy(dtype=float, na_value=np.nan))
        if bad.any():
            row = _first(bad)
            raise _fail(source, row + 2, col, f"missing or not a number: {out[col].iloc[row]!r}")
        out[col] = vals.astype(float)
    for col in ("base_load_kw", "pv_kw"):
        neg = out[col] < 0
        if neg.any():
            row = _first(neg)
            raise _fail(source, row + 2, col, f"negative power {out[col].iloc[row]}")
    for col in weather:
        lo, hi = WEATHER_RANGE[col]
        outside = (out[col] < lo) | (out[col] > hi)
        if outside.any():
            row = _first(outside)
            raise _fail(source, row + 2, col, f"{out[col].iloc[row]} is outside {lo:g}..{hi:g}")
    if len(out) < 2:
        raise ConfigError(f"{source}: needs at least two rows")
    idx = pd.DatetimeIndex(out.index).tz_convert("UTC").as_unit(_TIME_UNIT)
    steps = np.diff(idx.asi8)
    if (steps <= 0).any():
        row = _first(steps <= 0) + 1
        raise _fail(source, row + 2, "timestamp", f"timestamps must increase strictly ({shown(idx[row])})")
    values, counts = np.unique(steps, return_counts=True)
    expected = int(values[np.argmax(counts)])  # the most common step is the grid's resolution
    grid = pd.Timedelta(expected, unit="ns")
    if (steps != expected).any():
        row = _first(steps != expected) + 1
        raise _fail(
            source,
            row + 2,
            "timestamp",
            f"gap or irregular step before {shown(idx[row])} (the grid's step is {shown(grid)})",
        )
    out.index = pd.DatetimeIndex(idx, freq=_as_freq(grid))
    out.index.name = "timestamp"
    return out


def resample_timeseries(df: pd.DataFrame, step: str | pd.Timedelta) -> pd.DataFrame:
    """Resample a validated time series to ``step`` by time-weighted averaging.

    Each row holds from its timestamp to the next, so a coarser grid averages (kW and prices are mean
    values over the new step) and a finer grid repeats. Steps that are not multiples of each other are
    handled exactly; when the span is not a whole number of new steps, the last new step averages the
    part that is covered.
    """
    target = pd.Timedelta(step)
    if target <= pd.Timedelta(0):
        raise ConfigError(f"resampling step must be positive, got {step!r}")
    current = grid_step(df.index)
    if target == current:
        return df
    cur_s, tgt_s = current.total_seconds(), target.total_seconds()
    span_s = len(df) * cur_s
    n_new = math.ceil(span_s / tgt_s - 1e-9)
    old_edges = np.arange(len(df) + 1) * cur_s
    new_edges = np.minimum(np.arange(n_new + 1) * tgt_s, span_s)
    values = df.to_numpy(dtype=float)
    integral = np.vstack([np.zeros((1, values.shape[1])), np.cumsum(values * cur_s, axis=0)])
    at_new = np.column_stack([np.interp(new_edges, old_edges, col) for col in integral.T])
    resampled = np.diff(at_new, axis=0) / np.diff(new_edges)[:, None]
    index = pd.date_range(df.index[0], periods=n_new, freq=target)
    out = pd.DataFrame(resampled, index=pd.DatetimeIndex(index, freq=_as_freq(target)), columns=df.columns)
    out.index.name = "timestamp"
    return out


def check_consistency(
    site: SiteConfig, sessions: pd.DataFrame, timeseries: pd.DataFrame, source: str = "scenario"
) -> None:
    """Cross-checks between validated parts: sessions inside the time series, plausible magnitudes."""
    start = timeseries.index[0]
    end = timeseries.index[-1] + grid_step(timeseries.index)
    early = sessions["arrival"] < start
    if early.any():
        first = sessions.iloc[_first(early)]
        raise ConfigError(
            f"{source}: session {first['session_id']!r} arrives at {shown(first['arrival'])}, "
            f"before the time series starts ({shown(start)})"
        )
    late = sessions["departure"] > end
    if late.any():
        first = sessions.iloc[_first(late)]
        raise ConfigError(
            f"{source}: session {first['session_id']!r} departs at {shown(first['departure'])}, "
            f"after the time series ends ({shown(end)})"
        )
    limit = site.grid.import_limit_kw
    base = timeseries["base_load_kw"]
    if (base > 10.0 * limit).any():
        row = _first(base > 10.0 * limit)
        raise _fail(
            f"{source} timeseries",
            row + 2,
            "base_load_kw",
            f"{shown(base.iloc[row])} is over ten times the import limit {shown(limit)} kW "
            "(check units: kW, not W)",
        )
    if site.pv is not None:
        pv = timeseries["pv_kw"]
        if (pv > 2.0 * site.pv.peak_kw).any():
            row = _first(pv > 2.0 * site.pv.peak_kw)
            raise _fail(
                f"{source} timeseries",
                row + 2,
                "pv_kw",
                f"{shown(pv.iloc[row])} is over twice the installed {shown(site.pv.peak_kw)} kWp "
                "(check units: kW, not W)",
            )
    if site.tariff.currency.upper() in _PRICE_CHECK_CURRENCIES:
        for col in ("import_price_per_kwh", "export_price_per_kwh"):
            big = timeseries[col].abs() > MAX_PRICE_PER_KWH
            if big.any():
                row = _first(big)
                raise _fail(
                    f"{source} timeseries",
                    row + 2,
                    col,
                    f"{shown(timeseries[col].iloc[row])} {site.tariff.currency} per kWh is implausible "
                    "(check units: per kWh, not per MWh)",
                )
