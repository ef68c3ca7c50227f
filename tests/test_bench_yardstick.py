"""``python -m benchmarks.yardstick``: the sweep that checks the optimum against every policy on generated
sites reports what it finds, as JSON too."""

from __future__ import annotations

import json

import pytest

from benchmarks import yardstick

ARGS = [
    "--kinds",
    "residential",
    "--seeds",
    "0",
    "--chargers",
    "2",
    "--days",
    "1",
    "--policies",
    "llf,rule_based",
]


def test_seeds_take_lists_and_ranges() -> None:
    assert yardstick.seeds_of("0-2,7") == [0, 1, 2, 7]
    assert yardstick.seeds_of("4") == [4]


def test_the_sweep_finds_no_policy_beating_the_exact_optimum(capsys: pytest.CaptureFixture[str]) -> None:
    yardstick.main([*ARGS, "--json"])
    captured = capsys.readouterr()
    res = json.loads(captured.out)
    (sc,) = res["scenarios"]
    assert sc["scenario"] == "residential-2c-1d-s0" and sc["plan_kind"] == "exact"
    assert sc["bound"] <= sc["optimum_cost"] + 1e-9
    assert res["beaten"] == 0 and sc["cheaper"] == []
    assert res["off_plan"] == 0 and sc["optimum_cost"] == pytest.approx(sc["plan_objective"], rel=1e-6)
    assert res["out_delivered"] == 0 and sc["delivers_more"] == []
    assert "residential-2c-1d-s0: optimum" in captured.err  # progress
    # the real weeks' penalty reaches the tariff the optimum is priced at (the same plan, all delivered)
    yardstick.main([*ARGS, "--penalty", "20", "--json"])
    res20 = json.loads(capsys.readouterr().out)
    assert res20["penalty_per_kwh"] == 20.0
    assert res20["scenarios"][0]["optimum_cost"] == pytest.approx(sc["optimum_cost"], rel=1e-9)
    assert sc["optimum_delivered_pct"] == pytest.approx(100.0)


def test_the_sweep_reports_a_policy_below_the_yardstick(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # with a tolerance of -100 % every policy costing less than twice the optimum counts as beating it
    monkeypatch.setattr(yardstick, "TOL", -1.0)
    yardstick.main(ARGS)
    out = capsys.readouterr()
    assert "the optimum beaten by more than -100.0 % in 1" in out.out
    assert "cheaper: llf +" in out.err and "rule_based +" in out.err
