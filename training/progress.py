"""The training progress bar: what bounds the run, shown in its own unit.

A run bounded by ``training.max_minutes`` shows minutes (``2:00`` of wall time, evaluation excluded) and the
steps done so far, not a step budget it will never reach (``21,506/10,000,000 < 15:25:28`` for a
two-minute run); a run bounded by steps shows steps. One tqdm bar on stderr, no rich live display.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

from stable_baselines3.common.callbacks import BaseCallback

TIME_BAR = "training {percentage:3.0f}%|{bar:30}| {desc}"
STEP_BAR = "training {percentage:3.0f}%|{bar:30}| {n_fmt}/{total_fmt} steps {elapsed}<{remaining}"


def minutes_text(seconds: float) -> str:
    """``m:ss`` (``2:00``, ``15:30``)."""
    whole = max(int(seconds), 0)
    return f"{whole // 60}:{whole % 60:02d}"


class TrainingProgress(BaseCallback):
    """A tqdm bar over the run's budget: wall time (``limit_s``, read from ``clock``) when the run is bounded
    by minutes, else the ``total_steps`` still to train. The steps done are said beside the minutes."""

    def __init__(
        self, total_steps: int, limit_s: float | None, clock: Callable[[], float], refresh_s: float = 0.5
    ) -> None:
        super().__init__()
        self.total_steps = total_steps
        self.limit_s = limit_s
        self.clock = clock
        self.refresh_s = refresh_s
        self.bar: Any = None
        self._start_steps = 0
        self._shown_at = -1e9

    def _on_training_start(self) -> None:
        from tqdm import tqdm

        self._start_steps = int(self.num_timesteps)
        if self.limit_s is not None:
            self.bar = tqdm(total=self.limit_s, bar_format=TIME_BAR, file=sys.stderr)
        else:
            self.bar = tqdm(total=self.total_steps, bar_format=STEP_BAR, file=sys.stderr, unit="step")

    def _on_step(self) -> bool:
        now = self.clock()
        if now - self._shown_at >= self.refresh_s:
            self._shown_at = now
            self.show(now)
        return True

    def show(self, now: float) -> None:
        """Move the bar to ``now`` (wall s) or to the steps done."""
        if self.bar is None:
            return
        done = int(self.num_timesteps) - self._start_steps
        if self.limit_s is not None:
            self.bar.n = min(now, self.limit_s)
            self.bar.set_description_str(
                f"{minutes_text(now)} of {minutes_text(self.limit_s)} min, {int(self.num_timesteps):,} steps",
                refresh=False,
            )
        else:
            self.bar.n = min(done, self.total_steps)
        self.bar.refresh()

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.show(self.clock())
            self.bar.close()
            self.bar = None

    def text(self) -> str:
        """The bar as it stands (for tests)."""
        return "" if self.bar is None else str(self.bar)
