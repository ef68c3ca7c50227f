"""Deciding one control cycle: policy within a time budget, fallback, safety projection, deadband.

Reading, deciding and writing are apart (as in evcc's site loop, :mod:`serving.loop`): the loop reads the
live state into a frozen :class:`~envs.core.Snapshot`, :class:`Controller` turns it into feasible
per-charger limits, and :mod:`serving.dispatch` writes charging profiles. Every allocation, the policy's
or the fallback's, goes through :func:`envs.projection.project`; serving never re-implements a limit.

Fallback order: the policy (learned or configured) -> the rule-based DLM -> the static safe share. The
policy loses the cycle when it raises, returns a wrong shape or a non-finite value, misses its time
budget, or could not be loaded. With a stale site meter the limits are capped at the static safe share
(:func:`envs.share.safe_static_share_kw`: no headroom for increases).

Chargers the central system does not control this cycle (a station measured above its limit) enter the
decision as :class:`FixedLoad`: their measured draw is an uncontrollable load on their slot, taken off
every row they are in (node kW, node phase currents, the site) by :func:`fixed_load_view`, so the same
projection gives the rest of their node, phase and site less.

The site battery is used only while it is present (:mod:`serving.battery`: a fresh reading over a working
link, and a fresh site meter); otherwise the decision is projected on the site without its battery
(:func:`without_battery`), so whatever the policy asked of it becomes 0 kW and no charger counts on it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass

import numpy as np

from agents.base import Decision, Policy
from envs.core import BoolArray, FloatArray, SiteArrays, SiteState, Snapshot
from envs.projection import ProjectionPlan, ProjectionResult, project
from envs.rotation import Rotation, second_of_day
from serving.order import site_excess_kw
from serving.schedule import plan_schedule

LOG = logging.getLogger("evdlm.serving")


@dataclass(frozen=True)
class FixedLoad:
    """Chargers whose draw the central system cannot set this cycle (flagged offenders)."""

    mask: BoolArray
    """(n,) True for a charger whose measured draw is taken as given"""
    draw_kw: FloatArray
    """(n,) its measured power, kW (0 elsewhere)"""
    hold_kw: FloatArray
    """(n,) the limit it keeps being told (its last limit), kW (0 elsewhere)"""

    @classmethod
    def none(cls, n: int) -> FixedLoad:
        return cls(np.zeros(n, dtype=bool), np.zeros(n), np.zeros(n))

    @property
    def any(self) -> bool:
        return bool(self.mask.any())

    def reserving(self, kw: FloatArray) -> FixedLoad:
        """These chargers and, where ``kw`` (n,) > 0 and none is fixed, a draw of ``kw`` reserved as
        given (an idle charger whose transaction may start before the next cycle, at its failsafe
        share); such a charger keeps no limit (``hold_kw`` 0) and is never an EV of the decision."""
        extra = (np.asarray(kw, dtype=float) > 0) & ~self.mask
        if not extra.any():
            return self
        return FixedLoad(self.mask | extra, np.where(extra, kw, self.draw_kw), self.hold_kw)


def fixed_load_view(
    plan: ProjectionPlan, state: SiteState, fixed: FixedLoad | None
) -> tuple[ProjectionPlan, SiteState]:
    """The projection's view of the site with ``fixed`` chargers drawing their measured power regardless.

    A fixed charger is no controllable EV for the projection (its box is ``[0, 0]``); its draw is taken
    off every row it is in: each node row's limit (kW and phase current, through the plan's own row
    weights) loses ``w . draw`` (never below 0), and the site row loses it through the base load. Whatever
    the projection then returns for the others keeps every node, phase and the site within its limit with
    the fixed draws on top. No limit is re-implemented: the rows, their weights and the water-filling are
    the projection's.
    """
    if fixed is None or not fixed.any:
        return plan, state
    n = plan.n
    coords = np.zeros((1, n + 1))
    coords[0, :n] = np.where(fixed.mask, np.maximum(fixed.draw_kw, 0.0), 0.0)
    taken = plan.rows(coords)[0, :-1]  # node rows only; the last column is the site row
    view_plan = dataclasses.replace(plan, row_limit=np.maximum(plan.row_limit - taken, 0.0))
    present = np.asarray(state.ev_present, dtype=bool) & ~fixed.mask
    view_state = dataclasses.replace(
        state,
        ev_present=present,
        ev_max_charge_kw=np.where(present, state.ev_max_charge_kw, 0.0),
        base_load_kw=float(state.base_load_kw) + float(coords[0, :n].sum()),
    )
    return view_plan, view_state


def without_battery(site: SiteArrays) -> SiteArrays:
    """``site`` with no stationary battery (the projection's battery box is then ``[0, 0]``)."""
    if not site.has_battery:
        return site
    return dataclasses.replace(
        site, has_battery=False, battery_capacity_kwh=0.0, battery_max_charge_kw=0.0,
        battery_max_discharge_kw=0.0, battery_soc_min_kwh=0.0, battery_soc_max_kwh=0.0,
        battery_initial_kwh=0.0, battery_efficiency=1.0,
    )  # fmt: skip


@dataclass(frozen=True)
class CycleOutcome:
    """The result of one decision: feasible limits and how they were reached."""

    limits_kw: FloatArray
    """(n,) charging limit per charger, kW (0 where no transaction runs)"""
    policy: str
    """name of whoever decided: the policy, the fallback or 'static'"""
    fallback_reason: str | None
    meter_stale: bool
    projection: ProjectionResult
    planned_import_kw: float
    """net import the plan expects: base load + limits (fixed chargers at their measured draw) - PV"""
    assumed_kw: FloatArray
    """(n,) what the plan expects each charger to draw: its limit, or the measured draw of a fixed one"""
    schedule_kw: FloatArray | None = None
    """(n, periods) the plan sent with each TxProfile, its first column ``limits_kw``
    (:mod:`serving.schedule`); None where no schedule is planned"""
    battery_present: bool = False
    """the site battery was available to this decision"""
    battery_kw: float = 0.0
    """the battery setpoint, kW (+ charge): projected, its charging within :func:`battery_charge_room_kw`;
    0 when the battery was absent"""


def _check_decision(decision: object, n: int) -> tuple[FloatArray, float] | str:
    """The decision's arrays, or why they are unusable."""
    if not isinstance(decision, Decision):
        return "not_a_decision"
    kw = np.asarray(decision.charger_kw, dtype=float)
    if kw.shape != (n,):
        return "bad_shape"
    if not np.all(np.isfinite(kw)) or not math.isfinite(float(decision.battery_kw)):
        return "non_finite"
    return kw, float(decision.battery_kw)


class Controller:
    """Turns a snapshot into feasible limits; holds the policy, the fallback and the safe share.

    The policy runs on its own worker thread under ``budget_s``; a policy still busy from a late cycle is
    not called again until it returns (the fallback decides meanwhile). The cycle waits for it without
    yielding to the event loop: a decision is one critical section (read -> policy -> projection ->
    profiles queued) that no OCPP handler interleaves with, bounded by the budget; messages arriving
    meanwhile wait in the socket buffers. The projection plan is built once per site.
    """

    def __init__(
        self,
        site: SiteArrays,
        policy: Policy | None,
        fallback: Policy | None,
        safe_share_kw: FloatArray,
        budget_s: float,
        policy_error: str | None = None,
        departure_floor: bool = True,
        schedule_periods: int = 1,
        schedule_period_s: float = 900.0,
        control_interval_s: float = 10.0,
        rotation: Rotation | None = None,
        time_scale: float = 1.0,
    ) -> None:
        self.site = site
        self.rotation = rotation
        """the failsafe over the day (:mod:`envs.rotation`); None: ``safe_share_kw`` all day"""
        self.schedule_periods = schedule_periods
        self.schedule_period_s = schedule_period_s
        self.control_interval_s = control_interval_s
        self.time_scale = time_scale
        """the stations' seconds per wall second (a schedule period moves that much more energy)"""
        self.plan = ProjectionPlan.from_site(site)
        self.site_no_battery = without_battery(site)
        """the site as the projection sees it while the battery is absent"""
        self.plan_no_battery = (
            self.plan if self.site_no_battery is site else ProjectionPlan.from_site(self.site_no_battery)
        )
        self.departure_floor = departure_floor
        self.no_discharge_cycles = 0
        """cycles decided again without discharge (export at risk at the lowest base load the meter allows)"""
        self.export_narrowed_cycles = 0
        """cycles decided again on an export limit narrowed by the load the meter does not vouch for"""
        """project with the departure floor (an EV that must charge now to finish gets that power)"""
        self.policy = policy
        self.fallback = fallback
        self.safe_share_kw = safe_share_kw
        self.budget_s = budget_s
        self.policy_error = policy_error
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="evdlm-policy")
        self._pending: Future[Decision] | None = None
        self.policy_cpu_s = 0.0
        """CPU time the policy's worker thread spent deciding so far, s (the loop's ``loop_cpu_seconds``)"""
        self.step_request: tuple[FloatArray, float, str] | None = None
        """the policy's last request (per charger, battery, its name): the step's plan, re-projected by the
        cycles of the step that ask nothing new (:mod:`serving.step_decision`); None after a lost cycle"""

    def safe_kw(self, timestamp: np.datetime64) -> FloatArray:
        """(n,) the failsafe at ``timestamp`` (UTC): the rotation's slot in force, or the static share."""
        if self.rotation is None:
            return self.safe_share_kw
        return self.rotation.kw_at_time(timestamp)

    def _stale_caps(self, timestamp: np.datetime64, periods: int) -> FloatArray | None:
        """(n, periods) the least the failsafe allows over each schedule period from ``timestamp``, the
        first the failsafe now; None without a rotating failsafe."""
        if self.rotation is None or not self.rotation.rotates:
            return None
        t0 = second_of_day(timestamp)
        cols = [self.rotation.kw_at(t0)]
        for k in range(1, periods):
            start = t0 + k * self.schedule_period_s
            cols.append(self.rotation.lowest_between(start, start + self.schedule_period_s))
        return np.stack(cols, axis=1)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _run_policy(self, snapshot: Snapshot) -> tuple[FloatArray, float] | str:
        if self.policy is None:
            return self.policy_error or "no_policy"
        if self._pending is not None and not self._pending.done():
            return "busy"
        policy = self.policy
        fut = self._pool.submit(self._timed_act, policy, snapshot)
        self._pending = fut
        try:
            decision = fut.result(timeout=self.budget_s)
        except FutureTimeout:
            return "timeout"
        except Exception as err:
            LOG.warning("policy %s raised %s: %s", policy.name, type(err).__name__, err)
            return "raised"
        return _check_decision(decision, self.site.n)

    def _timed_act(self, policy: Policy, snapshot: Snapshot) -> Decision:
        """``policy.act`` on the worker thread, its CPU time added to :attr:`policy_cpu_s`."""
        t0 = time.thread_time()
        try:
            return policy.act(snapshot)
        finally:
            self.policy_cpu_s += time.thread_time() - t0

    def _run_fallback(self, snapshot: Snapshot) -> tuple[FloatArray, float, str] | None:
        if self.fallback is None:
            return None
        try:
            checked = _check_decision(self.fallback.act(snapshot), self.site.n)
        except Exception as err:
            LOG.error("fallback %s raised %s: %s", self.fallback.name, type(err).__name__, err)
            return None
        if isinstance(checked, str):
            LOG.error("fallback %s returned an unusable decision: %s", self.fallback.name, checked)
            return None
        return checked[0], checked[1], self.fallback.name

    def view(
        self, state: SiteState, fixed: FixedLoad | None, battery: bool = False
    ) -> tuple[ProjectionPlan, SiteState]:
        """The projection plan and state with ``fixed`` chargers as uncontrollable loads; ``battery``:
        the battery is present (else the plan of the site without it)."""
        return fixed_load_view(self.plan if battery else self.plan_no_battery, state, fixed)

    async def decide(
        self,
        snapshot: Snapshot,
        meter_stale: bool,
        fixed: FixedLoad | None = None,
        battery_present: bool = False,
        drawable_kw: FloatArray | None = None,
        battery_room_kw: float | None = None,
        base_low_kw: float | None = None,
        hold: bool = False,
    ) -> CycleOutcome:
        """Feasible limits for ``snapshot``; ``fixed`` chargers keep their ``hold_kw`` and their measured
        draw is reserved on every node, phase and the site (see :func:`fixed_load_view`). The battery
        takes part only when ``battery_present`` and the meter is fresh (else it is projected to 0 kW);
        ``drawable_kw`` (n,): what each charger may draw before this cycle's profiles arrive (its last
        limit, or its safe share where it has none), which the battery's charging leaves room for;
        ``battery_room_kw``: a further bound on its charging (the loop's, from the site meter alone).

        ``base_low_kw``: the lowest base load the site meter allows (the snapshot's base load errs high
        for the import limit, :func:`serving.at_meter.draws_at_meter`); where the decision would take the
        site past its export limit with that base load, it is decided again with no discharge at all
        (EVs and battery): a base load over-estimated while readings straddle a change must not make the
        projection discharge into an overload that is not there.

        ``hold``: the step's plan (:attr:`step_request`, the policy's last request) is projected on this
        snapshot without asking the policy (:mod:`serving.step_decision`); the policy is asked where
        there is none."""
        state = snapshot.state
        present: BoolArray = np.asarray(state.ev_present, dtype=bool)
        share = self.safe_kw(snapshot.timestamp)
        request, battery, name, reason = self._request(snapshot, hold, np.where(present, share, 0.0))
        outcome = self._project(
            snapshot, request, battery, name, reason, meter_stale, fixed, battery_present, drawable_kw,
            battery_room_kw,
        )  # fmt: skip
        if base_low_kw is None or meter_stale:
            return outcome
        export_kw = self._export_kw(outcome, base_low_kw, float(state.pv_kw))
        if export_kw <= self.site.export_limit_kw + 1e-6:
            return outcome
        # the projection counted on load the meter does not vouch for (the base load's high side, the
        # closed-loop correction, draws reserved for chargers that may start): the export limit less that
        # load on the low side holds at the low side
        seen = float(state.base_load_kw)
        held = 0.0
        if fixed is not None and fixed.any:
            seen += float(np.sum(np.maximum(fixed.draw_kw[fixed.mask], 0.0)))
            held = float(np.sum(np.where(fixed.mask & present, fixed.hold_kw, 0.0)))
        narrower = self.site.export_limit_kw - max(seen - base_low_kw - held, 0.0)
        if narrower > 0:
            narrowed = self._project(
                snapshot, request, battery, name, reason, meter_stale, fixed, battery_present, drawable_kw,
                battery_room_kw, export_limit_kw=narrower,
            )  # fmt: skip
            if self._export_kw(narrowed, base_low_kw, float(state.pv_kw)) <= self.site.export_limit_kw + 1e-6:
                self.export_narrowed_cycles += 1
                return narrowed
        LOG.info(
            "cycle %d: no discharge (%.1f kW of export at the lowest base load the site meter allows)",
            snapshot.step_index, export_kw,
        )  # fmt: skip
        self.no_discharge_cycles += 1
        calm = dataclasses.replace(
            snapshot, state=dataclasses.replace(state, ev_max_discharge_kw=np.zeros(self.site.n))
        )
        return self._project(
            calm, np.maximum(request, 0.0), max(battery, 0.0), name, reason, meter_stale, fixed,
            battery_present, drawable_kw, battery_room_kw,
        )  # fmt: skip

    def _request(
        self, snapshot: Snapshot, hold: bool, static_kw: FloatArray
    ) -> tuple[FloatArray, float, str, str | None]:
        """What is projected (per charger, battery), by whom, and why the policy lost the cycle (None
        where it did not): the step's plan held (``hold``), the policy's decision, else the fallback's,
        else ``static_kw``. Only the policy's decision becomes the step's plan (:attr:`step_request`)."""
        if hold and self.step_request is not None:
            request, battery, name = self.step_request
            return request, battery, name, None
        self.step_request = None
        got = self._run_policy(snapshot)
        if not isinstance(got, str):
            assert self.policy is not None
            kw = np.array(got[0], dtype=float)  # a copy: the policy may reuse its array
            self.step_request = (kw, got[1], self.policy.name)
            return kw, got[1], self.policy.name, None
        fb = self._run_fallback(snapshot)
        request, battery, name = (static_kw, 0.0, "static") if fb is None else fb
        LOG.info("cycle %d decided by %s (policy lost: %s)", snapshot.step_index, name, got)
        return request, battery, name, got

    def _export_kw(self, outcome: CycleOutcome, base_kw: float, pv_kw: float) -> float:
        """The site's export with ``outcome``'s limits and battery setpoint on ``base_kw``, kW."""
        imp = self.site.site_import_kw(outcome.limits_kw, base_kw, pv_kw, outcome.battery_kw)
        return -float(np.asarray(imp))

    def _project(
        self,
        snapshot: Snapshot,
        request: FloatArray,
        battery: float,
        name: str,
        reason: str | None,
        meter_stale: bool,
        fixed: FixedLoad | None,
        battery_present: bool,
        drawable_kw: FloatArray | None,
        battery_room_kw: float | None,
        export_limit_kw: float | None = None,
    ) -> CycleOutcome:
        """The decision's projection, schedule and battery setpoint (see :meth:`decide`);
        ``export_limit_kw``: the site's export limit as this decision sees it (None: the site's)."""
        share = self.safe_kw(snapshot.timestamp)
        battery_on = battery_present and not meter_stale and self.site.has_battery
        site = self.site if battery_on else self.site_no_battery
        state = snapshot.state
        present: BoolArray = np.asarray(state.ev_present, dtype=bool)
        plan, view_state = self.view(state, fixed, battery_on)
        if export_limit_kw is not None:
            site = dataclasses.replace(site, export_limit_kw=export_limit_kw)
            plan = dataclasses.replace(plan, site=site)
        if fixed is not None and fixed.any:
            request = np.where(fixed.mask, 0.0, request)
        if not battery_on:
            battery = 0.0
        res = project(site, view_state, request, battery, plan=plan, departure_floor=self.departure_floor)
        projected = np.asarray(res.charger_kw, dtype=float)
        # negative (discharge) only where the snapshot allows this EV to discharge (V2G over 2.1)
        may_discharge = np.asarray(view_state.ev_max_discharge_kw, dtype=float) > 0
        limits = np.where(present, np.where(may_discharge, projected, np.maximum(projected, 0.0)), 0.0)
        assumed = limits
        if fixed is not None and fixed.any:
            limits = np.where(fixed.mask & present, fixed.hold_kw, limits)
            assumed = np.where(fixed.mask & present, fixed.draw_kw, limits)
        if meter_stale:
            limits = np.clip(limits, 0.0, share)  # no discharge without a site meter
            assumed = np.where(fixed.mask, assumed, limits) if fixed is not None else limits
        schedule = None
        if self.schedule_periods > 1:
            schedule = plan_schedule(
                site, plan, view_state, snapshot.forecast, limits, self.schedule_periods,
                self.schedule_period_s, self.control_interval_s, self.departure_floor,
                share if meter_stale else None, self.time_scale,
            )  # fmt: skip
            caps = self._stale_caps(snapshot.timestamp, self.schedule_periods) if meter_stale else None
            if caps is not None:
                schedule = np.minimum(schedule, caps)  # a later period never past its slot's failsafe
            if fixed is not None and fixed.any:
                schedule[fixed.mask] = fixed.hold_kw[fixed.mask, None]
            # what is sent now is the schedule's first period (a discharge no deeper than it can hold)
            cut = schedule[:, 0] > limits
            limits = schedule[:, 0].copy()
            assumed = np.where(cut, limits, assumed)
        battery_kw = 0.0
        if battery_on:
            battery_kw = float(np.asarray(res.battery_kw))
            if battery_kw > 0:
                drawable = share if drawable_kw is None else drawable_kw
                room = battery_charge_room_kw(self.site, state, present, assumed, drawable)
                if battery_room_kw is not None:
                    room = min(room, battery_room_kw)
                battery_kw = min(battery_kw, max(room, 0.0))
        planned = float(
            np.asarray(self.site.site_import_kw(assumed, state.base_load_kw, state.pv_kw, battery_kw))
        )
        return CycleOutcome(
            limits, name, reason, meter_stale, res, planned, assumed, schedule, battery_on, battery_kw
        )


def battery_charge_room_kw(
    site: SiteArrays, state: SiteState, present: BoolArray, assumed_kw: FloatArray, drawable_kw: FloatArray
) -> float:
    """The most the site battery may charge (kW) without counting on chargers that draw on their own.

    A battery setpoint acts within milliseconds, a charging profile only after a round trip: a charger
    keeps its last limit until its new profile is accepted, and one without a profile (an idle charger
    that may start a transaction at any moment, or a transaction not yet given its TxProfile) draws its
    static safe share (its TxDefault profile or its station's maximum profile). The safe shares fit the
    import limit together with ``failsafe_base_load_kw``, not with a charging battery on top. So the
    battery charges only into what is left of the import limit after the base load, PV and, per charger,
    the larger of its planned draw and what it may draw now (``drawable_kw``: its last limit, or its safe
    share where it has none). A charger planned to discharge (V2G) counts as drawing nothing, never less:
    the battery does not charge from discharge it cannot count on (the EV may leave or stop).
    """
    planned = np.where(present, np.maximum(assumed_kw, 0.0), 0.0)
    reserved = float(np.sum(np.maximum(planned, drawable_kw)))
    return float(site.import_limit_kw - float(state.base_load_kw) + float(state.pv_kw) - reserved)


def keeps_feasible(
    site: SiteArrays,
    plan: ProjectionPlan,
    state: SiteState,
    kept_kw: FloatArray,
    fixed: FixedLoad | None = None,
    battery_charge_kw: float = 0.0,
) -> bool:
    """The feasibility predicate of the limits a station keeps: True when the projection leaves every
    charger of ``kept_kw`` its limit (within one step of its grid), with ``fixed`` chargers reserved at
    their measured draw (:func:`fixed_load_view`) and ``battery_charge_kw`` (the battery's charging
    setpoint, >= 0) as load. The deadband uses it to decide whether limits it would leave unsent can
    stay; ``site`` and ``plan`` are the site without its battery (:func:`without_battery`), so no kept
    limit counts on a battery discharging. The kept limits themselves must be within every limit, too:
    the projection's step of tolerance is per charger, and a node or the site above its limit by less
    than a step per charger (five chargers each 0.1 A above their new limit, within the deadband) would
    pass it."""
    if battery_charge_kw > 0:
        state = dataclasses.replace(state, base_load_kw=float(state.base_load_kw) + battery_charge_kw)
    load = kept_kw if fixed is None else np.where(fixed.mask, np.maximum(fixed.draw_kw, 0.0), kept_kw)
    if site_excess_kw(site, load, float(state.base_load_kw) - float(state.pv_kw)) > 1e-6:
        return False
    view_plan, view_state = fixed_load_view(plan, state, fixed)
    x = kept_kw if fixed is None else np.where(fixed.mask, 0.0, kept_kw)
    res = project(site, view_state, x, 0.0, plan=view_plan)
    return bool(np.all(np.asarray(res.charger_kw) >= x - site.resolution_kw - 1e-6))
