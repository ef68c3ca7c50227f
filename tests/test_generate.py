"""The scenario generator: reproducible bytes, plausible distributions per kind, deliverable energy."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from envs.core import SiteArrays
from envs.generate import KINDS, Kind, generate_scenario, generate_timeseries
from envs.scenario import (
    Scenario,
    charger_load_kw,
    load_scenario,
    save_scenario,
    scenario_summary,
    session_rate_kw,
)


@cache
def _scn(
    kind: Kind, chargers: int = 12, days: int = 7, v2g: bool = False, battery: bool = False, pv: bool = True
) -> Scenario:
    return generate_scenario(kind, chargers, days, seed=0, v2g=v2g, pv=pv, battery=battery)


def _local(scn: Scenario, col: str) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(scn.sessions[col]).tz_convert(scn.site.timezone)


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    one = save_scenario(generate_scenario("workplace", 6, 3, seed=7, v2g=True, battery=True), tmp_path / "a")
    two = save_scenario(generate_scenario("workplace", 6, 3, seed=7, v2g=True, battery=True), tmp_path / "b")
    three = save_scenario(
        generate_scenario("workplace", 6, 3, seed=8, v2g=True, battery=True), tmp_path / "c"
    )
    for name in ("site.yaml", "sessions.csv", "timeseries.csv"):
        assert (one / name).read_bytes() == (two / name).read_bytes()
    assert (one / "sessions.csv").read_bytes() != (three / "sessions.csv").read_bytes()
    assert (one / "timeseries.csv").read_bytes() != (three / "timeseries.csv").read_bytes()


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_valid_and_round_trips(tmp_path: Path, kind: Kind) -> None:
    scn = _scn(kind)
    assert len(scn.sessions) > 0
    assert scn.n_steps == 7 * 96 and scn.start == pd.Timestamp("2025-06-02T00:00:00+02:00")
    again = load_scenario(save_scenario(scn, tmp_path / kind))  # runs every validation again
    assert again.equals(scn)
    s = scn.sessions
    assert (s["arrival"] >= scn.start).all() and (s["departure"] <= scn.end).all()
    assert (s["energy_kwh"] > 0).all()
    assert (s["arrival_soc"] >= 0).all() and (s["departure_soc"] <= 1).all()


@pytest.mark.parametrize("kind", KINDS)
def test_sessions_ask_only_deliverable_energy(kind: Kind) -> None:
    scn = _scn(kind)
    s = scn.sessions
    dwell_h = (s["departure"] - s["arrival"]).dt.total_seconds().to_numpy() / 3600
    eff = s["charger_id"].map({c.id: c.efficiency for c in scn.site.chargers}).to_numpy()
    deliverable = session_rate_kw(scn) * eff * dwell_h
    assert (s["energy_kwh"].to_numpy() <= 0.95 * deliverable + 1e-9).all()
    np.testing.assert_allclose(
        s["departure_soc"] - s["arrival_soc"], s["energy_kwh"] / s["battery_kwh"], atol=1e-3
    )


@pytest.mark.parametrize("kind", KINDS)
def test_limits_bind_but_spread_charging_fits_every_limit(kind: Kind) -> None:
    scn = _scn(kind)
    arrays = SiteArrays.from_config(scn.site)
    spread = charger_load_kw(scn, "spread")  # (n, K)
    node_kw = arrays.membership.T @ spread
    assert (node_kw <= arrays.node_limit_kw[:, None] + 1e-6).all()
    phase_a = np.einsum("nk,np,nm->mpk", spread, arrays.phase_a_per_kw, arrays.membership)
    assert (phase_a <= arrays.node_limit_a[:, None, None] + 1e-6).all()
    net = scn.timeseries["base_load_kw"] - scn.timeseries["pv_kw"] + spread.sum(axis=0)
    assert (net <= scn.site.grid.import_limit_kw + 1e-6).all()
    summary = scenario_summary(scn)
    assert summary.uncontrolled_site_peak_kw > summary.import_limit_kw
    assert summary.uncontrolled_steps_over_limit > 0
    uncontrolled = charger_load_kw(scn, "uncontrolled")
    assert ((arrays.membership.T @ uncontrolled).max(axis=1) > arrays.node_limit_kw - 1e-9).any()


def test_depot_is_an_overnight_fleet() -> None:
    scn = _scn("depot")
    arr, dep = _local(scn, "arrival"), _local(scn, "departure")
    at_start = scn.sessions["arrival"] == scn.start  # parked since the evening before the start
    assert at_start.sum() == 0  # the start is a Monday: nobody came back on Sunday
    hours_a = arr.hour + arr.minute / 60
    assert ((hours_a >= 15.5) & (hours_a <= 20)).all()
    assert ((dep.hour >= 5) & (dep.hour <= 8)).all()
    assert (arr.day_of_week < 5).all()
    # predictable: one van per charger, similar energy every night
    per_charger = scn.sessions.groupby("charger_id")["energy_kwh"]
    assert (per_charger.std() / per_charger.mean()).median() < 0.25


def test_workplace_is_morning_arrivals_overlapping_pv() -> None:
    scn = _scn("workplace")
    arr = _local(scn, "arrival")
    first = scn.sessions.assign(day=arr.date).groupby(["charger_id", "day"]).head(1)
    first_arr = _local(scn.__class__(scn.site, first, scn.timeseries), "arrival")
    assert 7.5 < np.mean(first_arr.hour + first_arr.minute / 60) < 9.5
    assert np.mean(arr.day_of_week < 5) > 0.85
    pv_at = scn.timeseries["pv_kw"].reindex(scn.sessions["arrival"].dt.floor("15min")).to_numpy()
    assert np.nanmean(pv_at) > 0.1 * scn.site.pv.peak_kw  # type: ignore[union-attr]


def test_residential_is_evening_to_morning() -> None:
    scn = _scn("residential")
    at_start = (scn.sessions["arrival"] == scn.start).to_numpy()
    assert 0 < at_start.sum() < scn.site.n_chargers  # some cars are plugged in since Sunday evening
    arr, dep = _local(scn, "arrival")[~at_start], _local(scn, "departure")[~at_start]
    assert 17.0 < np.mean(arr.hour + arr.minute / 60) < 20.0
    assert (dep.date > arr.date).all()
    assert sum(c.phases == 1 for c in scn.site.chargers) > scn.site.n_chargers / 2
    assert {c.phase for c in scn.site.chargers if c.phases == 1} == {"L1", "L2", "L3"}


def test_public_is_short_dwell_high_power() -> None:
    scn = _scn("public")
    s = scn.sessions
    dwell_h = (s["departure"] - s["arrival"]).dt.total_seconds() / 3600
    assert dwell_h.mean() < 2.0
    assert np.mean([c.rated_power_kw for c in scn.site.chargers]) > 30.0
    assert len(s) > 3 * scn.site.n_chargers * 7 / 2  # several sessions per charger and day
    hours = _local(scn, "arrival").hour
    assert ((hours >= 7) & (hours < 23)).all()


def test_time_series_shapes() -> None:
    scn = _scn("workplace")
    ts = scn.timeseries
    local = pd.DatetimeIndex(ts.index).tz_convert(scn.site.timezone)
    hour = local.hour.to_numpy()
    weekend = local.day_of_week.to_numpy() >= 5
    price = ts["import_price_per_kwh"].to_numpy()
    assert price[(hour >= 17) & (hour < 21) & ~weekend].min() > price[(hour < 6)].max()
    assert (ts["export_price_per_kwh"] < ts["import_price_per_kwh"]).all()
    base = ts["base_load_kw"].to_numpy()
    office = (hour >= 9) & (hour < 16)
    assert base[office & ~weekend].mean() > 2 * base[office & weekend].mean()
    pv = ts["pv_kw"].to_numpy()
    assert (pv[(hour < 4) | (hour >= 23)] == 0).all()
    assert pv.max() <= scn.site.pv.peak_kw  # type: ignore[union-attr]
    daily = pd.Series(pv, index=local).resample("D").sum()
    assert daily.max() > 1.3 * daily.min()  # weather varies from day to day
    assert scn.site.tariff.demand_charge_per_kw > 0


def test_options_v2g_battery_no_pv() -> None:
    scn = _scn("depot", v2g=True, battery=True, pv=False)
    bidi = {c.id for c in scn.site.chargers if c.bidirectional}
    assert bidi and all(c.max_discharge_kw > 0 for c in scn.site.chargers if c.bidirectional)
    v2g = scn.sessions[scn.sessions["v2g"]]
    assert len(v2g) > 0 and set(v2g["charger_id"]) <= bidi
    assert scn.site.battery is not None and scn.site.battery.capacity_kwh > 0
    assert scn.site.pv is None and (scn.timeseries["pv_kw"] == 0).all()
    assert scn.site.grid.export_limit_kw == 0
    plain = _scn("depot")
    assert not plain.sessions["v2g"].any() and plain.site.battery is None


def test_overnight_kinds_start_with_parked_evs() -> None:
    scn = generate_scenario("depot", 4, 1, seed=0, start="2025-06-03T00:00:00+02:00")  # a Tuesday
    parked = scn.sessions[scn.sessions["arrival"] == scn.start]
    assert len(parked) == 4  # the fleet came back on Monday evening
    dwell_h = (parked["departure"] - parked["arrival"]).dt.total_seconds() / 3600
    assert (parked["energy_kwh"] <= 0.95 * 22.08 * 0.95 * dwell_h + 1e-9).all()


def test_tree_has_feeders_and_groups() -> None:
    scn = _scn("depot", chargers=30)
    parents = {n.id: n.parent for n in scn.site.nodes}
    assert parents["transformer"] is None
    feeders = [n for n, p in parents.items() if p == "transformer"]
    assert len(feeders) == 3
    for c in scn.site.chargers:
        assert len(scn.site.ancestors(c.node)) == 3


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        generate_scenario("garage", 4, 1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="chargers must be at least 1"):
        generate_scenario("depot", 0, 1)
    with pytest.raises(ValueError, match="UTC offset"):
        generate_scenario("depot", 2, 1, start="2025-06-02T00:00:00")


def test_generate_timeseries_covers_the_period() -> None:
    site = _scn("residential").site
    ts = generate_timeseries(
        site, "2025-01-06T00:00:00+01:00", "2025-01-08T00:00:00+01:00", "30min", "public"
    )
    assert len(ts) == 96
    assert ts.index[0] == pd.Timestamp("2025-01-05T23:00:00Z")
    assert ts["base_load_kw"].max() <= 0.25 * site.grid.import_limit_kw * 1.5


def test_arrival_soc_rounding_never_leaves_less_room_than_the_request() -> None:
    # this seed once drew a session whose arrival SoC, rounded to 4 decimals, left 34.478 kWh asked of a
    # battery with slightly less room: the generator must round in the safe direction
    scenario = generate_scenario("depot", chargers=20, days=7, seed=1478438096, demand_charge_per_kw=12.0)
    s = scenario.sessions
    room = s["battery_kwh"] * (1.0 - s["arrival_soc"])
    assert (s["energy_kwh"] <= room + 1e-9).all()
    assert (
        s["departure_soc"] * s["battery_kwh"] >= s["arrival_soc"] * s["battery_kwh"] + s["energy_kwh"] - 1e-9
    ).all()
