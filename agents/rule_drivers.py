"""What the rule-based DLM (:mod:`agents.rule_based`) measures about drivers: how often, and by how much,
they leave before the departure they declared, and how much more than they declared their EV takes; and
what the rule offered each EV beyond its declaration (:class:`OfferRecord`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from envs.core import BoolArray, FloatArray, SiteState, Snapshot


@dataclass(frozen=True, eq=False)
class DepartureLog:
    """How the drivers of a site's past sessions kept the departure they declared: per session, the declared
    time left when its EV left (hours; over a step: it left early) and its declared stay (hours). A
    :class:`DriverRecord` starts from it (as the top-up starts from :func:`under_declared_kwh` of the same
    log) instead of assuming, until it has seen a few departures, that drivers may leave early."""

    left_h: FloatArray
    stay_h: FloatArray

    @classmethod
    def of(cls, sessions: pd.DataFrame) -> DepartureLog:
        """From a log of sessions (columns ``arrival``, ``departure`` and ``declared_departure``; a missing
        declaration is the departure)."""
        if len(sessions) == 0:
            return cls(np.zeros(0, dtype=np.float64), np.zeros(0, dtype=np.float64))
        arrival = pd.to_datetime(sessions["arrival"], utc=True)
        departure = pd.to_datetime(sessions["departure"], utc=True)
        declared = departure
        if "declared_departure" in sessions.columns:
            declared = pd.to_datetime(sessions["declared_departure"], utc=True).fillna(departure)
        left_h = np.asarray((declared - departure).dt.total_seconds(), dtype=np.float64) / 3600.0
        stay_h = np.asarray((declared - arrival).dt.total_seconds(), dtype=np.float64) / 3600.0
        return cls(left_h, stay_h)


class DriverRecord:
    """What the rule measures about drivers: how many EVs left, how many left more than a step before the
    departure they declared (an EV gone while its declared time left was over one step), and by how much
    of their declared stay. Until it has seen :attr:`MIN_DEPARTURES` it counts a site's log of past
    sessions (``log``) with them where it has one, else assumes ``early_prior``; from then on only what it
    saw (the drivers of this run, not those of the weeks before)."""

    MIN_DEPARTURES = 3
    """departures seen before the record counts"""
    QUANTILE = 0.8
    """the share of the declared stay cut short that the rule plans for: this quantile of those seen"""

    def __init__(self, early_prior: float = 1.0, log: DepartureLog | None = None) -> None:
        self.early_prior = early_prior
        self.departures = 0
        self.early = 0
        self.cuts: list[float] = []
        self._log = log
        """past departures, taken in on the first step (the step length decides what counts as early)"""
        self._prior: tuple[int, int, list[float]] | None = None
        """the log's departures, early ones and cuts, counted until :attr:`MIN_DEPARTURES` were seen"""
        self._step = -2
        self._present: BoolArray | None = None
        self._left: FloatArray | None = None
        self._stay: FloatArray | None = None
        self.arrived: BoolArray = np.zeros(0, dtype=bool)
        """the chargers whose EV arrived in the step observed last (all present EVs on a first step)"""

    def observe(self, snapshot: Snapshot) -> None:
        """Take in the snapshot of the next step (a snapshot of the step already seen changes nothing)."""
        if snapshot.step_index == self._step and self._present is not None:
            return
        st = snapshot.state
        present = np.asarray(st.ev_present, dtype=bool)
        left = np.asarray(st.time_left_h, dtype=float)
        dt = float(st.dt_h)
        if self._log is not None:  # the site's log: departures seen before this run
            early = self._log.left_h > dt * (1.0 + 1e-6)
            cuts = np.where(early, (self._log.left_h - dt) / np.maximum(self._log.stay_h, dt), 0.0)
            self._prior = (len(early), int(early.sum()), cuts.tolist())
            self._log = None
        new = present.copy()
        if (
            self._present is not None
            and self._left is not None
            and self._stay is not None
            and snapshot.step_index == self._step + 1
        ):
            # gone, or replaced by a new EV on the same charger (its time left jumped up)
            gone = self._present & (~present | (left > self._left + 1e-6))
            early = gone & (self._left > dt * (1.0 + 1e-6))
            self.departures += int(gone.sum())
            self.early += int(early.sum())
            cut = np.where(early, (self._left - dt) / np.maximum(self._stay, dt), 0.0)
            self.cuts.extend(cut[gone].tolist())
            new = present & (~self._present | gone)
        if self._stay is None or len(self._stay) != len(present):
            self._stay = np.zeros(len(present))
        self._stay = np.where(new, left, self._stay)
        self.arrived = new
        self._step = snapshot.step_index
        self._present, self._left = present.copy(), left.copy()

    def early_share(self) -> float:
        """Share of departures seen that came more than a step before the declared time (until
        :attr:`MIN_DEPARTURES` were seen: counting the log's, else ``early_prior``)."""
        if self.departures >= self.MIN_DEPARTURES:
            return self.early / self.departures
        if self._prior is not None and self._prior[0] + self.departures > 0:
            return (self._prior[1] + self.early) / (self._prior[0] + self.departures)
        return self.early_prior  # nothing seen yet

    def seen_cuts(self) -> list[float]:
        """The cuts the record plans on: those seen (until :attr:`MIN_DEPARTURES` were seen, with the
        log's)."""
        if self.departures >= self.MIN_DEPARTURES or self._prior is None:
            return self.cuts
        return self._prior[2] + self.cuts

    def planned_left_h(self, state: SiteState) -> FloatArray | None:
        """Time left to plan on: the declared time left less the share of the declared stay that drivers
        are seen to cut short (:attr:`QUANTILE` of it), floored at the part of this step the EV is plugged
        in; None while no driver was seen to leave early."""
        cuts = self.seen_cuts()
        if self.early_share() <= 0 or self._stay is None or not cuts:
            return None
        q = float(np.quantile(cuts, self.QUANTILE))
        if q <= 0:
            return None
        left = np.asarray(state.time_left_h, dtype=float)
        frac = 1.0 if state.present_fraction is None else np.asarray(state.present_fraction, dtype=float)
        floor_h = frac * float(state.dt_h)
        return np.where(np.asarray(state.ev_present, bool), np.maximum(left - q * self._stay, floor_h), 0.0)


class OfferRecord:
    """What the rule offered each charger's EV beyond the energy its driver declared since it arrived (kWh,
    battery side): the top-up's own record, since a DLM does not know how much more an EV will take (it
    only sees it stop drawing when full). An offer counts once its step is over (a step decided twice
    counts its last offer), and a charger's record starts again at 0 when a new EV arrives."""

    def __init__(self) -> None:
        self._offered = np.zeros(0)
        self._last = np.zeros(0)
        self._step: int | None = None

    def offered_kwh(self, snapshot: Snapshot, arrived: BoolArray) -> FloatArray:
        """Take in the step of ``snapshot`` (``arrived``: the chargers whose EV arrived in it) and return
        what was offered so far to each charger's EV, kWh."""
        n = len(arrived)
        if len(self._offered) != n:
            self._offered, self._last, self._step = np.zeros(n), np.zeros(n), None
        if snapshot.step_index != self._step:
            self._offered = np.where(arrived, 0.0, self._offered + self._last)
            self._last = np.zeros(n)
            self._step = snapshot.step_index
        return self._offered.copy()

    @property
    def last_offer_kwh(self) -> FloatArray:
        """The offer recorded for the step decided last, kWh per charger."""
        return self._last.copy()

    def offer(self, energy_kwh: FloatArray) -> None:
        """Record this step's offer, kWh per charger (replaces an earlier offer for the same step)."""
        self._last = np.asarray(energy_kwh, dtype=float).copy()


UNDER_DECLARED_KWH = 0.1
"""an EV that took more than its driver declared by over this, kWh, was under-declared (the evaluation counts
an EV short by more than 0.1 kWh)"""


def under_declared_kwh(sessions: pd.DataFrame, quantile: float = DriverRecord.QUANTILE) -> float:
    """What EVs take beyond what their drivers declared, from a site's log of sessions (columns
    ``energy_kwh``, what the EV took, and ``declared_energy_kwh``, what its driver declared; a missing
    declaration is the energy taken): the ``quantile`` of the excess over the sessions that took more than
    declared by over :data:`UNDER_DECLARED_KWH`, kWh; 0 where none did (or the log is empty)."""
    if len(sessions) == 0 or "declared_energy_kwh" not in sessions.columns:
        return 0.0
    taken = sessions["energy_kwh"].to_numpy(dtype=float)
    declared = sessions["declared_energy_kwh"].to_numpy(dtype=float)
    excess = taken - np.where(np.isfinite(declared), declared, taken)
    under = excess[excess > UNDER_DECLARED_KWH]
    return float(np.quantile(under, quantile)) if len(under) else 0.0
