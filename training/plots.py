"""Plots of an evaluation (matplotlib, headless): site import against the limit, and policies compared."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from training.evaluate import EpisodeTrace, EvaluationReport


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def import_plot(trace: EpisodeTrace, title: str, path: str | Path) -> Path:
    """Site import (kW) against the import limit, with PV and base load, over the run; saved as PNG."""
    plt = _pyplot()
    t = trace.timestamps.astype("datetime64[m]")
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=100)
    ax.fill_between(
        t, 0, trace.pv_kw - trace.pv_curtailed_kw, step="post", color="#f6c445", alpha=0.45, label="PV"
    )
    ax.step(t, trace.base_load_kw, where="post", color="#777777", lw=1.0, label="base load")
    ax.step(t, trace.site_import_kw, where="post", color="#1f5fa8", lw=1.2, label="site import")
    ax.axhline(trace.import_limit_kw, color="#c0392b", ls="--", lw=1.0, label="import limit")
    peak = float(np.max(trace.site_import_kw, initial=0.0))
    ax.axhline(peak, color="#1f5fa8", ls=":", lw=0.8, label=f"peak {peak:.1f} kW")
    ax.set_ylabel("kW")
    ax.set_title(title)
    ax.legend(loc="upper right", fontsize=7, ncol=5)
    fig.autofmt_xdate()
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def comparison_chart(report: EvaluationReport, scenario: str, path: str | Path) -> Path:
    """Stacked cost parts per policy (energy, demand charge, missing energy, degradation, minus export)."""
    plt = _pyplot()
    frame = report.frame()
    frame = frame[frame["scenario"] == scenario].groupby("policy", sort=False).mean(numeric_only=True)
    policies = list(frame.index)
    x = np.arange(len(policies))
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(policies) + 2), 4), dpi=100)
    bottom = np.zeros(len(policies))
    for col, label, color in (
        ("cost_energy", "energy", "#1f5fa8"),
        ("cost_demand_charge", "demand charge", "#e67e22"),
        ("cost_missing_energy", "missing energy", "#c0392b"),
        ("cost_degradation", "degradation", "#8e44ad"),
    ):
        vals = frame[col].to_numpy(dtype=float)
        ax.bar(x, vals, bottom=bottom, color=color, label=label)
        bottom += vals
    ax.bar(x, -frame["export_revenue"].to_numpy(dtype=float), color="#27ae60", label="export revenue (-)")
    ax.plot(x, frame["cost_total"].to_numpy(dtype=float), "k_", ms=18, mew=2, label="total")
    ax.set_xticks(x, policies, rotation=30, ha="right")
    ax.set_ylabel("cost")
    ax.set_title(f"{scenario}: cost by policy")
    ax.legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
