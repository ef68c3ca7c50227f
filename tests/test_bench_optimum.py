"""``python -m benchmarks.optimum``: the optimum's sizes and solve times, on a small generated workplace."""

from __future__ import annotations

import json

import pytest

from benchmarks import optimum


def test_the_benchmark_reports_the_bound_and_the_executable_plan(capsys: pytest.CaptureFixture[str]) -> None:
    optimum.main(["--sizes", "4x1", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["chargers"], row["days"]) == ("workplace", 4, 1)
    assert row["charging_columns"] > 0 and row["rows"] > 0
    # the bound is the relaxation's: the plan (what it costs executed) is at least that
    assert row["bound"] <= row["plan"] + 1e-6
    assert row["plan_gap_pct"] == pytest.approx(100.0 * (row["plan"] - row["bound"]) / row["bound"], abs=1e-3)
    assert row["plan_gap_pct"] < 1.0
    assert row["plan_kind"] in ("exact", "executable", "relaxed", "repaired")
    assert row["target_s"] is None  # only 50 x 7 and 1,000 x 1 have targets
    optimum.main(["--sizes", "4x1", "--no-reset"])
    out = capsys.readouterr().out
    assert "4 chargers x 1 d (workplace):" in out and "bound" in out and "reset" not in out
    optimum.main(["--sizes", "4x2", "--no-reset", "--kind", "residential", "--json"])
    (row,) = json.loads(capsys.readouterr().out)
    assert (row["kind"], row["chargers"], row["days"]) == ("residential", 4, 2)
    assert row["bound"] <= row["plan"] + 1e-6 and "reset_s" not in row
