"""What the simulated stations send: the OCPP messages of an EV's arrival, departure and meter readings,
and the site meter pushed to the central system."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from typing import TYPE_CHECKING

from stationsim import messages as msg
from stationsim.physics import SimConnector, ev_energies_kwh
from stationsim.stations import SimCP

if TYPE_CHECKING:
    from stationsim.simulator import SiteSimulator


async def handle_event(sim: SiteSimulator, cp: SimCP, kind: str, c: SimConnector) -> None:
    """Send what a station event (an EV arrives or departs, a meter reading is due) means in OCPP."""
    v = sim.version[c.station]
    if kind == "arrive":
        s = c.session
        if s is None:
            return
        if v == "1.6":
            await sim._call(cp, msg.status16(c, "Preparing"))
            res = await sim._call(cp, msg.start16(c))
            if res is not None and res.id_tag_info.get("status") == "Accepted" and c.session is s:
                c.tx_id = str(res.transaction_id)
            await sim._call(cp, msg.status16(c, "Charging"))
        else:
            tx = msg.tx_id201(c)
            v21 = v == "2.1"
            c.v2x = v21 and bool(s.get("v2g", False)) and bool(sim.site.bidirectional[c.charger])
            # a 2.0.1 station names its transaction itself: it is the station's from here, so a profile
            # for it that comes before the answer is read, or after the answer was too late, is taken
            # (else the central system, which knows it, had every profile for it refused)
            c.tx_id = tx
            await sim._call(cp, msg.started201(c, tx, export=v21))
            if c.session is s and c.tx_id == tx:
                departure = sim.wall_of(s["departure"])
                if v21:
                    (room,), (dis,) = ev_energies_kwh([c], sim.physics.v2g_min_soc)
                    await sim._call(cp, msg.charging_needs21(sim.site, c, departure, float(dis), float(room)))
                else:
                    await sim._call(cp, msg.charging_needs201(sim.site, c, departure))
    elif kind == "depart":
        ending = c.tx_id
        c.tx_id = None
        c.power_kw = 0.0
        if ending is None:
            return
        if v == "1.6":
            await sim._call(cp, msg.stop16(c, ending))
            await sim._call(cp, msg.status16(c, "Available"))
        else:
            await sim._call(cp, msg.ended201(c, ending))
    elif kind == "trigger" and c.tx_id is not None:
        # the central system asked for the reading now (TriggerMessage): the draw under the profile just
        # installed, which the physics applies at its next tick
        ticks = sim.physics.ticks
        while ticks and sim.physics.ticks == ticks and sim._running:
            await asyncio.sleep(sim.opt.tick_s / 4)
        if c.tx_id is not None:
            await sim._call(cp, msg.triggered_meter_values(c, v))
    elif kind == "meter" and c.tx_id is not None:
        payload = msg.meter_values16(c) if v == "1.6" else msg.updated201(c, v == "2.1")
        rng = sim._rng(c.station)
        if sim.opt.late_meter_share > 0 and rng.random() < sim.opt.late_meter_share:
            delay_s = sim.opt.meter_interval_s * float(rng.uniform(0.5, 2.0))
            sim._late[c.station].append((time.monotonic() + delay_s, payload))
            return
        await sim._call(cp, payload)


async def meter_push(sim: SiteSimulator) -> None:
    """Push the simulated site meter to the central system's meter endpoint while the run lasts, from the
    first physics tick on (before it the site's import is no measurement: a 0 beside a running battery
    would tell the central system the base load is negative)."""
    import aiohttp

    assert sim.opt.meter_push_url is not None
    headers = {}
    if sim.opt.operator_token:
        headers["Authorization"] = f"Bearer {sim.opt.operator_token}"
    async with aiohttp.ClientSession(headers=headers) as http:
        while sim._running:
            if sim.physics.ticks == 0:
                await asyncio.sleep(0.01)  # no reading before the simulated site exists (clock not started)
                continue
            body = {
                "import_kw": round(sim.physics.site_import_kw, 4),
                "pv_kw": sim.physics.pv_kw,
                "timestamp": msg.now_iso(),  # its clock: the simulated site holds its power between ticks
            }
            with contextlib.suppress(Exception):
                async with http.post(sim.opt.meter_push_url, data=json.dumps(body)) as resp:
                    await resp.read()
            every = sim.opt.site_meter_interval_s
            await asyncio.sleep(min(1.0, sim.opt.meter_interval_s) if every is None else every)
