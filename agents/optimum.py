"""The perfect-foresight optimum: one LP over the whole scenario, the physical limit no online policy beats.

In :meth:`PerfectForesightOptimum.reset` the scenario is compiled exactly as the environment compiles it
(:func:`envs.sim.compile_episode`: the same step rounding of arrivals and departures, the same requests,
rooms and V2G floors) and the site LP of :mod:`agents.lp` is solved once with HiGHS: the same cost model
(energy, export revenue, the demand charge on each billing period's peak, the missing-energy penalty,
degradation) and the same constraints as the environment, except the minimum-current rule, which is
relaxed (a charger may be scheduled below its minimum current; the projection pauses such requests on
replay, so the replayed cost can sit slightly above the LP's).

An EV still plugged in when the scenario ends is asked for the share of its request that falls inside the
scenario (pro-rated by time), so the optimum neither ignores it nor over-serves it.

:meth:`act` replays the schedule of the snapshot's step; where the simulation has fallen behind the plan
(a request paused, rounding) it adds what is needed to catch up over the EV's remaining stay.

Small scenarios (up to ``exact_max_columns`` charging columns) are solved exactly as a MILP
(:mod:`agents.lp_exact`) and replayed as they are. Larger ones have two candidate schedules, the bare
relaxation and the relaxation repaired for the minimum current (:mod:`agents.lp_repair`), each replayed
through the environment in :meth:`reset`; the cheaper is kept (``replayed_costs``).
"""

from __future__ import annotations

import time
from dataclasses import replace

import numpy as np

from agents.base import Decision
from agents.lp import LPData, LPError, LPSolution, SiteLP
from agents.lp_executable import GOOD_ENOUGH, best_executable_plan, grid_relaxation
from agents.lp_repair import solve_min_current
from envs.core import BoolArray, FloatArray, SiteArrays, Snapshot
from envs.projection import floor_to_grid
from envs.scenario import Scenario


class PerfectForesightOptimum:
    """Solve once per scenario, then replay. Needs the scenario in :meth:`reset` (simulation only)."""

    name = "optimum"

    def __init__(
        self,
        time_limit_s: float | None = 120.0,
        exact: bool = True,
        mip_rel_gap: float = 5e-4,
        node_limit: int = 1000,
        exact_max_columns: int = 400,
        repair_passes: int = 4,
    ) -> None:
        self.time_limit_s = time_limit_s
        """wall-clock safety net of the exact solve; the work is bounded by ``node_limit`` and
        ``exact_max_columns`` so that the same scenario gives the same schedule on any machine"""
        self.node_limit = node_limit
        self.exact_max_columns = exact_max_columns
        """the exact model is tried only up to this many charging columns (sessions x steps present); larger
        scenarios use the relaxation, replayed with repair (``used_exact`` says which)"""
        self.exact = exact
        self.repair_passes = repair_passes
        """fix-and-resolve passes for the minimum current where the exact model is not used (0: the bare
        relaxation)"""
        self.mip_rel_gap = mip_rel_gap
        self.used_exact = exact
        """whether the schedule in use is the exact model's (False: none near optimal in time, relaxation)"""
        self.accept_gap = max(0.005, mip_rel_gap)
        """largest proven gap at which the exact model's schedule is used"""
        self.exact_gap = float("nan")
        """the exact model's proven gap at the end of its solve (nan: not run or no schedule)"""
        self.solution: LPSolution | None = None
        self.build_s = 0.0
        self.plan_kind = "exact" if exact else "relaxed"
        """the schedule in use: ``exact`` (the MILP), ``executable`` (:mod:`agents.lp_executable`, replayed
        as it is), ``relaxed`` or ``repaired`` (replayed with catch-up)"""
        self.bound = float("nan")
        """a lower bound on every policy's cost: the relaxation's objective (with the energy no policy can
        deliver on the chargers' grid) or the exact model's proven bound; where the plan at the service price
        is kept (:func:`service_priced`), the bound of that model: on the cost of the plans serving as much"""
        self.unserved: tuple[float, float] | None = None
        """where the plan at the service price is kept: what the plan at the tariff's penalty costs executed
        and the kWh it leaves the EVs that leave short (the cheaper plan that serves less); else None"""
        self.replayed_costs: tuple[float, ...] = ()
        """executed costs of the candidate schedules where the exact model is not used (relaxed, repaired)"""
        self._site: SiteArrays | None = None
        self._planned_need: FloatArray | None = None
        self._planned_declared: FloatArray | None = None
        self._planned_missing: FloatArray | None = None
        self._planned_room: FloatArray | None = None
        self._finish = False
        self._replayed: tuple[float, float] | None = None
        """the last replay of the plan in use: its cost and the kWh the EVs that left missed"""

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        if scenario is None:
            raise ValueError("optimum: the perfect-foresight optimum needs the scenario (simulation only)")
        t0 = time.perf_counter()
        lp, data, slots = build_scenario_lp(site, scenario)
        self.build_s = time.perf_counter() - t0
        if lp.sizes["x"] > 150 * max(lp.T, 1):
            # many chargers over few steps: primal simplex beats HiGHS's default dual here (1,000 x 1 day)
            lp.highs_options["simplex_strategy"] = 4
        self.unserved = None
        self._plan(lp, data, slots, site, scenario)
        served = service_priced(lp, data, slots.departs)
        if served is data:
            return
        # the plan at the tariff's penalty leaves EVs short: planned again at the service price, kept where
        # that serves more, whatever it costs (the cheapest of the plans serving every kWh a plan can serve:
        # the yardstick serves what a policy can serve, docs/policies.md, *Delivered energy*)
        cost, short = self._executed(scenario)
        if short <= SERVED_KWH:
            return
        kept = dict(vars(self))
        self._plan(lp, served, slots, site, scenario)
        _, short_served = self._executed(scenario)
        if short_served >= short - SERVED_KWH:
            vars(self).update(kept)
        else:
            self.unserved = (cost, short)

    def _executed(self, scenario: Scenario) -> tuple[float, float]:
        """What the plan in use costs executed and the kWh it leaves the EVs that left short (its last
        replay, else a replay)."""
        return self._replay(scenario) if self._replayed is None else self._replayed

    def _plan(self, lp: SiteLP, data: LPData, slots: _Slots, site: SiteArrays, scenario: Scenario) -> None:
        """Plan ``data`` (the exact model where it is small enough and near optimal, else the best replayed
        plan) and follow it."""
        self.replayed_costs = ()
        self._replayed = None
        self._finish = False
        self.plan_kind = "relaxed"
        self.bound = float("nan")
        self.used_exact = self.exact and lp.sizes["x"] <= self.exact_max_columns
        if self.used_exact:
            try:
                self.solution = lp.solve(
                    data,
                    time_limit_s=self.time_limit_s,
                    exact=True,
                    mip_rel_gap=self.mip_rel_gap,
                    node_limit=self.node_limit,
                )
            except LPError:  # no schedule of the exact model in time: the relaxation, replayed with repair
                self.used_exact = False
            else:
                # a schedule far from proven optimal (the time limit on a large site) is often worse than
                # the relaxation's repaired replay: keep the exact one only when it is near optimal
                self.exact_gap = self.solution.mip_gap
                self.used_exact = self.exact_gap <= self.accept_gap
                if self.used_exact:
                    self.plan_kind = "exact"
                    self.bound = float(self.solution.bound or self.solution.objective)
        self._site = site
        if not self.used_exact or self.solution is None:
            self.solution = self._best_replayed(lp, data, slots, site, scenario)
        self._follow(self.solution, lp, data, slots, site)

    def _best_replayed(
        self, lp: SiteLP, data: LPData, slots: _Slots, site: SiteArrays, scenario: Scenario
    ) -> LPSolution:
        """The executable plan (:func:`agents.lp_executable.best_executable_plan`: the simulator's own
        physics, replayed as it is), the relaxation's schedule and, with ``repair_passes``, the one
        repaired for the minimum current (:func:`solve_min_current` with ``settle``, replayed with
        catch-up): each replayed through the environment, the cheapest kept (``replayed_costs``, in that
        order; the executable plan alone where it is within ``GOOD_ENOUGH`` of the bound; the search held to
        the relaxation's peak where rounding lifted it, :mod:`agents.lp_peak`). ``bound``:
        :func:`agents.lp_executable.grid_relaxation`."""
        if self.repair_passes <= 0:
            relaxed = lp.solve(data)
            self.bound = relaxed.objective
            return relaxed
        try:
            self.bound, relaxed_peak = grid_relaxation(lp, data, slots.departs)
            executable, _ = best_executable_plan(
                lp, data, slots.rate_kw, departs=slots.departs, bound=self.bound, peak_cap_kw=relaxed_peak
            )
        except LPError:
            relaxed = lp.solve(data)
            self.bound = relaxed.objective
            return relaxed
        if executable.objective - self.bound <= GOOD_ENOUGH * abs(self.bound):
            # within a hair of the bound: the relaxation's replays cannot gain more than that (1,000 x 1
            # day: they cost 20 of 43 s CPU and lost by 0.4-2 %), the executable plan is replayed alone
            self.plan_kind, self._finish = "executable", False
            self._follow(executable, lp, data, slots, site)
            self.replayed_costs = (self._replay(scenario)[0],)
            return executable
        relaxed = lp.solve(data)
        try:
            repaired = solve_min_current(lp, data, passes=self.repair_passes, settle=True)
        except LPError:
            return relaxed
        runs = []
        for sol, kind in ((executable, "executable"), (relaxed, "relaxed"), (repaired, "repaired")):
            self.plan_kind = kind
            self._finish = kind == "repaired"
            self._follow(sol, lp, data, slots, site)
            runs.append(self._replay(scenario))
        costs = [c for c, _ in runs]
        self.replayed_costs = tuple(costs)
        best = int(np.argmin(costs))
        self._replayed = runs[best]
        self.plan_kind = ("executable", "relaxed", "repaired")[best]
        self._finish = self.plan_kind == "repaired"
        return (executable, relaxed, repaired)[best]

    def _replay(self, scenario: Scenario) -> tuple[float, float]:
        """What :meth:`act` following the plan in use (:meth:`_follow`) costs through the environment (as
        evaluation runs it), and the kWh the EVs that left missed (kept in ``_replayed``)."""
        from agents.rollout import rollout
        from envs.env import ChargingSiteEnv

        env = ChargingSiteEnv(scenario=scenario, step=None, forecast_horizon=1)
        env.reset(seed=0)
        cost = missing = 0.0
        for step in rollout(self, env):
            cost -= float(step.reward)
            missing = float(step.info["energy_missing_total_kwh"])
        self._replayed = (cost, missing)
        return cost, missing

    def _follow(
        self, solution: LPSolution, lp: SiteLP, data: LPData, slots: _Slots, site: SiteArrays
    ) -> None:
        """Use ``solution``: the energy it still has to deliver to each charger's EV at every step."""
        self.solution = solution
        T = lp.T
        into = (
            np.where(
                solution.charger_kw > 0,
                solution.charger_kw * site.efficiency[:, None],
                solution.charger_kw / site.efficiency[:, None],
            )
            * lp.dt_h
        )
        planned = np.zeros((site.n, T + 1))
        # the same for what the driver declared (what the snapshot shows), where it differs from the need
        declared = np.full((site.n, T + 1), np.nan)
        missing = np.zeros((site.n, T + 1))  # what the plan leaves each EV without (its slack)
        room = np.full((site.n, T + 1), np.nan)  # V2G slots: the room the plan leaves at every step
        room_kwh = data.need_kwh if data.room_kwh is None else np.maximum(data.room_kwh, data.need_kwh)
        for k in range(lp.K):
            c, a, d = int(slots.charger[k]), int(slots.start[k]), int(slots.stop[k])
            seg = into[c, a:d]
            done = np.concatenate([[0.0], np.cumsum(seg)[:-1]])
            planned[c, a:d] = np.maximum(data.need_kwh[k] - done, 0.0)
            missing[c, a:d] = solution.missing_kwh[k]
            if lp.slot_v2g[k]:
                room[c, a:d] = room_kwh[k] - done
            if slots.declared_kwh[k] != slots.request_kwh[k]:
                declared[c, a:d] = np.maximum(slots.declared_kwh[k] * slots.inside[k] - done, 0.0)
        self._planned_need = planned
        self._planned_declared = declared
        self._planned_missing = missing
        self._planned_room = room

    @property
    def solve_s(self) -> float:
        """Solve time of the LP, s."""
        return 0.0 if self.solution is None else self.solution.solve_s

    def act(self, snapshot: Snapshot) -> Decision:
        if self.solution is None or self._site is None or self._planned_need is None:
            raise RuntimeError("optimum: call reset(site, scenario) before act()")
        site = self._site
        t = min(snapshot.step_index, self.solution.charger_kw.shape[1] - 1)
        plan_kw = self.solution.charger_kw[:, t]
        st = snapshot.state
        if self.used_exact or self.plan_kind == "executable":
            # the exact schedule is the simulator's own physics: replayed as it is, nothing is lost
            present = np.asarray(st.ev_present, bool)
            return Decision(np.where(present, plan_kw, 0.0), float(self.solution.battery_kw[t]))
        dt = float(st.dt_h)
        eff = site.efficiency
        need = np.asarray(st.energy_needed_kwh, dtype=float)
        present = np.asarray(st.ev_present, bool)
        # follow the plan's energy, not just its power: what the plan delivers this step plus what the
        # simulation is behind (or minus what it is ahead), then off-or-minimum by rounding (sigma-delta),
        # so the minimum-current rule the LP relaxed costs little
        behind_kwh = need - self._planned_need[:, t]
        assert self._planned_declared is not None
        pd_t = self._planned_declared[:, t]
        differs = np.isfinite(pd_t)
        if differs.any():
            # the snapshot shows the declared need: measure how far behind the plan is on it (0 once both
            # are met) and keep the actual need the optimum foresees
            behind_d = np.where((pd_t > 0) | (need > 0), need - np.nan_to_num(pd_t), 0.0)
            behind_kwh = np.where(differs, behind_d, behind_kwh)
            need = np.where(differs, np.maximum(self._planned_need[:, t] + behind_d, 0.0), need)
        cap_kwh = need
        assert self._planned_room is not None
        pr_t = self._planned_room[:, t]
        v2g = np.isfinite(pr_t)
        if v2g.any():
            # a V2G plan charges beyond the need to discharge later: track it on the room (what the EV
            # took in, both ways) and cap it at the room, not at the need
            room = np.asarray(st.energy_room_kwh, dtype=float)
            behind_kwh = np.where(v2g, room - np.nan_to_num(pr_t), behind_kwh)
            cap_kwh = np.where(v2g, room, need)
        target_kw = np.maximum(plan_kw, 0.0) + behind_kwh / (eff * dt)
        kw = np.where(plan_kw < 0, plan_kw, np.maximum(target_kw, 0.0))
        kw = np.where(present, kw, 0.0)
        battery_kw = float(self.solution.battery_kw[t])
        assert self._planned_missing is not None
        # a repaired plan finishes EVs below their minimum where that is all they are to get (as the
        # projection allows); the bare relaxation's replay leaves such remainders (the cheaper of the
        # two replays is kept, see _best_replayed)
        finish = np.maximum(need - self._planned_missing[:, t], 0.0) / (eff * dt) if self._finish else None
        kw = off_or_minimum(plan_kw, kw, site.min_kw, need_kw=cap_kwh / (eff * dt), finish_kw=finish)
        return Decision(kw, battery_kw)


class LPRelaxationBound(PerfectForesightOptimum):
    """The optimum's LP relaxation: the minimum current and the resolution grid relaxed. Its objective is a
    lower bound on every policy's cost that solves in a fraction of the exact model's time (see
    ``docs/policies.md``); its schedule, replayed through the projection, loses some energy to both rules
    and is caught up later (so its *executed* cost sits above both bounds)."""

    name = "optimum_lp"

    def __init__(self, time_limit_s: float | None = None) -> None:
        super().__init__(time_limit_s=time_limit_s, exact=False, repair_passes=0)


def off_or_minimum(
    plan_kw: FloatArray,
    target_kw: FloatArray,
    min_kw: FloatArray,
    headroom_kw: float = np.inf,
    protect: BoolArray | None = None,
    need_kw: FloatArray | None = None,
    finish_kw: FloatArray | None = None,
) -> FloatArray:
    """Turn an LP schedule (which relaxed the minimum current) into requests a charger can follow.

    Charging targets below the minimum go to the minimum from half of it, else to 0 (the error is carried
    to later steps by the caller's energy tracking). Where rounding up and catching up would take the
    chargers' total above ``headroom_kw`` (the planned peak), the chargers that went furthest above the plan
    fall back to it (or to 0 when the plan is below their minimum) until it fits; ``protect`` chargers
    (EVs in their last step) are left alone and rounded up, never down. Charging never exceeds
    ``need_kw`` (what the EV still needs over the step) when given; a target of at least ``finish_kw``
    (all the EV is to get, over one step) is kept even below half the minimum.
    """
    kw = np.asarray(target_kw, dtype=float).copy()
    small = (kw > 0) & (kw < min_kw)
    up = kw >= 0.5 * min_kw
    if finish_kw is not None:
        # all the EV still needs, below its minimum: the projection charges that (an EV that takes less
        # than the minimum is held to what it takes), so it is asked for, not switched off every step
        finish = np.asarray(finish_kw, dtype=float)
        up |= (finish > 1e-9) & (kw >= finish - 1e-9)
    if protect is not None:
        up |= protect  # an EV in its last step gets its minimum rather than nothing
    kw = np.where(small, np.where(up, min_kw, 0.0), kw)
    excess = float(kw.sum()) - headroom_kw
    if excess > 1e-9:
        fallback = np.where(plan_kw >= min_kw, plan_kw, np.minimum(plan_kw, 0.0))
        gain = kw - fallback
        cand = gain > 1e-9
        if protect is not None:
            cand &= ~protect
        idx = np.flatnonzero(cand)
        idx = idx[np.argsort(-gain[idx], kind="stable")]
        before = np.cumsum(gain[idx]) - gain[idx]
        cut = idx[before < excess]
        kw[cut] = fallback[cut]
    if need_kw is not None:
        kw = np.where(kw > 0, np.minimum(kw, need_kw), kw)
    return kw


class _Slots:
    def __init__(
        self,
        charger: np.ndarray,
        start: np.ndarray,
        stop: np.ndarray,
        request_kwh: np.ndarray,
        declared_kwh: np.ndarray,
        inside: np.ndarray,
    ) -> None:
        self.charger = charger
        self.start = start
        self.stop = stop
        self.request_kwh = request_kwh
        """each slot's actual request (pro-rated to the window)"""
        self.declared_kwh = declared_kwh
        """what its driver declared (pro-rated like the request)"""
        self.inside = inside
        """the share of it that falls inside the scenario"""
        self.rate_kw = np.zeros(len(charger))
        """``min(rated, EV max)`` of each slot, kW (before the grid)"""
        self.departs = np.ones(len(charger), dtype=bool)
        """whether each slot's EV leaves within the scenario (the simulator penalises only those)"""


def _departure_margin_kw(
    lp: SiteLP, dt_h: float, held_kw: FloatArray, departure_steps: FloatArray
) -> FloatArray:
    """Per discharge column the most the projection lets the EV discharge that step whatever its energy:
    what it could still take back after the step at its held rate (``spare <= future``; the projection
    also takes off the energy it still needs, which the LP's running energy and need rows cover for an EV
    it serves), grid-side kW. 0 on an EV's last step."""
    xi = lp.y_of_x
    k = lp.x_slot[xi]
    eff = lp.site.efficiency[lp.x_charger[xi]]
    time_left_h = (departure_steps[k] - lp.x_step[xi]) * dt_h
    future_kwh = held_kw[k] * eff * np.maximum(time_left_h - dt_h, 0.0)
    return future_kwh * eff / dt_h


SERVICE_MARGIN = 1.1
"""the service price is this much above what one kWh can cost to deliver (:func:`service_priced`)"""
SERVED_KWH = 1e-3
"""a plan serves more than another where it leaves the EVs that leave this much less short"""


def service_priced(lp: SiteLP, data: LPData, departs: np.ndarray) -> LPData:
    """``data`` with the energy of the EVs that leave in the scenario priced at the service price where the
    tariff's penalty is below it (else ``data`` itself): ``SERVICE_MARGIN`` times the most one kWh can cost
    to deliver (through the least efficient charger, bought at the dearest import price or forgone at the
    dearest export price, in one step, lifting the billing period's peak by its power, with the EV's and
    the battery's wear). At a penalty below that the cheapest plan gives up energy that policies deliver
    (the generated 10-charger sites at 1 EUR/kWh: 9 of 39, 0.01-11.5 kWh). The real weeks' 20 EUR/kWh is
    above their 11.3 at most (2.5 EUR/kW at 15-minute steps); generated sites at 1 EUR/kWh are priced at
    14.4 (residential) to 42.2 EUR/kWh (depot)."""
    tariff = lp.tariff
    price = max(float(np.max(data.import_price_per_kwh)), float(np.max(data.export_price_per_kwh)), 0.0)
    peak = tariff.demand_charge_per_kw / lp.dt_h if lp.has_peak else 0.0
    wear = tariff.ev_degradation_per_kwh + tariff.battery_degradation_per_kwh
    service = SERVICE_MARGIN * ((price + peak) / float(np.min(lp.site.efficiency)) + wear)
    base = (
        np.full(lp.K, tariff.missing_energy_penalty_per_kwh)
        if data.missing_penalty_per_kwh is None
        else np.asarray(data.missing_penalty_per_kwh, dtype=float)
    )
    served = np.where(np.asarray(departs, dtype=bool), np.maximum(base, service), base)
    if np.array_equal(served, base):
        return data
    return replace(data, missing_penalty_per_kwh=served)


def build_scenario_lp(site: SiteArrays, scenario: Scenario) -> tuple[SiteLP, LPData, _Slots]:
    """The site LP of a whole scenario with the environment's discretisation, and its data."""
    from envs.sim import compile_episode

    ep = compile_episode(scenario, site, horizon=0)
    T = ep.n_steps
    ses = ep.sessions
    occupied = ep.slot_session[:T]  # (T, n)
    steps, chargers = np.nonzero(occupied >= 0)
    sess = occupied[steps, chargers]
    K = ses.size
    start = np.full(K, T, dtype=np.int64)
    stop = np.zeros(K, dtype=np.int64)
    charger = np.zeros(K, dtype=np.int64)
    np.minimum.at(start, sess, steps)
    np.maximum.at(stop, sess, steps + 1)
    charger[sess] = chargers
    seen = np.zeros(K, dtype=bool)
    seen[sess] = True
    keep = np.flatnonzero(seen)
    start, stop, charger = start[keep], stop[keep], charger[keep]
    request = ses.request_kwh[keep]
    departure = ses.departure_step[keep]
    # EVs still plugged in at the end: the share of the request that falls inside the scenario
    arrival_steps, departure_steps = ses.arrival_steps[keep], ses.departure_steps[keep]
    stay = departure_steps - arrival_steps
    inside = np.where(departure > T, (T - arrival_steps) / stay, 1.0)
    need = request * np.clip(inside, 0.0, 1.0)
    max_charge = np.minimum(site.rated_kw[charger], ses.max_charge_kw[keep])
    res = site.resolution_kw[charger]
    max_charge = floor_to_grid(max_charge, res)  # what a charger on its grid actually draws
    max_dis = ses.max_discharge_kw[keep]
    v2g = max_dis > 0
    period = np.cumsum(ep.new_period[:T]) - 1
    lp = SiteLP(
        site,
        scenario.site.tariff,
        T,
        ep.dt_h,
        charger,
        start,
        stop,
        slot_v2g=v2g,
        period=period,
        pv_curtailable=scenario.site.pv.curtailable if scenario.site.pv is not None else True,
    )
    data = LPData(
        base_load_kw=ep.base_load_kw[:T],
        pv_kw=ep.pv_kw[:T],
        import_price_per_kwh=ep.import_price_per_kwh[:T],
        export_price_per_kwh=ep.export_price_per_kwh[:T],
        need_kwh=need,
        max_charge_kw=max_charge,
        active_stop=stop,
        room_kwh=np.maximum(ses.room_kwh[keep], need),
        dischargeable_kwh=ses.dischargeable_kwh[keep],
        max_discharge_kw=max_dis,
        battery_initial_kwh=site.battery_initial_kwh,
        present_fraction=ses.present_fraction(keep[:, None], np.arange(T)[None, :]),
    )
    data = replace(data, discharge_cap_kw=_departure_margin_kw(lp, ep.dt_h, max_charge, departure_steps))
    slots = _Slots(charger, start, stop, request, ses.declared_request_kwh[keep], np.clip(inside, 0.0, 1.0))
    slots.rate_kw = np.minimum(site.rated_kw[charger], ses.max_charge_kw[keep])
    slots.departs = departure <= T
    return lp, data, slots
