"""The garbage collector kept out of the control cycle.

A full (generation 2) collection walks every object the interpreter tracks. At 1,000 stations the
service holds about 380,000 (modules, the site's arrays, the connectors' logs, the database layer) and
one full collection took 90-110 ms: landing inside a cycle of 60-90 ms it made that cycle the run's
slowest (220 and 254 ms p99 loop latency in two V2G benchmark runs, one cycle each, where the others
stayed under 120 ms). Two measures, both standard for latency-bound Python services:

- :func:`freeze_start_up`: what start-up built lives as long as the service; frozen (:func:`gc.freeze`),
  later collections no longer walk it (``evdlm serve`` calls it once, after the service started).
- :func:`collection_paused`: a cycle runs with automatic collection off; the collection its allocations
  call for runs as soon as it is done, in the time the loop waits for the next cycle. Reference counting
  frees everything not in a cycle of references meanwhile, so a cycle's memory does not grow.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def collection_paused() -> Iterator[None]:
    """Automatic garbage collection off inside the block, back to how it was after (also on an error)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def freeze_start_up() -> int:
    """Collect what start-up left behind, then move every object alive now out of later collections'
    way (:func:`gc.freeze`); returns how many objects are frozen. For the process that owns the service
    (``evdlm serve``), once: a library caller's objects are its own."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
