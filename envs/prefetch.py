"""Generated scenarios built ahead of need in one background process, so a reset does not wait for one.

Generating a 50-charger week takes 50-250 ms, several times longer than stepping its 672 steps, so an env
that trains on a fresh scenario per episode spends most of its time generating. With
``GeneratorSpec(prefetch=k)`` the env draws the seeds of its next ``k`` episodes ahead and a worker process
generates them while the current episode runs; a reset then only collects a finished scenario (and compiles
it, ~10 ms). The episodes are the same for the same reset seed and the same ``k`` (the seeds are drawn from
the env's ``np_random`` in the same order); they differ from those of ``prefetch=0``, whose seeds are drawn
one per reset between the other draws of the reset.
"""

from __future__ import annotations

import multiprocessing
from collections import deque
from collections.abc import Iterable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

    from envs.episodes import GeneratorSpec
    from envs.scenario import Scenario


def _generate(spec: GeneratorSpec, seed: int, step: str | None) -> Scenario:
    return spec.generate(seed, step)


class ScenarioPrefetch:
    """Seeds drawn ahead and their scenarios generated in one background (spawned) process."""

    def __init__(self, spec: GeneratorSpec, step: str | None, depth: int, span: int) -> None:
        if depth < 1:
            raise ValueError("prefetch depth must be >= 1")
        self.spec = spec
        self.step = step
        self.depth = depth
        self.span = span
        self._executor: ProcessPoolExecutor | None = None
        self._pending: dict[int, Future[Scenario]] = {}
        self._queue: deque[int] = deque()
        self._rng: np.random.Generator | None = None

    def _submit(self, seeds: Iterable[int]) -> None:
        if self._executor is None:
            self._executor = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        for seed in seeds:
            if seed not in self._pending:
                self._pending[seed] = self._executor.submit(_generate, self.spec, seed, self.step)

    def next_seed(self, rng: np.random.Generator) -> int:
        """The seed of the next episode; the seeds of the ``depth`` after it are drawn now and generated
        in the background. A new ``rng`` (the env was reseeded) starts a new sequence."""
        if rng is not self._rng:
            self._rng = rng
            self._queue.clear()
            for fut in self._pending.values():
                fut.cancel()
            self._pending.clear()
        while len(self._queue) < self.depth + 1:
            self._queue.append(self.spec.seed + int(rng.integers(self.span)))
        seed = self._queue.popleft()
        self._submit(self._queue)  # the first episode's own scenario is made at once, in this process
        return seed

    def take(self, seed: int) -> Scenario:
        """The scenario of ``seed``: from the background process when it was asked for, else made here."""
        fut = self._pending.pop(seed, None)
        if fut is None or fut.cancelled():
            return self.spec.generate(seed, self.step)
        return fut.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._pending.clear()

    def __getstate__(self) -> dict[str, object]:
        # a copy (pickled, deep-copied) starts without the worker and the seeds drawn ahead
        state = dict(self.__dict__)
        state.update(_executor=None, _pending={}, _queue=deque(), _rng=None)
        return state
