"""Model predictive control: a receding-horizon site LP re-solved every step.

Each step the MPC reads the snapshot (which EVs are plugged in, what each still needs, when it leaves,
the battery's SoC, the billing-period peak so far) and the forecast window that came with it (from a
pluggable provider: perfect, noisy or the fitted :mod:`forecasting` models), solves the site LP of
:mod:`agents.lp` over the next ``H`` steps and applies the first step.

Future arrivals: the EVs expected to arrive within the horizon are planned too, as aggregate "ghost" EVs
(:mod:`agents.mpc_demand`: energy, window and combined power per arrival and departure hour, from a
:class:`~agents.mpc_demand.DemandForecast`; by default :class:`~agents.mpc_demand.PerfectDemand`, the
scenario's own sessions aggregated, none in serving). Planned only for the EVs present, a plan fills the
cheap hours and sets a peak that the EVs arriving later break (on the real weeks most of MPC's +3 to
+5.5 % gap to the optimum). A ghost misses at ``ghost_penalty_share`` of the missing-energy penalty (1: as
an EV present; below 1 the EVs present are served first where capacity is tight); the ghosts reserve the
peak and the cheap hours. (At half the penalty a ghost's kWh was worth
little more than the energy it costs: on a depot the plan made before the vans came back set a peak for
half of them, then raised it van by van through the evening, capacity the night then lacked: 41 EVs left
short on the generated depot week.) Each kWh charged an hour later still costs ``delay_cost_per_kwh_h``
in the plan: a tie-break among similar hours, kept small (0.003) now that the ghosts reserve capacity for
the EVs to come (at 0.016 it outweighed the night's price spread over a long stay: generated residential
week +6.1 % over the optimum, +1.4 % at 0.004; the real weeks 0.1-1.9 points better too). With the
ghosts held to the transformer, 0.003 against 0.004: workplace s0 +0.36 % against +0.49 %, residential
s1 +0.84 % against +0.95 % and an EV 1.05 kWh short that the optimum serves (those two at 0.004 with the
transformer's phase rows too), tests/test_mpc.py's 10-van depot +1.2 % over the optimum at 0.004; at
0.002 a van of its 20-van depot was left short.

The LP's structure is fixed (one slot per charger over the whole horizon, zero bounds where no EV is
plugged in, then ``max_ghosts`` ghost slots outside the limit tree but for its common nodes), so it is
built once and every later step only changes bounds and costs: HiGHS re-solves the same model warm from
the previous basis.

Horizon effects: an EV (or ghost) leaving after the horizon must get within the horizon what it could not
get at full power after it (``hedge`` times its rate); the demand charge is divided by the square root of
the number of horizons left in the billing period (``peak_exponent``: a peak is paid once, and the peak a
plan sets for the day's demand serves the days after it too; the full split, exponent 1, let the peak
creep up day by day: +1 to +5 % on the real weeks); the peak already reached this period is the peak's
lower bound (sunk: planning below it gains nothing), and with ``peak_reference`` so is the peak a coarse
plan of the whole period needs after the horizon (:mod:`agents.mpc_peak`, once a day: the peak the later
days will set anyway);
energy left in the battery at the horizon end is valued at the window's median import price times the
efficiency.

Execution: a plan that fits the needs exactly under its peak turns every kWh execution loses (the grid's
rounding, the minimum current the LP relaxes) into an EV left short, since each re-plan finds the peak sunk
and ever fewer hours to raise it for. The needs of the EVs present are planned with a margin
(``need_margin``), which shrinks with the need. An EV with little slack left (its planned need above
``tight_share`` of what it can still take in the horizon at full rate) is planned as a requirement: its
missing kWh costs the plan more than the full demand charge on the power that delivers it in one step
(:func:`present_penalty`), so the plan raises the peak rather than give up a kWh it can deliver (at the
scenario's 1 EUR/kWh a van deferred to its last hours was planned short when the morning's base load met
the sunk 9 EUR/kW peak, which the optimum serves); earlier in a stay, at the scenario's penalty (on every
EV, the plan paid peak for its margin and its minimum-current repair: +10.7 % on a 10-van depot).
Among equally cheap steps the LP is indifferent which EV
charges when, and left alone it plans some into their last hour with no slack; a kWh charged at the end of
a slot's window costs ``deadline_cost_per_kwh`` more in the plan (in proportion to the step over the
window), so the EVs nearer their departure charge first. An EV within ``done_kwh`` of its request is done
(see :meth:`ModelPredictiveControl.act`).

Drivers' declarations: every deadline is planned on the stay drivers are seen to give
(:class:`agents.rule_drivers.DriverRecord`, the rule-based DLM's record: the declared time left less a
quantile of the share of the declared stay drivers cut), not on the declared departure as if true (that
plan deferred charging to cheap hours the drivers left before: jpl-2021-08-02 in the real benchmark's
declared mode, 5223 EUR and 78 EVs short of their declaration, against 3801 EUR and 72 so planned); with
every declaration kept the plan is unchanged. While drivers are seen to leave early, a kWh deferred an hour
also costs the penalty at the rate they do (the share seen to leave early over the mean declared hours the
EVs present have left), as the rule charges flexible energy now when that risk beats the price saving:
planned stays are a quantile, and deferred to cheap hours inside them the EVs of the drivers who cut
more left short (jpl-2019-10-28-v2g: 4622 -> 3448 EUR, 23 -> 11 EVs short). Energy beyond the
declaration (``top_up_kwh``, what the site's log shows EVs taking beyond it) is offered under the planned
peak (:mod:`agents.mpc_offer`).

Minimum current: the LP relaxes it; the first step's columns are repaired by fix-and-resolve
(:func:`agents.lp_repair.solve_min_current`), where an EV whose remaining room is below one minimum step
is charged all of it below the minimum (as the projection allows), not switched off until it leaves short.
Where the repaired plan stays at the peak paid for and leaves EVs present short with their first column
off, the repair runs again with those that fit the first step's room on, the cheaper plan kept
(:func:`second_repair`).
With ``plan_min_current`` the repair covers the whole plan of the EVs present (one pass, then every column
settled on or off): a plan that keeps a van below its minimum in the steps before its departure counts on
capacity that the van, executed at its minimum, then takes from another; on a night at the peak that one
leaves short (`evdlm run`'s depot: 0.17 kWh, the optimum serves it). It costs a settled re-solve per step.
Settling the whole plan can lift its peak above the relaxation's (the columns it puts on at the minimum land
on the peak's steps; a plan re-made every step then pays each lift: on the generated workplace week, seed 2,
a cloudy morning at the building's own 161.5 kW peak executed at 166.4 kW, +1.36 % over the optimum); with
``hold_peak`` the repair runs again held to the relaxation's peak and that plan is kept where the EVs present
miss no more in it (:func:`~agents.lp_repair.solve_min_current`'s ``hold``: 162.2 kW, +0.33 %).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd

from agents.allocate import Resources
from agents.base import Decision
from agents.lp import LPData, LPError, LPSolution, SiteLP
from agents.lp_repair import solve_min_current
from agents.mpc_demand import BoundDemand, DemandForecast, Ghosts, PerfectDemand, free_of_tree, no_ghosts
from agents.mpc_offer import mpc_top_up_kw
from agents.mpc_peak import PeakReference, period_left_h
from agents.optimum import off_or_minimum
from agents.rule_drivers import DriverRecord, OfferRecord
from envs.core import BoolArray, FloatArray, SiteArrays, Snapshot
from envs.physics import STEP_EPS, ceil_to_grid, ev_terms
from envs.scenario import Scenario

MUST_SHARE = 0.9
"""an EV planned as a requirement that needs more than this share of what it can still take charges now (at
every tight EV: workplace s2 +1.46 %, residential s2 +1.06 % over the optimum; see docs/policies.md)"""


def present_penalty(
    site: SiteArrays, need_kwh: FloatArray, cap_kwh: FloatArray, tight_share: float, dt_h: float
) -> tuple[FloatArray, BoolArray]:
    """The plan's penalty per missing kWh of each charger's EV, and which EVs are *tight*: those that need
    more than ``tight_share`` of what they can still take (``cap_kwh``, at full power in the horizon). A
    tight EV's kWh costs more than the full demand charge on the power that delivers it in one step: it is
    planned as a requirement, the plan raises the peak rather than give up energy it can deliver (see the
    module docstring); the others' at the scenario's penalty (earlier in a stay the plan's margin and its
    minimum-current repair are not worth a peak)."""
    tariff = site.config.tariff
    tight = np.asarray((need_kwh > 1e-9) & (need_kwh > tight_share * cap_kwh), dtype=bool)
    penalty = np.full(site.n, tariff.missing_energy_penalty_per_kwh)
    dominant = tariff.demand_charge_per_kw / (site.efficiency * dt_h)
    return np.asarray(np.where(tight, np.maximum(penalty, dominant), penalty), dtype=float), tight


def repair_args(lp: SiteLP, whole: bool) -> dict[str, object]:
    """How the MPC's plan is repaired for the minimum current: the whole plan of the EVs present kept
    executable (one repair pass, then every column settled on or off), or only its first step (two passes;
    the steps after it relaxed)."""
    first = lp.x_step == 0
    columns = first | (lp.x_slot < lp.site.n) if whole else first
    return {"passes": 1 if whole else 2, "columns": columns, "settle": whole}


def repaired_plan(
    lp: SiteLP, data: LPData, on: BoolArray, repair: dict[str, object], hold_peak: bool
) -> LPSolution:
    """The plan repaired as ``repair`` says (:func:`repair_args`), the columns ``on`` on at the minimum;
    with ``hold_peak``, held to the relaxation's peak where rounding lifts it (the columns it puts on at
    the minimum land on the peak's steps), the EVs present missing no more (see the module docstring)."""
    hold = (np.arange(lp.K) < lp.site.n) if hold_peak else None
    try:
        return solve_min_current(lp, data, warm=True, on=on, hold=hold, **repair)  # type: ignore[arg-type]
    except LPError:
        args = {k: v for k, v in repair.items() if k != "settle"}
        return solve_min_current(lp, data, warm=False, **args)  # type: ignore[arg-type]


def second_repair(
    lp: SiteLP,
    data: LPData,
    sol: LPSolution,
    on: BoolArray,
    candidates: BoolArray,
    min_kw: FloatArray,
    cap_kw: float,
    **repair: object,
) -> LPSolution:
    """The min-current repair tried again with more first columns on, the cheaper plan kept.

    The repair (:func:`agents.lp_repair.solve_min_current`) rounds each small first-step column on or off
    by its own size; on a night at the sunk peak it may switch off the first column of an EV the plan then
    leaves short and leave the first step below the peak (the capacity is lost: the peak is paid anyway),
    and the EV's shortfall moves to its last steps, where the morning's base load meets the peak and the
    execution forces it on (`evdlm run`'s 10-van depot with the peak reference: 4 kW of the sunk 27.74 kW
    unused at 05:00, two vans planned 0.64 kWh short; at 06:15 four vans on at their minimum, 30.38 kW).
    Called where the plan stays at the peak already paid for (``cap_kw``) and leaves EVs present short
    (``candidates``, with their first column off): those whose minimum fits the first step's room under
    ``cap_kw`` (what the step imports below it, plus what the columns on could give up down to their
    minimum) go on at it, the most missing first, and the repair runs again; its plan is kept where the
    LP prices it lower, else the first repair is solved again from the second's state: the next step's warm
    start then follows the first repair's columns (without it the same depot cost +5.1 %). That re-solve
    is not the first plan restored: it may land on another plan of about the same price (the 10-van
    depot: 300.11 -> 300.45 in the LP's objective), and restoring the first plan's basis instead moved the
    LP's ties against the pinned depot tests ([policies](docs/policies.md), decision time, Round 13). Where
    it is dearer than the first, this step follows the first plan (the re-solve stays the warm start)."""
    n = lp.site.n
    x0 = sol.charger_kw[:, 0]
    missing = sol.missing_kwh[:n]
    room = cap_kw - float(sol.site_import_kw[0]) + float(np.maximum(x0 - min_kw, 0.0)[x0 > 1e-6].sum())
    cand = np.flatnonzero(candidates & (x0 < 1e-6) & (missing > 1e-3))
    extra = np.zeros(n, dtype=bool)
    for i in cand[np.argsort(-missing[cand], kind="stable")]:
        if min_kw[i] <= room - 1e-6:
            extra[i] = True
            room -= float(min_kw[i])
    if not extra.any():
        return sol
    first = (lp.x_step == 0) & (lp.x_slot < n)
    more = on | (first & extra[np.minimum(lp.x_slot, n - 1)])
    try:
        again = solve_min_current(lp, data, on=more, **repair)  # type: ignore[arg-type]
    except LPError:
        again = None
    if again is not None and again.objective < sol.objective - 1e-9:
        return dataclasses.replace(again, solve_s=sol.solve_s + again.solve_s)
    spent = 0.0 if again is None else again.solve_s
    kept = solve_min_current(lp, data, on=on, **repair)  # type: ignore[arg-type]
    # the re-solve is the next step's warm start; where it landed on a dearer plan, this step follows the
    # first (depot-10c-2d-s11: a re-solve 5.5-7.5 kW under the paid peak in its first step, acted on, and
    # a van left 0.79 kWh short at +9.8 %; following the first, +0.49 %)
    best = kept if kept.objective <= sol.objective + 1e-9 else sol
    return dataclasses.replace(best, solve_s=sol.solve_s + spent + kept.solve_s)


class ModelPredictiveControl:
    """Receding-horizon LP over the next ``horizon`` steps (at most the snapshot's forecast window)."""

    name = "mpc"

    def __init__(
        self,
        horizon: int = 96,
        hedge: float = 0.9,
        delay_cost_per_kwh_h: float = 0.003,
        demand: DemandForecast | None = PerfectDemand(),
        max_ghosts: int = 64,
        peak_exponent: float = 0.5,
        ghost_penalty_share: float = 1.0,
        need_margin: float = 0.02,
        deadline_cost_per_kwh: float = 0.02,
        done_kwh: float = 0.05,
        plan_min_current: bool = True,
        early_prior: float = 1.0,
        top_up_kwh: float = 0.0,
        peak_reference: bool = True,
        tight_share: float = 0.75,
        hold_peak: bool = True,
    ) -> None:
        if horizon < 1:
            raise ValueError("horizon must be at least 1 step")
        self.horizon = horizon
        self.hedge = hedge
        self.max_ghosts = max_ghosts
        self.peak_exponent = peak_exponent
        self.ghost_penalty_share = ghost_penalty_share
        """aggregate future EVs planned for (:mod:`agents.mpc_demand`; 0: only the EVs present)"""
        self.demand = demand
        self._demand: BoundDemand | None = None
        self.delay_cost_per_kwh_h = delay_cost_per_kwh_h
        """what charging an hour later costs per kWh in the plan (see the module docstring)"""
        self.deadline_cost_per_kwh = deadline_cost_per_kwh
        """what a kWh charged in an EV's last step costs in the plan (:attr:`LPData.deadline_cost_per_kwh`)"""
        self.need_margin = need_margin
        """share added to the needs of the EVs present in the plan (see the module docstring)"""
        self.done_kwh = done_kwh
        """an EV this close to its request is done (see :meth:`act`)"""
        self.plan_min_current = plan_min_current
        """repair the minimum current over the whole plan of the EVs present, not only its first step (see
        the module docstring)"""
        self.early_prior = early_prior
        """share of drivers assumed to leave before their declared departure until a few were seen
        (:class:`~agents.rule_drivers.DriverRecord`, as the rule-based DLM)"""
        self._drivers = DriverRecord(early_prior)
        if not top_up_kwh >= 0:
            raise ValueError("top_up_kwh must be >= 0")
        self.top_up_kwh = top_up_kwh
        """how much more than their drivers declared EVs are seen to take, kWh: offered beyond the declared
        energy under the planned peak (:mod:`agents.mpc_offer`; 0: the MPC stops at the declaration)"""
        self.offers = OfferRecord()
        self.peak_reference = peak_reference
        """plan the period's peak coarsely (:mod:`agents.mpc_peak`), each day free below it (see
        docs/policies.md: residential s2 1.02 -> 0.77 % over the optimum)"""
        self.tight_share = tight_share
        """an EV needing more than this share of what it can still take in the horizon is planned as a
        requirement (:func:`present_penalty`; above 1: never)"""
        self.hold_peak = hold_peak
        """where repairing the whole plan for the minimum current lifts its peak above the relaxation's,
        repair it again held there (:func:`~agents.lp_repair.solve_min_current`'s ``hold``)"""
        self._reference: PeakReference | None = None
        self._res: Resources | None = None
        self._site: SiteArrays | None = None
        self._lp: SiteLP | None = None
        self._episode_end: pd.Timestamp | None = None
        self.solve_s: list[float] = []

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self._site = site
        self._lp = None
        self._drivers = DriverRecord(self.early_prior)
        self.offers = OfferRecord()
        self._reference = PeakReference(site, self.ghost_penalty_share, self.hedge)
        self._res = Resources.from_site(site)
        self.solve_s = []
        self._episode_end = scenario.end if scenario is not None else None
        self._demand = None
        if self.demand is not None and self.max_ghosts > 0:
            self._demand = self.demand.bind(site, scenario)

    def _structure(self, site: SiteArrays, H: int, dt_h: float) -> SiteLP:
        if self._lp is None or self._lp.T != H or abs(self._lp.dt_h - dt_h) > 1e-12:
            n = site.n
            G = self.max_ghosts if self._demand is not None else 0
            K = n + G
            self._lp = SiteLP(
                site,
                site.config.tariff,
                H,
                dt_h,
                slot_charger=np.concatenate([np.arange(n), np.arange(G) % n]),
                slot_start=np.zeros(K, dtype=np.int64),
                slot_stop=np.full(K, H, dtype=np.int64),
                slot_v2g=np.concatenate([site.bidirectional, np.zeros(G, dtype=bool)]),
                pv_curtailable=site.config.pv.curtailable if site.config.pv is not None else True,
            )
            free_of_tree(self._lp, np.arange(n, K))
            # most of its charging columns are fixed at zero at any step (no EV plugged in then, ghost slots
            # the window does not use): left out of the HiGHS model, a re-solve costs a fraction
            self._lp.compact = True
        return self._lp

    def _ghosts(self, snapshot: Snapshot, lp: SiteLP) -> Ghosts:
        G = lp.K - lp.site.n
        if self._demand is None or G == 0:
            return no_ghosts()
        return self._demand.window(snapshot.timestamp, lp.T, lp.dt_h, G)

    def act(self, snapshot: Snapshot) -> Decision:
        site = self._site
        if site is None:
            raise RuntimeError("mpc: call reset(site) before act()")
        st = snapshot.state
        # drivers seen to leave before the departure they declared: every deadline (the slot's window, its
        # last step, the energy due in the horizon) is planned on the stay they give, as the rule-based DLM
        # plans (:meth:`DriverRecord.planned_left_h`); where every driver keeps their word, on the declared
        # stay (the plan is then the same as without the record)
        self._drivers.observe(snapshot)
        planned_left = self._drivers.planned_left_h(st)
        delay = self.delay_cost_per_kwh_h
        if planned_left is not None:
            # and each kWh deferred an hour risks the penalty at the rate drivers leave early: the share seen
            # to, over the declared hours the EVs present have left
            left_h = np.asarray(st.time_left_h, dtype=float)[np.asarray(st.ev_present, dtype=bool)]
            if len(left_h):
                hazard = self._drivers.early_share() / max(float(np.mean(left_h)), float(st.dt_h))
                delay = max(delay, hazard * site.config.tariff.missing_energy_penalty_per_kwh)
            st = dataclasses.replace(st, time_left_h=planned_left)
        fc = snapshot.forecast
        dt = float(st.dt_h)
        H = max(1, min(self.horizon, fc.horizon))
        lp = self._structure(site, H, dt)
        base = np.asarray(fc.base_load_kw[:H], dtype=float).copy()
        pv = np.asarray(fc.pv_kw[:H], dtype=float).copy()
        imp = np.asarray(fc.import_price_per_kwh[:H], dtype=float).copy()
        exp = np.asarray(fc.export_price_per_kwh[:H], dtype=float).copy()
        base[0], pv[0] = float(np.asarray(st.base_load_kw)), float(np.asarray(st.pv_kw))
        imp[0], exp[0] = snapshot.import_price_per_kwh, snapshot.export_price_per_kwh

        present = np.asarray(st.ev_present, dtype=bool)
        need = np.where(present, np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0), 0.0)
        # a need below ``done_kwh`` (or below what one grid step delivers in a step) is done: it is what
        # the projection's rounding toward zero, or a step at the EV's full rate that fell just short, leaves;
        # serving it would hold the charger at its minimum for a whole step (the EV takes that, up to its
        # room), at night on a depot 1 kWh of the site's peak capacity for a few Wh, which the LP (relaxing
        # the minimum) does not see, and the EVs still charging then miss it
        done = np.maximum(self.done_kwh, site.resolution_kw * site.efficiency * dt)
        need = np.where(need < done, 0.0, need)
        # the deadline terms: the rate each charger can hold the EV at (on its grid) and whole steps left
        terms = ev_terms(site, st)
        rate = terms.rate_kw
        steps_left = np.where(present, terms.steps_left, 0)
        after = np.maximum(steps_left - H, 0)
        need_in = np.maximum(need - self.hedge * rate * site.efficiency * dt * after, 0.0)
        # sub-step time: the EV may be plugged in for part of this step only, and a declared departure
        # mid-step leaves it part of its last step (that step planned at its fraction)
        tl_steps = np.asarray(st.time_left_h, dtype=float) / dt
        stop = np.where(present, np.ceil(tl_steps - STEP_EPS), 0).astype(np.int64)
        last_frac = np.clip(tl_steps - (stop - 1), 0.0, 1.0)
        last_frac = np.where(last_frac > 1.0 - STEP_EPS, 1.0, last_frac)
        frac = np.where(np.arange(H)[None, :] == (stop - 1)[:, None], last_frac[:, None], 1.0)
        if st.present_fraction is not None:
            frac[:, 0] = np.minimum(frac[:, 0], np.asarray(st.present_fraction, dtype=float))
        steps_left = np.maximum(steps_left, stop)
        # a sliver (less than one step at the minimum) is delivered as one step at the minimum: planned at
        # its real size, the LP sees what it costs the peak; planned as the sliver, it is deferred step by
        # step (each time rounded off) until the EV leaves short
        room = np.where(present, np.asarray(st.energy_room_kwh, dtype=float), 0.0)
        min_step = np.minimum(ceil_to_grid(site.min_kw, site.resolution_kw), rate) * site.efficiency * dt
        sliver = (need_in > 1e-9) & (need_in < min_step) & (room >= min_step)
        need_in = np.where(sliver, min_step, need_in)
        # planned with a margin: the plan's peak then has room for what execution loses (the grid, the
        # minimum current the LP relaxes, remainders below a minimum step), which a plan that fits the
        # needs exactly turns into EVs leaving short (it re-plans with a sunk peak and ever fewer hours to
        # raise it for); the margin shrinks with the need, to nothing at the end of each stay
        need_plan = np.where(sliver, need_in, need_in * (1.0 + self.need_margin))
        dis = np.where(
            present, np.minimum(site.max_discharge_kw, np.asarray(st.ev_max_discharge_kw, dtype=float)), 0.0
        )
        tariff = site.config.tariff
        # the EVs expected later in the window, as aggregate ghosts in the slots after the chargers'
        g = self._ghosts(snapshot, lp)
        G = lp.K - site.n
        g_need = np.zeros(G)
        g_rate = np.zeros(G)
        g_stop = np.zeros(G, dtype=np.int64)
        g_frac = np.zeros((G, H))
        if g.size:
            k = np.arange(g.size)
            eff_g = site.efficiency[lp.slot_charger[site.n + k]]
            g_rate[k] = g.max_kw
            g_need[k] = np.maximum(g.energy_kwh - self.hedge * g.max_kw * eff_g * dt * g.after_steps, 0.0)
            g_stop[k] = g.stop
            steps = np.arange(H)[None, :]
            g_frac[k] = ((steps >= g.start[:, None]) & (steps < g.stop[:, None])).astype(float)
        zeros = np.zeros(G)
        # an expected EV is short at a lower price than an EV present: where capacity is tight, the LP
        # serves the EVs plugged in first
        penalty_g = np.full(G, self.ghost_penalty_share * tariff.missing_energy_penalty_per_kwh)
        left_h = period_left_h(site, pd.Timestamp(snapshot.timestamp, tz="UTC"), self._episode_end)
        spread = max((H * dt if left_h is None else left_h) / (H * dt), 1.0) ** self.peak_exponent
        in_stay = frac * (np.arange(H) < stop[:, None])  # each step's share of the EV's stay in the horizon
        cap_in = rate * site.efficiency * dt * in_stay.sum(axis=1)
        penalty, tight = present_penalty(site, need_plan, cap_in, self.tight_share, dt)
        # the period's peak from a coarse plan of the whole period: below it the day's plan pays no charge
        floor_kw = float(snapshot.peak_import_kw)
        if self.peak_reference and lp.has_peak and self._reference is not None:
            floor_kw = self._reference.floor_kw(
                snapshot, self._demand, self._episode_end, need, rate, steps_left, H
            )
        data = LPData(
            base_load_kw=base,
            pv_kw=pv,
            import_price_per_kwh=imp,
            export_price_per_kwh=exp,
            need_kwh=np.concatenate([need_plan, g_need]),
            max_charge_kw=np.concatenate([rate, g_rate]),
            active_stop=np.concatenate([np.minimum(steps_left, H), g_stop]),
            room_kwh=np.concatenate([np.maximum(room, need_plan), g_need]),
            dischargeable_kwh=np.concatenate(
                [np.where(present, np.asarray(st.energy_dischargeable_kwh, dtype=float), 0.0), zeros]
            ),
            max_discharge_kw=np.concatenate([dis, zeros]),
            peak_floor_kw=np.array([floor_kw]),
            battery_initial_kwh=float(np.asarray(st.battery_soc_kwh)),
            terminal_battery_value_per_kwh=float(np.median(imp)) * site.battery_efficiency,
            demand_charge_per_kw=tariff.demand_charge_per_kw / spread,
            present_fraction=np.concatenate([frac, g_frac]),
            delay_cost_per_kwh_h=delay,
            deadline_cost_per_kwh=self.deadline_cost_per_kwh,
            missing_penalty_per_kwh=np.concatenate([penalty, penalty_g]),
        )
        first = lp.x_step == 0
        # an EV that cannot get its need in the steps after this one (at its full rate), or a requirement
        # above MUST_SHARE, charges now: its first column is on at the minimum before the repair, which would
        # otherwise switch off a plan below half the minimum and leave the EV short (a plan deferred to the
        # last steps, at the site's peak; residential s1: a step off, a limit node then kept it short)
        cap_after = rate * site.efficiency * dt * in_stay[:, 1:].sum(axis=1)
        must = present & (need_in > cap_after + 1e-6)
        must |= tight & present & (need_plan > MUST_SHARE * cap_in) & (need_in > 1e-9)
        on = first & (lp.x_slot < site.n) & must[np.minimum(lp.x_slot, site.n - 1)]
        repair = repair_args(lp, self.plan_min_current)
        sol = repaired_plan(lp, data, on, repair, self.plan_min_current and self.hold_peak)
        if lp.has_peak and sol.missing_kwh[: site.n].sum() > 1e-3 and sol.peak_kw[0] <= floor_kw + 1e-6:
            kw_min = np.minimum(site.min_kw, rate * frac[:, 0])
            sol = second_repair(
                lp, data, sol, on, present & (need_in > 1e-9), kw_min, floor_kw, warm=True, **repair
            )
        self.solve_s.append(sol.solve_s)
        plan_kw = sol.charger_kw[:, 0]
        last = present & (steps_left <= 1)
        battery_kw = float(sol.battery_kw[0])
        peak_kw = max(
            float(sol.peak_kw[0]) if len(sol.peak_kw) else site.import_limit_kw, sol.site_import_kw[0]
        )
        headroom = peak_kw - base[0] + pv[0] - battery_kw
        # all the EV needs over this step, up to the next grid point: the projection rounds toward zero,
        # so capping at the exact need would leave a sliver below one grid step, then below half a minimum,
        # which the projection switches off every step until the EV leaves short
        exact_kw = need / (site.efficiency * dt)
        need_kw = ceil_to_grid(exact_kw, site.resolution_kw)
        # a charger may run below its minimum where the EV takes less (its own limit, or all it needs), as
        # the safety projection allows: such a plan is kept, not switched off
        # all its room takes in one step (the LP's minimum, :meth:`SiteLP.min_x_kw`), up to the grid: a plan
        # at the LP's minimum is at the charger's minimum here, not cut first where headroom is tight
        room_kw = ceil_to_grid(np.maximum(room, need) / (site.efficiency * dt), site.resolution_kw)
        # (and, as the projection's minimum, at most the fraction of its rate it can draw this step: an EV
        # plugged in for part of the step)
        min_kw = np.minimum(
            site.min_kw, np.where(present, np.minimum(rate * frac[:, 0], room_kw), site.min_kw)
        )
        lp_min = np.minimum(min_kw, np.maximum(room, need) / (site.efficiency * dt))
        plan_kw = np.where(
            (plan_kw > 1e-9) & (plan_kw >= lp_min - 1e-6), np.maximum(plan_kw, min_kw), plan_kw
        )
        # an EV in its last step gets what it still needs even where the plan gave up on it (the LP's slack
        # is cheaper than the minimum it would take): rounded up to the minimum, inside the headroom rule
        kw = off_or_minimum(
            plan_kw, plan_kw, min_kw, headroom, protect=last, need_kw=need_kw, finish_kw=exact_kw
        )
        if self.top_up_kwh > 0 and self._res is not None:  # beyond the declared energy, under the peak
            price = np.where(base - pv < 0, exp, imp)
            offered = self.offers.offered_kwh(snapshot, self._drivers.arrived)
            # under the peak planned, never below the peak already reached this period (sunk); with no
            # demand charge the LP plans no peak, and the offer may fill up to the import limit
            cap_kw = max(peak_kw, float(snapshot.peak_import_kw)) if lp.has_peak else site.import_limit_kw
            offer_kw = mpc_top_up_kw(
                site, self._res, self.top_up_kwh, st, kw, terms, price, cap_kw, battery_kw, offered
            )
            self.offers.offer(offer_kw * site.efficiency * dt)
            kw = kw + offer_kw
        return Decision(kw, battery_kw)
