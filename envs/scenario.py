"""Scenarios: a site, the EV sessions that visit it and the site's time series.

A scenario on disk is a folder with ``site.yaml``, ``sessions.csv`` and ``timeseries.csv`` (documented in
``docs/scenario-format.md``). In memory it is a frozen :class:`Scenario` holding the validated
:class:`~envs.config.SiteConfig` and two validated pandas frames. Bad input is a :class:`ConfigError`
naming the file, the row and the column, never a silent fix.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from envs.config import ConfigError, SiteConfig, dump_site, load_site

SESSION_REQUIRED = ("session_id", "charger_id", "arrival", "departure", "energy_kwh")
SESSION_OPTIONAL = ("max_power_kw", "battery_kwh", "arrival_soc", "departure_soc", "v2g", "priority")
TIMESERIES_COLUMNS = ("base_load_kw", "pv_kw", "import_price_per_kwh", "export_price_per_kwh")
SESSION_DEFAULTS: dict[str, float | bool | int] = {
    "max_power_kw": np.nan,
    "battery_kwh": np.nan,
    "arrival_soc": np.nan,
    "departure_soc": np.nan,
    "v2g": False,
    "priority": 0,
}


@dataclass(frozen=True)
class Scenario:
    """A site with its sessions and time series.

    ``sessions``: one row per EV visit, columns :data:`SESSION_REQUIRED` + :data:`SESSION_OPTIONAL`;
    ``arrival``/``departure`` are tz-aware timestamps, ``energy_kwh`` is what the driver asks for by
    departure, NaN in optional numeric columns means unknown.
    ``timeseries``: indexed by a regular tz-aware ``DatetimeIndex`` (the step start), columns
    :data:`TIMESERIES_COLUMNS` in kW and currency per kWh.
    """

    site: SiteConfig
    sessions: pd.DataFrame
    timeseries: pd.DataFrame
    name: str = "scenario"

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(self.timeseries.index.freq or (self.timeseries.index[1] - self.timeseries.index[0]))

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


# --------------------------------------------------------------------------- validation


def _fail(source: str, row: int | None, column: str, why: str) -> ConfigError:
    where = f"row {row}, " if row is not None else ""
    return ConfigError(f"{source}: {where}column {column!r}: {why}")


def _parse_times(values: pd.Series, source: str, column: str) -> pd.Series:
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna() & values.notna()
    if values.isna().any():
        row = int(np.flatnonzero(values.isna().to_numpy())[0])
        raise _fail(source, row + 2, column, "missing timestamp")
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise _fail(source, row + 2, column, f"not an ISO 8601 time: {values.iloc[row]!r}")
    if isinstance(values.iloc[0], str) and not _has_offset(values.iloc[0]):
        raise _fail(source, 2, column, f"time {values.iloc[0]!r} has no UTC offset (ISO 8601 with offset)")
    return parsed


def _has_offset(text: str) -> bool:
    t = text.strip()
    return t.endswith("Z") or (len(t) > 10 and ("+" in t[10:] or "-" in t[10:]))


def validate_sessions(df: pd.DataFrame, site: SiteConfig, source: str = "sessions.csv") -> pd.DataFrame:
    """Check and normalise a sessions frame; rows are numbered as in the CSV (header = row 1)."""
    missing = [c for c in SESSION_REQUIRED if c not in df.columns]
    if missing:
        raise ConfigError(f"{source}: missing required column(s) {missing}")
    unknown = [c for c in df.columns if c not in SESSION_REQUIRED + SESSION_OPTIONAL]
    if unknown:
        raise ConfigError(f"{source}: unknown column(s) {unknown}")
    out = df.copy().reset_index(drop=True)
    out["session_id"] = out["session_id"].astype(str)
    out["charger_id"] = out["charger_id"].astype(str)
    if len(out) == 0:
        for col, default in SESSION_DEFAULTS.items():
            if col not in out.columns:
                out[col] = pd.Series(dtype=type(default) if not isinstance(default, float) else float)
        out["arrival"] = pd.to_datetime(out["arrival"], utc=True)
        out["departure"] = pd.to_datetime(out["departure"], utc=True)
        out["energy_kwh"] = out["energy_kwh"].astype(float)
        return out[list(SESSION_REQUIRED + SESSION_OPTIONAL)]
    dup = out["session_id"].duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise _fail(source, row + 2, "session_id", f"duplicate id {out['session_id'].iloc[row]!r}")
    for col in ("arrival", "departure"):
        if not pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = _parse_times(out[col], source, col)
        elif out[col].dt.tz is None:
            raise _fail(source, None, col, "timestamps must be timezone-aware")
    numeric = ["energy_kwh", "max_power_kw", "battery_kwh", "arrival_soc", "departure_soc", "priority"]
    for col, default in SESSION_DEFAULTS.items():
        if col not in out.columns:
            out[col] = default
    for col in numeric:
        vals = pd.to_numeric(out[col], errors="coerce")
        bad = vals.isna() & out[col].notna() & (out[col].astype(str).str.strip() != "")
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(source, row + 2, col, f"not a number: {out[col].iloc[row]!r}")
        out[col] = vals.astype(float)
    if out["energy_kwh"].isna().any():
        row = int(np.flatnonzero(out["energy_kwh"].isna().to_numpy())[0])
        raise _fail(source, row + 2, "energy_kwh", "missing")
    out["priority"] = out["priority"].fillna(0).astype(int)
    out["v2g"] = out["v2g"].map(_as_bool).astype(bool)
    checks: list[tuple[str, pd.Series, str]] = [
        ("departure", out["departure"] <= out["arrival"], "departure is not after arrival"),
        ("energy_kwh", out["energy_kwh"] < 0, "negative energy"),
        ("max_power_kw", out["max_power_kw"] <= 0, "must be positive"),
        ("battery_kwh", out["battery_kwh"] <= 0, "must be positive"),
        ("arrival_soc", (out["arrival_soc"] < 0) | (out["arrival_soc"] > 1), "must lie in [0, 1]"),
        ("departure_soc", (out["departure_soc"] < 0) | (out["departure_soc"] > 1), "must lie in [0, 1]"),
        (
            "energy_kwh",
            out["energy_kwh"] > out["battery_kwh"].fillna(np.inf),
            "more energy asked than the battery holds (check units: kWh, not Wh)",
        ),
    ]
    for col, mask, why in checks:
        if mask.any():
            row = int(np.flatnonzero(mask.to_numpy())[0])
            raise _fail(source, row + 2, col, f"{why} (value {out[col].iloc[row]!r})")
    known = set(site.charger_ids)
    unknown_ch = ~out["charger_id"].isin(known)
    if unknown_ch.any():
        row = int(np.flatnonzero(unknown_ch.to_numpy())[0])
        raise _fail(source, row + 2, "charger_id", f"unknown charger {out['charger_id'].iloc[row]!r}")
    out = out.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    # one EV per charger at a time
    for cid, group in out.groupby("charger_id", sort=False):
        dep = group["departure"].to_numpy()
        arr = group["arrival"].to_numpy()
        overlap = arr[1:] < dep[:-1]
        if overlap.any():
            k = int(np.flatnonzero(overlap)[0]) + 1
            raise ConfigError(
                f"{source}: sessions {group['session_id'].iloc[k - 1]!r} and {group['session_id'].iloc[k]!r} "
                f"overlap on charger {cid!r}"
            )
    return out[list(SESSION_REQUIRED + SESSION_OPTIONAL)]


def _as_bool(value: object) -> bool:
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return False
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "y", "t"):
        return True
    if text in ("0", "false", "no", "n", "f", ""):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def validate_timeseries(df: pd.DataFrame, source: str = "timeseries.csv") -> pd.DataFrame:
    """Check a time-series frame; return it on a regular tz-aware index with :data:`TIMESERIES_COLUMNS`.

    Accepts a ``timestamp`` column or a DatetimeIndex. A grid with gaps is an error; a regular grid of
    another resolution is fine (use :func:`resample_timeseries` to change it).
    """
    out = df.copy()
    if "timestamp" in out.columns:
        ts = out.pop("timestamp")
        if not pd.api.types.is_datetime64_any_dtype(ts):
            ts = _parse_times(ts, source, "timestamp")
        out.index = pd.DatetimeIndex(ts)
    if not isinstance(out.index, pd.DatetimeIndex):
        raise ConfigError(f"{source}: missing required column 'timestamp'")
    if out.index.tz is None:
        raise _fail(source, None, "timestamp", "timestamps must carry a UTC offset")
    missing = [c for c in TIMESERIES_COLUMNS if c not in out.columns]
    if missing:
        raise ConfigError(f"{source}: missing required column(s) {missing}")
    out = out[list(TIMESERIES_COLUMNS)]
    for col in TIMESERIES_COLUMNS:
        vals = pd.to_numeric(out[col], errors="coerce")
        bad = vals.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise _fail(source, row + 2, col, f"missing or not a number: {out[col].iloc[row]!r}")
        out[col] = vals.astype(float)
    for col in ("base_load_kw", "pv_kw"):
        neg = out[col] < 0
        if neg.any():
            row = int(np.flatnonzero(neg.to_numpy())[0])
            raise _fail(source, row + 2, col, f"negative power {out[col].iloc[row]}")
    if len(out) < 2:
        raise ConfigError(f"{source}: needs at least two rows")
    idx = out.index
    if not idx.is_monotonic_increasing or idx.has_duplicates:
        row = int(np.flatnonzero(np.diff(idx.asi8) <= 0)[0]) + 1
        raise _fail(source, row + 2, "timestamp", "timestamps must increase strictly")
    steps = np.diff(idx.asi8)
    if not (steps == steps[0]).all():
        row = int(np.flatnonzero(steps != steps[0])[0]) + 1
        raise _fail(
            source,
            row + 2,
            "timestamp",
            f"gap or irregular step before {idx[row]} (expected {pd.Timedelta(int(steps[0]))})",
        )
    out.index = pd.DatetimeIndex(idx, freq=pd.Timedelta(int(steps[0])))
    out.index.name = "timestamp"
    return out


def resample_timeseries(df: pd.DataFrame, step: str | pd.Timedelta) -> pd.DataFrame:
    """Resample a validated time series to ``step``: powers and prices are averaged (down) or held (up)."""
    target = pd.Timedelta(step)
    current = pd.Timedelta(df.index.freq or (df.index[1] - df.index[0]))
    if target == current:
        return df
    if target > current:
        out = df.resample(target, origin=df.index[0]).mean()
    else:
        end = df.index[-1] + current
        new_index = pd.date_range(df.index[0], end, freq=target, inclusive="left")
        out = df.reindex(new_index, method="ffill")
    out.index = pd.DatetimeIndex(out.index, freq=target)
    out.index.name = "timestamp"
    return out


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
            raise ConfigError(f"{p}: missing (a scenario folder holds site.yaml, sessions.csv, timeseries.csv)")
    try:
        sessions_raw = pd.read_csv(sessions_path, dtype={"session_id": str, "charger_id": str})
        ts_raw = pd.read_csv(ts_path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise ConfigError(f"{folder}: cannot parse CSV: {err}") from None
    sessions = validate_sessions(sessions_raw, site, str(sessions_path))
    ts = validate_timeseries(ts_raw, str(ts_path))
    if step is not None:
        ts = resample_timeseries(ts, step)
    return Scenario(site, sessions, ts, name=folder.name)


def save_scenario(scenario: Scenario, path: str | Path) -> Path:
    """Write a scenario folder; the same scenario always gives the same bytes."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    dump_site(scenario.site, folder / "site.yaml")
    sessions = scenario.sessions.copy()
    for col in ("arrival", "departure"):
        sessions[col] = sessions[col].map(lambda t: t.isoformat())
    sessions.to_csv(folder / "sessions.csv", index=False, float_format="%.6g", lineterminator="\n")
    ts = scenario.timeseries.copy()
    ts.insert(0, "timestamp", [t.isoformat() for t in ts.index])
    ts.to_csv(folder / "timeseries.csv", index=False, float_format="%.6g", lineterminator="\n")
    return folder


def make_scenario(
    site: SiteConfig, sessions: pd.DataFrame, timeseries: pd.DataFrame, name: str = "scenario"
) -> Scenario:
    """Build a validated in-memory scenario (the same checks as loading a folder)."""
    return Scenario(
        site,
        validate_sessions(sessions, site, f"{name}/sessions"),
        validate_timeseries(timeseries, f"{name}/timeseries"),
        name,
    )
