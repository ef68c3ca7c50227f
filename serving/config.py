"""Typed configuration of the live service (``evdlm serve``).

A serving YAML names the site file, the OCPP stations and how their connectors map to the site's chargers,
the control loop's timing, the site meter, the database and the listening addresses. Station passwords are
never in the YAML: they come from a secrets file (``station_id: password`` per line, YAML) or from the
environment (``EVDLM_OCPP_PASSWORD_<STATION_ID>``, the id upper-cased with non-alphanumerics as ``_``).

Connector mapping: a station's ``connectors`` table maps an OCPP connector id (1.6) or EVSE id (2.0.1) to a
charger id of the site. Without a table, charger ``<station>-<k>`` is connector ``k`` of station
``<station>`` (so charger ``CP001-1`` is connector 1 of station ``CP001``).
"""

from __future__ import annotations

import math
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from envs.config import ConfigError, SiteConfig, format_validation_error, read_yaml

PASSWORD_ENV_PREFIX = "EVDLM_OCPP_PASSWORD_"
MAX_WINDOW_STEPS = 100_000
"""most control intervals a snapshot's forecast window may hold (horizon / control interval)"""
OPERATOR_TOKEN_ENV = "EVDLM_OPERATOR_TOKEN"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class StationConfig(_Frozen):
    """One OCPP charging station; ``connectors`` maps connector/EVSE id -> site charger id."""

    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.:\-]+$")
    connectors: dict[int, str] = Field(default_factory=dict)


class MeterConfig(_Frozen):
    """Where the site meter (net grid import, and PV where present) is read.

    ``station``: MeterValues on connector 0 (1.6) / EVSE 0 (2.0.1) of ``station_id``
    (``Power.Active.Import`` minus ``Power.Active.Export``, W). ``http``: readings POSTed to the operator
    API at ``/api/meter``. ``modbus``: holding registers of a Modbus TCP energy meter, IEEE-754 float32
    big-endian, in W times ``scale``. ``none``: no site meter; the controller estimates import from the
    chargers' own measurements plus ``assumed_base_load_kw`` (and counts the meter as fresh).
    """

    source: Literal["station", "http", "modbus", "none"] = "none"
    station_id: str | None = None
    host: str = "127.0.0.1"
    port: int = Field(default=502, gt=0, lt=65536)
    unit_id: int = Field(default=1, ge=0, le=247)
    import_register: int = Field(default=0, ge=0, description="register of net import power (float32, W)")
    pv_register: int | None = Field(default=None, ge=0, description="register of PV power (float32, W)")
    scale: float = Field(default=1.0, gt=0, description="multiplier turning the register value into W")
    poll_interval_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _check(self) -> MeterConfig:
        if self.source == "station" and not self.station_id:
            raise ValueError("meter source 'station' needs station_id")
        return self


def _parse_duration(value: object) -> object:
    """``"15min"``, ``"1h"``, ``"PT15M"`` or seconds -> :class:`timedelta` (pydantic validates the rest)."""
    if isinstance(value, str):
        import pandas as pd

        try:
            return pd.Timedelta(value).to_pytimedelta()
        except ValueError:
            return value  # pydantic reports it
    return value


class ForecastConfig(_Frozen):
    """The base-load and PV forecast in the live snapshot (``forecast:`` in the serving YAML).

    ``model`` is a fitted forecaster saved by ``evdlm forecast fit`` (joblib); without one (or while it
    cannot forecast yet) the window is a persistence of the current measurement. The service keeps a
    rolling history of the measured base load and PV on a grid of ``step`` (the model's step when a model
    is given), refreshes the model's forecast every ``refresh_every_s`` off the control loop, and each
    cycle reads the cached forecast shifted to now. The window covers ``horizon_steps * step``, on the
    control loop's grid (one value per ``control_interval_s``, the snapshot's ``dt_h``).
    """

    model: Path | None = Field(default=None, description="fitted forecaster (joblib), relative to the YAML")
    horizon_steps: int = Field(default=96, gt=0, description="forecast horizon in steps of `step`")
    step: timedelta | None = Field(default=None, description="history/forecast step (default: the model's)")
    refresh_every_s: float = Field(default=900.0, gt=0, description="seconds between model forecasts")
    min_history_steps: int = Field(
        default=4, ge=1, description="steps of measured history before the model is used (else persistence)"
    )
    history_days: float | None = Field(
        default=None, gt=0, description="rolling history kept, days (default: what the model reads, >= 1)"
    )

    @field_validator("step", mode="before")
    @classmethod
    def _step(cls, value: object) -> object:
        return _parse_duration(value)

    @model_validator(mode="after")
    def _check(self) -> ForecastConfig:
        if self.step is not None:
            if self.step <= timedelta(0) or timedelta(days=1) % self.step != timedelta(0):
                raise ValueError(f"step {self.step} must be positive and divide a day")
        return self

    @property
    def step_or_default(self) -> timedelta:
        return self.step if self.step is not None else timedelta(minutes=15)

    @property
    def horizon(self) -> timedelta:
        return self.horizon_steps * self.step_or_default


class TimeOfUsePeriod(_Frozen):
    """One period of a daily time-of-use table: the prices from local time ``from`` to the next period."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    start: str = Field(alias="from", pattern=r"^([01]\d|2[0-3]):[0-5]\d$", description="local HH:MM")
    import_price_per_kwh: float
    export_price_per_kwh: float

    @property
    def minute_of_day(self) -> int:
        hh, mm = self.start.split(":")
        return int(hh) * 60 + int(mm)


class PricesConfig(_Frozen):
    """The tariff the policies see now and over the horizon (``prices:`` in the serving YAML).

    ``csv``: columns ``timestamp`` (ISO 8601 with a UTC offset), ``import_price_per_kwh`` and
    ``export_price_per_kwh`` (a scenario's ``timeseries.csv`` works); each row holds from its timestamp to
    the next. ``time_of_use``: a daily table in the site's local time (``timezone`` overrides it), the
    last period running through midnight into the first. Where the CSV does not cover a time the table
    applies, else the flat ``import_price_per_kwh`` / ``export_price_per_kwh`` of the serving config.
    """

    csv: Path | None = None
    time_of_use: tuple[TimeOfUsePeriod, ...] = ()
    timezone: str | None = Field(default=None, description="time zone of the table (default: the site's)")

    @model_validator(mode="after")
    def _check(self) -> PricesConfig:
        if self.csv is None and not self.time_of_use:
            raise ValueError("prices: give csv, time_of_use or both")
        starts = [p.minute_of_day for p in self.time_of_use]
        if len(set(starts)) != len(starts):
            raise ValueError("time_of_use: two periods start at the same time")
        if self.timezone is not None:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"unknown time zone {self.timezone!r}") from None
        return self


class TLSConfig(_Frozen):
    """OCPP security profile 2: TLS with the server certificate (PEM) and key."""

    cert_file: Path
    key_file: Path


class ServingConfig(_Frozen):
    """Everything ``evdlm serve`` needs besides the policy and the secrets."""

    site: Path = Field(description="site YAML, relative to the serving YAML")
    stations: tuple[StationConfig, ...] = Field(min_length=1)
    control_interval_s: float = Field(default=10.0, gt=0)
    policy_budget_s: float = Field(default=0.5, gt=0, description="time budget of the policy per cycle")
    meter: MeterConfig = MeterConfig()
    meter_timeout_s: float = Field(default=30.0, gt=0, description="site meter older than this is stale")
    station_meter_timeout_s: float = Field(
        default=60.0, gt=0, description="a charger measurement older than this counts as unknown"
    )
    assumed_base_load_kw: float = Field(
        default=0.0, ge=0, description="non-EV load assumed when there is no site meter, kW"
    )
    failsafe_base_load_kw: float = Field(
        default=0.0, ge=0, description="non-EV load reserved when computing the static safe share, kW"
    )
    departure_floor: bool = Field(
        default=True,
        description="the projection charges an EV that must charge now to reach its need by its departure",
    )
    deadband_a: float = Field(default=0.5, ge=0, description="resend an A profile only beyond this change")
    deadband_w: float = Field(default=300.0, ge=0, description="resend a W profile only beyond this change")
    schedule_periods: int = Field(
        default=8, ge=1, le=96,
        description="periods of each TxProfile's schedule (1: a single limit, as before schedules)",
    )  # fmt: skip
    schedule_period_s: float = Field(
        default=900.0, gt=0, description="length of one schedule period, s (the plan's step)"
    )
    offender_tolerance_kw: float = Field(
        default=0.5, ge=0, description="drawing more than limit + this (and +10 %) flags a station"
    )
    default_session_energy_kwh: float = Field(
        default=20.0, gt=0, description="energy assumed asked by an EV that does not say (OCPP 1.6)"
    )
    default_dwell_h: float = Field(default=8.0, gt=0, description="stay assumed when no departure is known")
    import_price_per_kwh: float = 0.25
    export_price_per_kwh: float = 0.05
    forecast_horizon_steps: int = Field(
        default=96, gt=0, description="window length in control intervals without forecast/prices"
    )
    forecast: ForecastConfig | None = None
    prices: PricesConfig | None = None
    heartbeat_interval_s: int = Field(default=300, gt=0)
    ocpp_host: str = "127.0.0.1"
    ocpp_port: int = Field(default=9000, ge=0, lt=65536)
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, lt=65536)
    dashboard_port: int | None = Field(
        default=None, ge=0, lt=65536, description="operator dashboard on http_host (None: off)"
    )
    tls: TLSConfig | None = None
    require_auth: bool = Field(default=True, description="OCPP security profile >= 1 (HTTP Basic auth)")
    secrets_file: Path | None = Field(default=None, description="YAML 'station_id: password' (not in git)")
    database_url: str = "sqlite:///.evdlm/serving.db"
    response_timeout_s: float = Field(default=10.0, gt=0, description="wait for a station's answer")

    @model_validator(mode="after")
    def _check(self) -> ServingConfig:
        ids = [s.id for s in self.stations]
        dup = {i for i in ids if ids.count(i) > 1}
        if dup:
            raise ValueError(f"duplicate station ids: {sorted(dup)}")
        if self.planning is not None:
            steps = window_steps(self.planning.horizon, self.control_interval_s)
            if steps > MAX_WINDOW_STEPS:
                raise ValueError(
                    f"the forecast horizon {self.planning.horizon} holds {steps} control intervals of "
                    f"{self.control_interval_s} s (at most {MAX_WINDOW_STEPS}): shorten "
                    "forecast.horizon_steps"
                )
        return self

    @property
    def planning(self) -> ForecastConfig | None:
        """The forecast settings in force: ``forecast``, or its defaults (24 h) when only ``prices`` is set;
        None when neither is (then the window is ``forecast_horizon_steps`` flat control intervals)."""
        if self.forecast is not None:
            return self.forecast
        return ForecastConfig() if self.prices is not None else None


def window_steps(horizon: timedelta, control_interval_s: float) -> int:
    """Control intervals in a forecast window covering ``horizon`` (at least 1)."""
    return max(1, math.ceil(horizon.total_seconds() / control_interval_s - 1e-9))


def load_serving_config(path: str | Path) -> ServingConfig:
    """Load a serving YAML; ``site``, ``secrets_file`` and TLS paths are resolved against its folder."""
    p = Path(path)
    data = read_yaml(p)
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: expected a mapping at the top level")
    for key in ("password", "passwords"):
        if key in data:
            raise ConfigError(f"{p}: field {key!r}: passwords never go in the YAML; use secrets_file or env")
    try:
        cfg = ServingConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, str(p))) from None
    return resolve_paths(cfg, p.parent)


def resolve_paths(cfg: ServingConfig, base: Path) -> ServingConfig:
    """Make relative file paths of ``cfg`` relative to ``base``."""

    def fix(q: Path) -> Path:
        return q if q.is_absolute() else base / q

    update: dict[str, object] = {"site": fix(cfg.site)}
    if cfg.secrets_file is not None:
        update["secrets_file"] = fix(cfg.secrets_file)
    if cfg.tls is not None:
        update["tls"] = TLSConfig(cert_file=fix(cfg.tls.cert_file), key_file=fix(cfg.tls.key_file))
    if cfg.forecast is not None and cfg.forecast.model is not None:
        update["forecast"] = cfg.forecast.model_copy(update={"model": fix(cfg.forecast.model)})
    if cfg.prices is not None and cfg.prices.csv is not None:
        update["prices"] = cfg.prices.model_copy(update={"csv": fix(cfg.prices.csv)})
    return cfg.model_copy(update=update)


# --------------------------------------------------------------------------- connector mapping

_SUFFIX = re.compile(r"^(?P<station>.+)-(?P<k>\d+)$")


def connector_map(cfg: ServingConfig, site: SiteConfig) -> dict[tuple[str, int], str]:
    """``(station id, connector id) -> charger id`` for every configured station; validated both ways.

    Raises :class:`ConfigError` when a table names an unknown charger, a charger is claimed twice, or a
    station has no connector at all.
    """
    known = set(site.charger_ids)
    station_ids = {s.id for s in cfg.stations}
    out: dict[tuple[str, int], str] = {}
    claimed: dict[str, tuple[str, int]] = {}
    for st in cfg.stations:
        table = dict(st.connectors)
        if not table:
            for cid in site.charger_ids:
                m = _SUFFIX.match(cid)
                if m and m.group("station") == st.id:
                    table[int(m.group("k"))] = cid
        if not table and not (cfg.meter.source == "station" and cfg.meter.station_id == st.id):
            raise ConfigError(f"station {st.id!r}: no connector maps to a charger (set 'connectors')")
        for k, cid in sorted(table.items()):
            if k < 1:
                raise ConfigError(f"station {st.id!r}: connector ids start at 1 (got {k})")
            if cid not in known:
                raise ConfigError(f"station {st.id!r}: connector {k} maps to unknown charger {cid!r}")
            if cid in claimed:
                raise ConfigError(f"charger {cid!r} is mapped twice: {claimed[cid]} and {(st.id, k)}")
            claimed[cid] = (st.id, k)
            out[(st.id, k)] = cid
    if cfg.meter.source == "station" and cfg.meter.station_id not in station_ids:
        raise ConfigError(f"meter station {cfg.meter.station_id!r} is not among the stations")
    return out


# --------------------------------------------------------------------------- secrets


def password_env_name(station_id: str) -> str:
    return PASSWORD_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", station_id).upper()


def load_passwords(cfg: ServingConfig, environ: dict[str, str] | None = None) -> dict[str, str]:
    """Station passwords from the secrets file, overridden by ``EVDLM_OCPP_PASSWORD_<ID>`` variables.

    Stations without a password cannot connect while ``require_auth`` is on.
    """
    env = dict(os.environ) if environ is None else environ
    out: dict[str, str] = {}
    if cfg.secrets_file is not None:
        data = read_yaml(cfg.secrets_file)
        if not isinstance(data, dict):
            raise ConfigError(f"{cfg.secrets_file}: expected 'station_id: password' lines")
        stations = data.get("stations", data)
        if not isinstance(stations, dict):
            raise ConfigError(f"{cfg.secrets_file}: field 'stations': expected a mapping")
        for k, v in stations.items():
            if k == "operator_token":
                continue
            out[str(k)] = str(v)
    for st in cfg.stations:
        value = env.get(password_env_name(st.id))
        if value:
            out[st.id] = value
    return out


def load_operator_token(cfg: ServingConfig, environ: dict[str, str] | None = None) -> str | None:
    """The operator API bearer token: ``EVDLM_OPERATOR_TOKEN`` or ``operator_token`` in the secrets file.

    None means the operator API is open (acceptable only on 127.0.0.1).
    """
    env = dict(os.environ) if environ is None else environ
    if env.get(OPERATOR_TOKEN_ENV):
        return env[OPERATOR_TOKEN_ENV]
    if cfg.secrets_file is not None and Path(cfg.secrets_file).exists():
        data = read_yaml(cfg.secrets_file)
        if isinstance(data, dict) and data.get("operator_token"):
            return str(data["operator_token"])
    return None
