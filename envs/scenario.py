"""Scenarios: a site, the EV sessions that visit it and the site's time series.

A scenario on disk is a folder with ``site.yaml``, ``sessions.csv`` and ``timeseries.csv`` (documented in
``docs/scenario-format.md``). In memory it is a frozen :class:`Scenario` holding the validated
:class:`~envs.config.SiteConfig` and two validated pandas frames. Bad input is a :class:`ConfigError`
naming the file, the row and the column, never a silent fix.

In memory every timestamp is ``datetime64[ns, UTC]``; on disk times are ISO 8601 with the offset of the
site's time zone. Rows in error messages are numbered as in the CSV file: the header is row 1, the first
record row 2.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pandas.tseries.frequencies import to_offset
from pandas.tseries.offsets import BaseOffset

from envs.config import ConfigError, SiteConfig, dump_site, load_site

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


@dataclass(frozen=True, eq=False)
class Scenario:
    """A site with its sessions and time series.

    ``sessions``: one row per EV visit, columns :data:`SESSION_REQUIRED` + :data:`SESSION_OPTIONAL`;
    ``arrival``/``departure`` are tz-aware timestamps, ``energy_kwh`` is what the driver asks for by
    departure, NaN in optional numeric columns means unknown.
    ``timeseries``: indexed by a regular tz-aware ``DatetimeIndex`` (the step start), columns
    :data:`TIMESERIES_COLUMNS` in kW and currency per kWh.

    ``==`` is identity (frames have no single truth value); compare contents with :meth:`equals`.
    """

    site: SiteConfig
    sessions: pd.DataFrame
    timeseries: pd.DataFrame
    name: str = "scenario"

    @property
    def step(self) -> pd.Timedelta:
        return grid_step(self.timeseries.index)

    @property
    def dt_h(self) -> float:
        """Length of one time-series step in hours."""
        return self.step.total_seconds() / 3600.0

    @property
    def start(self) -> pd.Timestamp:
        return pd.Timestamp(self.timeseries.index[0])

    @property
    def end(self) -> pd.Timestamp:
        """End of the last step (exclusive)."""
        return pd.Timestamp(self.timeseries.index[-1]) + self.step

    @property
    def n_steps(self) -> int:
        return len(self.timeseries)

    def with_timeseries(self, timeseries: pd.DataFrame) -> Scenario:
        return Scenario(self.site, self.sessions, validate_timeseries(timeseries, "<timeseries>"), self.name)

    def equals(self, other: Scenario) -> bool:
        """Same site, sessions and time series (values, dtypes and index); the name is not compared."""
        return (
            self.site == other.site
            and self.sessions.equals(other.sessions)
            and list(self.sessions.dtypes) == list(other.sessions.dtypes)
            and self.timeseries.equals(other.timeseries)
            and self.timeseries.index.equals(other.timeseries.index)
            and self.step == other.step
        )


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
    another resolution is fine (use :func:`resample_timeseries` to change it). Extra columns are dropped.
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
    out = out[list(TIMESERIES_COLUMNS)].copy()
    for col in TIMESERIES_COLUMNS:
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


# --------------------------------------------------------------------------- folder I/O


def load_scenario(path: str | Path, step: str | pd.Timedelta | None = None) -> Scenario:
    """Load a scenario folder; the time series is resampled to ``step`` when given."""
    folder = Path(path)
    if not folder.is_dir():
        raise ConfigError(f"{folder}: not a scenario folder")
    site = load_site(folder / "site.yaml")
    sessions_path = folder / "sessions.csv"
    ts_path = folder / "timeseries.csv"
    for p in (sessions_path, ts_path):
        if not p.exists():
            raise ConfigError(
                f"{p}: missing (a scenario folder holds site.yaml, sessions.csv, timeseries.csv)"
            )
    sessions_raw = read_csv(sessions_path, dtype={"session_id": str, "charger_id": str})
    ts_raw = read_csv(ts_path)
    sessions = validate_sessions(sessions_raw, site, str(sessions_path))
    ts = validate_timeseries(ts_raw, str(ts_path))
    if step is not None:
        ts = resample_timeseries(ts, step)
    check_consistency(site, sessions, ts, str(folder))
    return Scenario(site, sessions, ts, name=folder.name)


def read_csv(path: str | Path, **kwargs: object) -> pd.DataFrame:
    """``pandas.read_csv`` whose failures are :class:`ConfigError` naming the file."""
    try:
        return pd.read_csv(path, **kwargs)  # type: ignore[call-overload]
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path}: cannot parse CSV: {str(err).strip().splitlines()[0]}") from None


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write a scenario folder; the same scenario always gives the same bytes.

    Floats are written in their shortest exact form, so loading the folder gives back equal frames.
    Times are written in the site's time zone, with their offset. The :data:`SESSION_DECLARED` columns
    are written only where some session's declared values differ from its actual ones.
    """
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    dump_site(scenario.site, folder / "site.yaml")
    tz = scenario.site.timezone
    columns = list(SESSION_REQUIRED + SESSION_OPTIONAL)
    if not _declares(scenario.sessions):
        columns = [c for c in columns if c not in SESSION_DECLARED]
    sessions = scenario.sessions[columns].copy()
    for col in ("arrival", "departure", *(["declared_departure"] if "declared_departure" in columns else [])):
        sessions[col] = [t.isoformat() for t in pd.DatetimeIndex(sessions[col]).tz_convert(tz)]
    sessions.to_csv(folder / "sessions.csv", index=False, lineterminator="\n")
    ts = scenario.timeseries[list(TIMESERIES_COLUMNS)].copy()
    ts.insert(0, "timestamp", [t.isoformat() for t in pd.DatetimeIndex(ts.index).tz_convert(tz)])
    ts.to_csv(folder / "timeseries.csv", index=False, lineterminator="\n")
    return folder


def _declares(sessions: pd.DataFrame) -> bool:
    """Whether some session declared other values than its actual departure and energy."""
    if not all(c in sessions.columns for c in SESSION_DECLARED):
        return False
    same_departure = np.array_equal(
        sessions["declared_departure"].to_numpy(), sessions["departure"].to_numpy()
    )
    same_energy = np.array_equal(
        sessions["declared_energy_kwh"].to_numpy(), sessions["energy_kwh"].to_numpy()
    )
    return not (same_departure and same_energy)


def make_scenario(
    site: SiteConfig, sessions: pd.DataFrame, timeseries: pd.DataFrame, name: str = "scenario"
) -> Scenario:
    """Build a validated in-memory scenario (the same checks as loading a folder)."""
    checked_sessions = validate_sessions(sessions, site, f"{name}/sessions")
    checked_ts = validate_timeseries(timeseries, f"{name}/timeseries")
    check_consistency(site, checked_sessions, checked_ts, name)
    return Scenario(site, checked_sessions, checked_ts, name)


# --------------------------------------------------------------------------- summary


def _steps_since_start(scenario: Scenario, times: pd.Series) -> np.ndarray:
    delta_ns = pd.DatetimeIndex(times).as_unit("ns").asi8 - scenario.start.as_unit("ns").value
    return np.asarray(delta_ns / scenario.step.value, dtype=float)


def _ramp_profile(n_steps: int, starts: np.ndarray, ends: np.ndarray, power_kw: np.ndarray) -> np.ndarray:
    """Mean kW per step of boxes ``power_kw`` on ``[starts, ends)`` (in steps from the grid start).

    The integral of the summed boxes is a sum of ramps ``p * (max(t - a, 0) - max(t - e, 0))``; it is
    evaluated at the step edges with sorted cumulative sums, so the cost is O((S + K) log S).
    """
    x = np.concatenate([starts, ends])
    w = np.concatenate([power_kw, -power_kw])
    order = np.argsort(x, kind="stable")
    x, w = x[order], w[order]
    cum_w = np.concatenate([[0.0], np.cumsum(w)])
    cum_wx = np.concatenate([[0.0], np.cumsum(w * x)])
    edges = np.arange(n_steps + 1, dtype=float)
    k = np.searchsorted(x, edges, side="right")
    integral = edges * cum_w[k] - cum_wx[k]
    return np.asarray(np.diff(integral), dtype=float)


def session_rate_kw(scenario: Scenario) -> np.ndarray:
    """(S,) the fastest each session can charge, kW at the grid: min(charger rating, EV max)."""
    rated = {c.id: c.rated_power_kw for c in scenario.site.chargers}
    rated_kw = scenario.sessions["charger_id"].map(rated).to_numpy(float)
    return np.asarray(np.minimum(rated_kw, scenario.sessions["max_power_kw"].fillna(np.inf).to_numpy(float)))


def _grid_energy_kwh(scenario: Scenario) -> np.ndarray:
    eff = {c.id: c.efficiency for c in scenario.site.chargers}
    return np.asarray(
        scenario.sessions["energy_kwh"].to_numpy(float)
        / scenario.sessions["charger_id"].map(eff).to_numpy(float)
    )


def charger_load_kw(
    scenario: Scenario, mode: Literal["uncontrolled", "spread"] = "uncontrolled"
) -> np.ndarray:
    """(n_chargers, n_steps) mean kW per step of each charger, in the order of the site's chargers.

    ``mode`` is ``"uncontrolled"`` (see :func:`uncontrolled_load_kw`) or ``"spread"`` (see
    :func:`spread_load_kw`).
    """
    out = np.zeros((scenario.site.n_chargers, scenario.n_steps))
    if len(scenario.sessions) == 0:
        return out
    a, e, p = _session_boxes(scenario, mode)
    pos = scenario.sessions["charger_id"].map(scenario.site.charger_index()).to_numpy(int)
    for i in np.unique(pos):
        sel = pos == i
        out[i] = _ramp_profile(scenario.n_steps, a[sel], e[sel], p[sel])
    return out


def _session_boxes(
    scenario: Scenario, mode: Literal["uncontrolled", "spread"]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Start and end (in steps from the grid start) and kW of each session's charging box."""
    a = _steps_since_start(scenario, scenario.sessions["arrival"])
    d = _steps_since_start(scenario, scenario.sessions["departure"])
    grid_kwh = _grid_energy_kwh(scenario)
    if mode == "spread":
        return a, d, grid_kwh / ((d - a) * scenario.dt_h)
    rate_kw = session_rate_kw(scenario)
    return a, np.minimum(d, a + grid_kwh / rate_kw / scenario.dt_h), rate_kw


def uncontrolled_load_kw(scenario: Scenario) -> np.ndarray:
    """(n_steps,) EV load, mean kW per step, when every EV charges at full speed from arrival.

    Each EV draws min(charger rating, EV max) from its arrival until its energy (plus charging losses)
    is delivered or it leaves, whichever comes first.
    """
    if len(scenario.sessions) == 0:
        return np.zeros(scenario.n_steps)
    return _ramp_profile(scenario.n_steps, *_session_boxes(scenario, "uncontrolled"))


def spread_load_kw(scenario: Scenario) -> np.ndarray:
    """(n_steps,) EV load, mean kW per step, when every EV charges at one constant power over its stay.

    The flattest way to deliver every session's energy one EV at a time; its peak (with the base load)
    tells how low a site limit can go before energy is necessarily missed.
    """
    if len(scenario.sessions) == 0:
        return np.zeros(scenario.n_steps)
    return _ramp_profile(scenario.n_steps, *_session_boxes(scenario, "spread"))


@dataclass(frozen=True)
class ScenarioSummary:
    """Key figures of a scenario, printed by ``evdlm scenario check`` and logged by ``evdlm run``."""

    name: str
    site: str
    start: str
    """ISO 8601, site time zone"""
    days: float
    step_min: float
    n_chargers: int
    n_sessions: int
    energy_asked_kwh: float
    """sum of what drivers ask for (battery side)"""
    undeliverable_sessions: int
    """sessions asking more than their charger can deliver at full speed during the stay"""
    max_concurrent_evs: int
    peak_base_load_kw: float
    peak_pv_kw: float
    import_limit_kw: float
    uncontrolled_ev_peak_kw: float
    """peak mean kW per step of the EV load when every EV charges at full speed from arrival"""
    uncontrolled_site_peak_kw: float
    """peak net import with uncontrolled charging: base load + EVs - PV"""
    uncontrolled_steps_over_limit: int
    """steps where uncontrolled charging would import more than the limit"""
    spread_site_peak_kw: float
    """peak net import if every EV charged at one constant power over its whole stay"""

    @property
    def over_limit(self) -> bool:
        return self.uncontrolled_site_peak_kw > self.import_limit_kw

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def lines(self) -> list[str]:
        verdict = "EXCEEDS" if self.over_limit else "within"
        return [
            f"scenario            {self.name} (site {self.site})",
            f"period              {self.start}, {plural(self.days, 'day')} at {self.step_min:g} min steps",
            f"chargers            {self.n_chargers}",
            f"sessions            {self.n_sessions} (max {self.max_concurrent_evs} EVs at once, "
            f"{self.undeliverable_sessions} asking more than deliverable)",
            f"energy asked        {self.energy_asked_kwh:.1f} kWh",
            f"peak base load      {self.peak_base_load_kw:.1f} kW",
            f"peak PV             {self.peak_pv_kw:.1f} kW",
            f"import limit        {self.import_limit_kw:.1f} kW",
            f"uncontrolled EVs    peak {self.uncontrolled_ev_peak_kw:.1f} kW",
            f"uncontrolled site   peak {self.uncontrolled_site_peak_kw:.1f} kW: {verdict} the import limit "
            f"({self.uncontrolled_steps_over_limit} steps over)",
            f"spread charging     site peak {self.spread_site_peak_kw:.1f} kW",
        ]


def scenario_summary(scenario: Scenario) -> ScenarioSummary:
    """Sessions, energy asked, peak base load and what uncontrolled charging would peak at vs the limit."""
    ts = scenario.timeseries
    base = ts["base_load_kw"].to_numpy(float)
    pv = ts["pv_kw"].to_numpy(float)
    ev = uncontrolled_load_kw(scenario)
    site_uncontrolled = base + ev - pv
    spread = base + spread_load_kw(scenario) - pv
    s = scenario.sessions
    dwell_h = (s["departure"] - s["arrival"]).dt.total_seconds().to_numpy(float) / 3600.0
    undeliverable = int(np.sum(_grid_energy_kwh(scenario) > session_rate_kw(scenario) * dwell_h + 1e-9))
    if len(s):
        times = np.concatenate([s["arrival"].to_numpy(), s["departure"].to_numpy()])
        delta = np.concatenate([np.ones(len(s)), -np.ones(len(s))])
        order = np.lexsort((delta, times))  # departures before arrivals at the same instant
        max_concurrent = int(np.max(np.cumsum(delta[order])))
    else:
        max_concurrent = 0
    limit = scenario.site.grid.import_limit_kw
    return ScenarioSummary(
        name=scenario.name,
        site=scenario.site.name,
        start=scenario.start.tz_convert(scenario.site.timezone).isoformat(),
        days=(scenario.end - scenario.start).total_seconds() / 86400.0,
        step_min=scenario.step.total_seconds() / 60.0,
        n_chargers=scenario.site.n_chargers,
        n_sessions=len(s),
        energy_asked_kwh=float(s["energy_kwh"].sum()),
        undeliverable_sessions=undeliverable,
        max_concurrent_evs=max_concurrent,
        peak_base_load_kw=float(base.max()),
        peak_pv_kw=float(pv.max()),
        import_limit_kw=limit,
        uncontrolled_ev_peak_kw=float(ev.max()),
        uncontrolled_site_peak_kw=float(site_uncontrolled.max()),
        uncontrolled_steps_over_limit=int(np.sum(site_uncontrolled > limit + 1e-9)),
        spread_site_peak_kw=float(spread.max()),
    )
