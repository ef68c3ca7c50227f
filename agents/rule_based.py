"""The rule-based DLM: the operator's dependable default and the live fallback.

No learning and no solver: a handful of vectorised rules over the snapshot, fast enough to run every
second for 1,000 chargers. Each step it

1. **keeps every deadline** (laxity): an EV that could no longer finish at a conservative fraction
   ``hedge`` of its full power later gets what it *must* have now, first, within the hard limits, least
   laxity first (on the declared time left, as LLF; where the rule plans on shorter stays, rule 3, what
   its plan forces sets the load on each limit, and that load goes out in LLF's order: :func:`in_order`);
2. **uses PV surplus first**: surplus the site would export is offered to every EV that still needs energy;
3. **schedules by price** (time-based): an EV also charges now when now is among the cheapest steps of its
   remaining stay (from the price forecast) that it needs, counting the power it can expect to get when
   the site is shared (with the present EVs and those expected to arrive before it leaves,
   :class:`agents.rule_arrivals.ArrivalRecord`), so flexible energy goes to cheap hours when the
   deadline allows. The stay is what the driver declared, so the rule measures how drivers keep their
   word (:class:`agents.rule_drivers.DriverRecord`: the
   share that left more than a step before the declared departure, and how much of the declared stay
   they cut short). Where the missing-energy penalty times that share beats the price saving of waiting,
   it charges flexible energy now (least laxity first, under the peak target) and plans every deadline on
   the stay drivers are seen to give (the declared time left less the 80th percentile of the cut). Until
   a few departures are seen it counts the site's log of declared departures where it has one
   (:class:`agents.rule_drivers.DepartureLog`), else assumes drivers may leave early; where none do it
   schedules by price as before. Drivers also declare a little less energy than their EV takes: where
   the site's log shows it (``top_up_kwh``), every EV whose declared energy is in is offered up to that
   much more (less what the rule already offered it), with the PV surplus and the room under the peak
   target left in its cheapest steps (at least one minimum-power step with ``top_up_min_steps``); the rule
   does not know how much more an EV takes, and an EV that is full takes nothing (:func:`top_up_kw`);
4. **shaves the peak**: all charging beyond what deadlines force stays under a billing-period peak
   target. The target starts at the level that minimises demand charge plus the energy cost of the
   present EVs (deadline-feasible for them and for the expected arrivals; "valley filling" of the
   forecast net load, priced by the forecast) and is raised only when forced charging pushes the import
   above it (then the new peak is the target);
5. **discharges** the stationary battery and, where the session allows V2G, EVs only in expensive hours
   (price above the cheapest recharge price in the window divided by the round-trip efficiency, plus
   degradation) and only so much that every EV can still reach its departure energy at hedged full power
   in the later steps whose recharge pays (and the limit tree and the connection can bring it back then,
   within the export limit); while an EV's own discharge pays it charges nothing unforced, and in a step
   where EVs discharge no EV charges beyond what deadlines and PV give it (no EV -> grid -> EV round
   trips); the battery also shaves import above the target and charges from PV surplus and in the
   cheapest hours.

Every request still goes through the safety projection; the fills count each EV at full power as the
projection applies it (on the charger's grid), so none of a full connection is left unused for that.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from agents.allocate import Resources, fair_fill, greedy_fill, resource_use, site_headroom_kw
from agents.base import Decision
from agents.rule_arrivals import ArrivalRecord, arrivals_due_kwh
from agents.rule_deadlines import Deadlines, forced_kw
from agents.rule_drivers import DepartureLog, DriverRecord, OfferRecord
from agents.rule_schedule import BillingClock, cheap_now, expected_kw, peak_target, room_kwh
from agents.rule_storage import RefillRoom, battery_setpoint_kw, ev_discharge_kw, v2g_pays
from envs.core import FloatArray, IntArray, SiteArrays, SiteState, Snapshot
from envs.physics import EVTerms, ev_terms
from envs.projection import ceil_to_grid, charger_bounds, floor_to_grid
from envs.scenario import Scenario

if TYPE_CHECKING:
    from agents.mpc_demand import ProfileDemand


class RuleBasedDLM:
    """Deadline-aware, price-aware, peak-shaving rule-based allocator.

    Arguments:
        hedge: fraction of its full power an EV is assumed to get in future steps when deciding what it
            must charge now (lower = earlier, safer, dearer), while drivers are seen to leave before the
            departure they declared (or none was seen yet, with ``early_prior`` > 0); where every driver
            seen kept it, the rule plans on full power.
        v2g: allow V2G discharge of EVs whose session allows it.
        use_battery: operate the stationary battery.
        period_scaling: weigh the window's energy cost by the windows left in the billing period when
            choosing the peak target (a peak is paid once per period, energy every day).
        target_margin: the energy due by each deadline must fit in this fraction of the room under the
            peak target (lower = a higher, safer target).
        node_margin: the energy deadlines force through a node of the limit tree (or through the connection
            under the peak target) must fit in this fraction of its capacity in the later steps; the rest
            is charged now (lower = earlier, safer).
        top_up_kwh: how much more than their drivers declared EVs are seen to take (kWh,
            :func:`agents.rule_drivers.under_declared_kwh` of the site's log of sessions); every EV whose
            declared energy is in is offered up to this much more, with what is left under the peak target
            (:func:`top_up_kw`; an EV with a battery to spare takes it all); 0 (no log, or drivers who
            declare what their EVs take): the rule stops at the declared energy.
        top_up_min_steps: the top-up offers every EV at least this many minimum-power steps (its
            charger's minimum on the grid for one step, after losses), whatever ``top_up_kwh`` says: a log
            of a few days may show no driver declaring less than the EV takes, and one minimum-power step
            is the least a charger can add (the projection lifts any smaller request to it). 0: only
            ``top_up_kwh``. For sites where drivers declare (declared mode of the real-data benchmark: 1).
        departure_log: how the drivers of the site's past sessions kept the departure they declared
            (:class:`agents.rule_drivers.DepartureLog`): the record of drivers starts from it, so the rule
            plans on the stays drivers give from the first step; none: ``early_prior`` until a few
            departures are seen.
    """

    name = "rule_based"

    def __init__(
        self,
        hedge: float = 0.9,
        v2g: bool = True,
        use_battery: bool = True,
        period_scaling: bool = True,
        target_margin: float = 0.95,
        node_margin: float = 0.9,
        early_prior: float = 1.0,
        arrival_prior: ProfileDemand | None = None,
        top_up_kwh: float = 0.0,
        departure_log: DepartureLog | None = None,
        top_up_min_steps: float = 0.0,
    ) -> None:
        if not 0 < hedge <= 1:
            raise ValueError("hedge must lie in (0, 1]")
        self.hedge = hedge
        self.v2g = v2g
        self.use_battery = use_battery
        self.period_scaling = period_scaling
        self.target_margin = target_margin
        self.node_margin = node_margin
        self.early_prior = early_prior
        """share of drivers assumed to leave before their declared departure until a few were seen to
        leave (1: do not bet on declarations; 0: trust them)"""
        self._site: SiteArrays | None = None
        self._res: Resources | None = None
        self._min_grid_kw: FloatArray | None = None
        self._clock: BillingClock | None = None
        self.departure_log = departure_log
        """how drivers kept their declared departures in the site's log (none: ``early_prior``)"""
        self._drivers = DriverRecord(early_prior, departure_log)
        self.offers = OfferRecord()
        """what the top-up offered each EV beyond its declared energy (:func:`top_up_kw`)"""
        self.arrival_prior = arrival_prior
        """past sessions the record of arrivals starts from (:mod:`agents.rule_arrivals`; none: empty)"""
        self._arrivals: ArrivalRecord | None = None
        if not top_up_kwh >= 0:
            raise ValueError("top_up_kwh must be >= 0")
        self.top_up_kwh = top_up_kwh
        if not top_up_min_steps >= 0:
            raise ValueError("top_up_min_steps must be >= 0")
        self.top_up_min_steps = top_up_min_steps

    def reset(self, site: SiteArrays, scenario: Scenario | None = None) -> None:
        self._drivers = DriverRecord(self.early_prior, self.departure_log)
        self.offers = OfferRecord()
        self._arrivals = ArrivalRecord(site.config.timezone, self.arrival_prior)
        self._site = site
        self._res = Resources.from_site(site)
        # each charger's minimum power on its resolution grid (kW), the least the projection lets it draw
        self._min_grid_kw = ceil_to_grid(site.min_kw, site.resolution_kw)
        self._clock = BillingClock(site, scenario.end if scenario is not None else None)

    # ------------------------------------------------------------------ helpers

    def _planned_need(self, state: SiteState, hi_kw: FloatArray) -> FloatArray:
        """Energy each EV is planned on, kWh (>= 0): its need, except that a remainder ``0 < need <
        min(min power on the grid, hi) * eff * dt`` counts as one such minimum-power step.

        Why: no charger draws less than its minimum, so a smaller request is changed by the projection:
        switched off (the EV leaves short) or, where it covers the whole need, lifted to the minimum in
        whatever step the rule put it, past the peak target the rule planned for. Planned as one whole
        minimum-power step, the remainder is delivered (with a little extra) in the step the price / peak
        rules choose. ``hi_kw`` (the projection's upper bound, which counts the EV's room) caps the step.
        """
        site, min_grid = self._site, self._min_grid_kw
        assert site is not None and min_grid is not None
        need = np.maximum(np.asarray(state.energy_needed_kwh, dtype=float), 0.0)
        step_kwh = np.minimum(min_grid, np.maximum(hi_kw, 0.0)) * site.efficiency * float(state.dt_h)
        return np.where((need > 1e-9) & (need < step_kwh), step_kwh, need)

    # ------------------------------------------------------------------ policy

    def act(self, snapshot: Snapshot) -> Decision:
        site, res, clock = self._site, self._res, self._clock
        if site is None or res is None or clock is None:
            raise RuntimeError("rule_based: call reset(site) before act()")
        st = snapshot.state
        fc = snapshot.forecast
        dt = float(st.dt_h)
        self._drivers.observe(snapshot)
        arrivals = self._arrivals
        assert arrivals is not None
        arrivals.observe(snapshot)
        declared_left = np.asarray(st.time_left_h, dtype=float)
        planned_left = self._drivers.planned_left_h(st)
        if planned_left is not None:  # drivers leave before they declared: plan on the stay they give
            st = dataclasses.replace(st, time_left_h=planned_left)
            snapshot = dataclasses.replace(snapshot, state=st)
        base_now = float(np.asarray(st.base_load_kw))
        pv_now = float(np.asarray(st.pv_kw))
        H = max(fc.horizon, 1)
        net_h = np.asarray(fc.base_load_kw, dtype=float) - np.asarray(fc.pv_kw, dtype=float)
        net_h[0] = base_now - pv_now
        imp_h = np.asarray(fc.import_price_per_kwh, dtype=float).copy()
        exp_h = np.asarray(fc.export_price_per_kwh, dtype=float).copy()
        imp_h[0], exp_h[0] = snapshot.import_price_per_kwh, snapshot.export_price_per_kwh
        # marginal price of charging: what surplus PV would earn exported, else the import price
        price_h = np.where(net_h < 0, exp_h, imp_h)

        # every rule plans on the need with small remainders rounded up to a minimum-power step
        _, hi_kw = charger_bounds(site, st)
        need = self._planned_need(st, hi_kw)
        present = np.asarray(st.ev_present, dtype=bool)
        eff = site.efficiency
        # the box, never above the need; the need's power rounded up to the grid, so that the projection's
        # rounding toward zero does not leave the EV a sliver short when it finishes, and the box's top
        # rounded down to it, the most the projection applies (6.6 kW asked, 6.594 applied): the fills then
        # hand what an EV at full power cannot draw to the next EV instead of leaving it unused under the
        # target (on the real weeks in declared mode, 0.1-0.2 kW in steps at the target)
        caps = np.maximum(
            np.minimum(
                floor_to_grid(hi_kw, site.resolution_kw), ceil_to_grid(need / (eff * dt), site.resolution_kw)
            ),
            0.0,
        )
        # the deadline terms on the planned need: the rate each charger can hold, steps left, laxity, what
        # each EV must draw now and what it could spare at the hedged rate
        # the hedge guards the plan against an EV getting less than its full power in the steps it has
        # left as planned: chiefly its driver leaving before the departure declared (contention for a node
        # or the connection has its own margins). Where every driver seen kept the departure declared, the
        # hedge guards nothing and only forces EVs whose laxity is under (1 - hedge) of their stay to full
        # power from arrival, however high the base load then is (the evening peak of a workplace).
        hedge = self.hedge if self._drivers.early_share() > 0 else 1.0
        terms = ev_terms(site, st, need, hedge)
        rate, steps_left = terms.rate_kw, terms.steps_left
        # an EV whose room is under one grid step still counts (its caps are 0): the rules plan for it
        active = present & (np.minimum(hi_kw, need) > 0) & (need > 1e-9)
        idx = np.flatnonzero(active)

        dl = Deadlines.of(need / eff, hedge * rate * dt, steps_left, terms.must_kw, active)

        # what the EVs expected to arrive ask for, and want by each departure step of the present EVs
        arriving = arrivals.expected_kwh(snapshot, H)
        stays = arrivals.stays_ahead(snapshot, H)
        arr_due = arrivals_due_kwh(arriving, stays, dl.ks)

        # ---- 4. peak target (demand charge): the cheapest deadline-feasible level, never below the peak
        peak_so_far = float(snapshot.peak_import_kw)
        windows = clock.hours_left(snapshot.timestamp, H * dt) / (H * dt) if self.period_scaling else 1.0
        target = peak_target(
            site,
            dt,
            need,
            eff,
            steps_left,
            active,
            net_h,
            price_h,
            peak_so_far,
            dl,
            windows,
            self.target_margin,
            arr_due,
            imp_h,
        )
        expect_kw = expected_kw(need, rate, steps_left, active, net_h, target, H, arriving)

        # ---- 1. deadlines: what must be charged now so that every EV, and every node of the limit tree
        # and the connection under the peak target, can still deliver what deadlines force through it
        room = room_kwh(net_h, target, dt, dl.ks, self.target_margin)
        must = forced_kw(res, dl, caps, room.after_now - arr_due, dt, self.node_margin)
        # served in the order of the laxity on the declared time left (as LLF), not on the stay planned:
        # the planned stay cuts every EV's by a share of its declared stay, so on a full connection an EV
        # with a long stay would go before one whose driver leaves now and leave it short
        laxity = terms.laxity_h + (declared_left - np.asarray(st.time_left_h, dtype=float))
        order = idx[np.argsort(laxity[idx], kind="stable")]
        hard = res.limits(site_headroom_kw(site, st))
        a_must = greedy_fill(res, hard, must, order)
        forced_import = base_now - pv_now + float(a_must.sum())
        target = max(target, forced_import)

        # ---- 2 + 3. PV surplus and cheap hours, under the target
        rem_caps = np.maximum(caps - a_must, 0.0)
        soft = np.maximum(
            res.limits(site_headroom_kw(site, st, cap_kw=target)) - resource_use(res, a_must), 0.0
        )
        hard_left = np.maximum(hard - resource_use(res, a_must), 0.0)
        soft = np.minimum(soft, hard_left)
        surplus = max(pv_now - base_now - float(a_must.sum()), 0.0)
        a_pv = np.zeros(site.n)
        if surplus > 0 and len(idx):
            pv_lim = soft.copy()
            pv_lim[-1] = min(pv_lim[-1], surplus)
            a_pv = fair_fill(res, pv_lim, np.where(active, rem_caps, 0.0))
            rem_caps -= a_pv
            soft = np.maximum(soft - resource_use(res, a_pv), 0.0)
        # ---- 3. cheap hours: defer flexible energy to them, unless drivers are seen to leave before they
        # declared often enough that the penalty risk of waiting beats the price saving (then charge now)
        risk = self._drivers.early_share() * site.config.tariff.missing_energy_penalty_per_kwh
        if risk > 0 and risk * float(np.mean(eff)) > float(price_h[0] - price_h.min()):
            want = rem_caps
        else:
            want = cheap_now(need, rate, expect_kw, eff, dt, steps_left, active, price_h, H)
        if self.v2g and site.bidirectional.any():
            # an EV whose own round trip pays now (V2G) waits for the cheaper hours it would recharge in
            firm_import = base_now - pv_now + float((a_must + a_pv).sum())
            want = np.where(v2g_pays(site, snapshot, terms, imp_h, firm_import), 0.0, want)
        want = np.minimum(want, rem_caps)
        a_cheap = greedy_fill(res, soft, want, order, site.min_kw)
        soft = np.maximum(soft - resource_use(res, a_cheap), 0.0)
        surplus = max(surplus - float((a_pv + a_cheap).sum()), 0.0)
        served = a_must + a_cheap
        if planned_left is not None:  # forced by a planned stay: the same load, in LLF's order
            use = resource_use(res, served)
            served = in_order(res, served, a_must + want, order, site.min_kw, soft)
            more = resource_use(res, served) - use  # what the room under the target gave, per resource
            soft = np.maximum(soft - more, 0.0)
            surplus = max(surplus - float(more[-1]), 0.0)
        charger_kw = served + a_pv
        # optional charging the fills left below the minimum goes off (what deadlines force stays: the
        # projection lifts it to the minimum where there is room)
        low = (
            (charger_kw > 0) & (charger_kw < site.min_kw - 1e-9) & (charger_kw < caps - 1e-9) & (a_must <= 0)
        )
        charger_kw[low] = 0.0
        # ---- 3b. top-up beyond the declared energy, with what is left under the target; an EV takes no
        # more than its room (the projection's cap: what it draws once full)
        offered = self.offers.offered_kwh(snapshot, self._drivers.arrived)
        top_up: float | FloatArray = self.top_up_kwh
        if self.top_up_min_steps > 0:  # at least that many of the least steps a charger can add
            min_grid = self._min_grid_kw
            assert min_grid is not None
            top_up = np.maximum(top_up, self.top_up_min_steps * min_grid * eff * dt)
        offer_kw = top_up_kw(site, res, top_up, st, charger_kw, terms, price_h, soft, surplus, H, offered)
        charger_kw += np.minimum(offer_kw, np.maximum(hi_kw - charger_kw, 0.0))

        import_kw = base_now - pv_now + float(charger_kw.sum())
        cheapest = float(imp_h.min())
        # ---- 5. V2G in expensive hours, only from EVs that keep their departure energy
        if self.v2g and site.bidirectional.any():
            # where discharging pays, no EV charges beyond what deadlines and PV give it: charged now from
            # another EV's discharge, it would cost that EV's round trip instead of a cheaper recharge later
            firm_kw = np.minimum(charger_kw, a_must + a_pv)
            firm_import = base_now - pv_now + float(firm_kw.sum())
            # what it gives, the deadline rule must be able to bring back in the paying steps
            refill = RefillRoom(
                res, need, net_h, target, self.target_margin, self.node_margin,
                lambda ks: arrivals_due_kwh(arriving, stays, ks),
            )  # fmt: skip
            v2g_kw = ev_discharge_kw(site, snapshot, firm_kw, terms, imp_h, firm_import, hedge, refill)
            if v2g_kw.any():  # the top-up, beyond what deadlines and PV give, is not offered
                charger_kw, import_kw = firm_kw - v2g_kw, firm_import - float(v2g_kw.sum())
                offer_kw = np.zeros(site.n)
        self.offers.offer(offer_kw * eff * dt)
        battery_kw = 0.0
        if self.use_battery and site.has_battery:
            battery_kw = battery_setpoint_kw(site, snapshot, import_kw, target, imp_h, price_h, cheapest)
        return Decision(charger_kw, battery_kw)


def in_order(
    res: Resources,
    alloc_kw: FloatArray,
    want_kw: FloatArray,
    order: IntArray,
    min_kw: FloatArray,
    spare: FloatArray | None = None,
) -> FloatArray:
    """What ``alloc_kw`` draws through each resource (kW per charger), and what is left under the peak
    target (``spare``, per resource), handed out again in ``order``, each charger up to ``want_kw`` (off or
    at least ``min_kw``): at most that load on every limit, other EVs served.

    Why: once the rule plans on stays shorter than declared (:meth:`DriverRecord.planned_left_h`), its
    plan forces EVs by a cut that scales with each EV's declared stay, so it forces an EV that declared a
    long stay before one with a shorter stay and less laxity on the time its driver declared. Served
    first, the forced energy took a full connection and the other EV, whose driver left early, left short
    (on the real week jpl-2021-08-02, declared mode, one EV more than LLF). What the plan forces still
    decides how much flows (and the peak target); who gets it is LLF's order. The room left under the target
    goes with it: the fills left it where it was less than the minimum power of the EV that wanted it, and
    the EV that LLF's order serves later may take it (on jpl-2021-08-02, 0.3-1.3 kW in congested steps).
    """
    limit = resource_use(res, alloc_kw) + (0.0 if spare is None else spare)
    return greedy_fill(res, limit, np.maximum(want_kw, 0.0), order, min_kw)


def top_up_kw(
    site: SiteArrays,
    res: Resources,
    top_up_kwh: float | FloatArray,
    st: SiteState,
    charger_kw: FloatArray,
    terms: EVTerms,
    price_h: FloatArray,
    soft: FloatArray,
    surplus_kw: float,
    H: int,
    offered_kwh: FloatArray,
) -> FloatArray:
    """What the rule-based DLM offers beyond the declared energy (kW per charger, >= 0): its top-up.

    Why: drivers do not know what their EV will take, and the site's log shows EVs taking more than
    their drivers declared (up to ``top_up_kwh``, a quantile of that excess). The rule does not know
    how much more an EV will take either (it sees an EV stop drawing when it is full), so it offers
    every present EV whose declared energy is in by the end of this step what is left of
    ``top_up_kwh`` after what it already offered it (``offered_kwh``, :class:`OfferRecord`), each kWh
    worth the missing-energy penalty: where that beats the marginal price now, from the PV surplus left
    over, or where now is among the cheapest steps of the EV's stay that the offer needs (as the
    declared energy is scheduled), only from what ``soft`` (each resource's room left under the peak
    target once every declared need was served) still holds, up to the charger's and the EV's power
    (not its room: an EV that is full takes nothing, at no cost). The top-up never raises the peak
    target and never takes from a declared need; ``top_up_kwh = 0`` offers nothing (a float, or one
    value per charger).
    """
    n = site.n
    if not np.any(
        np.asarray(top_up_kwh) > 0
    ):  # the registered policy and serving: nothing to offer, no work on the hot path
        return np.zeros(n)
    worth = site.config.tariff.missing_energy_penalty_per_kwh
    eff, dt = site.efficiency, float(st.dt_h)
    need = np.maximum(np.asarray(st.energy_needed_kwh, dtype=float), 0.0)
    left_kwh = np.maximum(top_up_kwh - offered_kwh, 0.0)
    frac = 1.0 if st.present_fraction is None else np.asarray(st.present_fraction, dtype=float)
    room_kw = np.maximum(terms.rate_kw * frac - charger_kw, 0.0)
    top = (
        np.asarray(st.ev_present, dtype=bool)
        & (need <= charger_kw * eff * dt + 1e-9)  # the declared energy is in by the end of this step
        & (left_kwh > 1e-9)
        & (room_kw > 0)
    )
    if not top.any() or worth * float(np.mean(eff)) <= float(price_h[0]):
        return np.zeros(n)
    want = np.where(top, np.minimum(room_kw, ceil_to_grid(left_kwh / (eff * dt), site.resolution_kw)), 0.0)
    order = np.flatnonzero(top)
    order = order[np.argsort(terms.steps_left[order], kind="stable")]  # leaving first
    pv_lim = soft.copy()
    pv_lim[-1] = min(pv_lim[-1], surplus_kw)
    a_pv = greedy_fill(res, pv_lim, want, order, site.min_kw) if surplus_kw > 0 else np.zeros(n)
    left = np.maximum(want - a_pv, 0.0)
    cheap = cheap_now(
        left_kwh,
        terms.rate_kw,
        np.where(top, terms.rate_kw, 0.0),
        eff,
        dt,
        terms.steps_left,
        top,
        price_h,
        H,
    )
    soft = np.maximum(soft - resource_use(res, a_pv), 0.0)
    a_cheap = greedy_fill(res, soft, np.minimum(left, cheap), order, site.min_kw)
    return a_pv + a_cheap
