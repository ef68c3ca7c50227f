"""The operator dashboard: history and JSON helpers, the HTTP routes, and end to end in headless Chromium.

The browser test drives Debian's ``chromium`` through its ``chromedriver`` (Selenium, never a downloaded
browser) against the service and a simulated site on 127.0.0.1: the numbers on the page must be those of
``/api/state``, a station ignoring its profile must be flagged, and a screenshot is kept as an artifact
(``tmp_path`` and, when set, ``$EVDLM_ARTIFACTS``).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import given
from hypothesis import strategies as st

from serving.config import connector_map
from serving.dashboard import clean_json
from serving.dashboard.history import History, HistoryPoint, point_from_decision, point_from_state
from serving.service import Service
from stationsim.simulator import SimOptions, SiteSimulator
from tests.test_serving_helpers import PASSWORDS, FullPower, serving_config, small_scenario, small_site

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
TOKEN = "op-token"


def _point(t_s: float, import_kw: float | None = 10.0) -> HistoryPoint:
    return HistoryPoint(t_s, int(t_s), import_kw, 30.0, 12.0, 1.0, 4.0, 9.0)


# --------------------------------------------------------------------------- pure parts


def test_history_keeps_the_window_in_time_order_and_drops_stale_points() -> None:
    h = History(window_s=100.0, max_points=1000)
    assert h.extend([_point(t) for t in (50.0, 0.0, 120.0, 10.0)]) == 4
    assert [p.t_s for p in h.points()] == [50.0, 120.0]  # 0 and 10 fell out of [20, 120]
    assert not h.add(_point(120.0)) and not h.add(_point(60.0))
    assert h.add(_point(121.0)) and len(h) == 3


@given(st.lists(st.floats(0.0, 1e5, allow_nan=False), max_size=60), st.integers(1, 20))
def test_history_invariants(times: list[float], max_points: int) -> None:
    h = History(window_s=500.0, max_points=max_points)
    for t in times:
        h.add(_point(t))
    pts = [p.t_s for p in h.points()]
    assert len(pts) <= max_points
    assert all(a < b for a, b in itertools.pairwise(pts))
    if pts:
        assert pts[-1] - pts[0] <= 500.0
        assert pts[-1] == max(times)


def test_points_from_state_and_from_stored_decisions() -> None:
    state = {
        "site": {
            "import_limit_kw": 30.0,
            "site_import_kw": 21.5,
            "pv_kw": None,
            "base_load_kw": 5.0,
            "peak_import_kw": 25.0,
        },
        "loop": {"cycle": 7, "time": "2025-06-02T08:00:10+00:00", "planned_import_kw": float("nan")},
    }
    p = point_from_state(state, now_s=0.0)
    assert p.t_s == 1748851210.0 and p.cycle == 7
    assert (p.site_import_kw, p.import_limit_kw, p.peak_import_kw) == (21.5, 30.0, 25.0)
    assert p.pv_kw is None and p.planned_import_kw is None  # NaN is unknown
    assert point_from_state({"site": {}, "loop": {}}, now_s=5.0).t_s == 5.0
    row = {"time": "2025-06-02T08:00:00+00:00", "cycle": 3, "site_import_kw": 12.0, "import_limit_kw": 30.0}
    q = point_from_decision(row)
    assert q is not None and q.t_s == 1748851200.0 and q.site_import_kw == 12.0 and q.pv_kw is None
    assert point_from_decision({"time": "garbage", "import_limit_kw": 30.0}) is None


def test_clean_json_replaces_every_non_finite_float() -> None:
    raw = {"a": math.nan, "b": [1.5, math.inf, {"c": -math.inf}], "d": (2, "x"), "e": None}
    assert clean_json(raw) == {"a": None, "b": [1.5, None, {"c": None}], "d": [2, "x"], "e": None}
    json.loads(json.dumps(clean_json(raw), allow_nan=False))


# --------------------------------------------------------------------------- service + simulated site


def _sim(svc: Service, scenario: Any, **kw: Any) -> SiteSimulator:
    opts = SimOptions(
        speed=60.0,
        tick_s=0.05,
        meter_interval_s=0.25,
        passwords=PASSWORDS,
        meter_push_url=f"http://127.0.0.1:{svc.http_port}/api/meter",
        operator_token=svc.operator_token,
        warmup_s=0.3,
        **kw,
    )
    mapping = connector_map(svc.cfg, scenario.site)  # the stations as the service has them
    return SiteSimulator(scenario, f"ws://127.0.0.1:{svc.ocpp_port}", opts, mapping)


async def _get(url: str, token: str | None = TOKEN) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with aiohttp.ClientSession() as http, http.get(url, headers=headers) as resp:
        return resp.status, await resp.text()


async def _stop(task: asyncio.Task[Any]) -> None:
    task.cancel()
    try:
        await task
    except (asyncio.CancelledError, Exception):
        pass


async def test_dashboard_routes_need_the_operator_token_and_stream_every_cycle(tmp_path: Path) -> None:
    site = small_site()
    cfg = serving_config(tmp_path, control_interval_s=0.2, dashboard_port=0)
    svc = Service(cfg, site, FullPower(), PASSWORDS, operator_token=TOKEN)
    await svc.start()
    base = f"http://127.0.0.1:{svc.dashboard_port}"
    sim_task = asyncio.create_task(_sim(svc, small_scenario(site), duration_s=30.0).run())
    try:
        assert svc.dashboard_port not in (0, svc.http_port)
        for path in ("/dashboard/", "/dashboard/snapshot", "/dashboard/events", "/dashboard/static/app.js"):
            assert (await _get(base + path, token=None))[0] == 401, path
        status, page = await _get(base + "/")
        assert status == 200 and 'id="site-import"' in page and "http" not in page.split("<body>")[1]
        assert (await _get(base + "/dashboard/static/app.js"))[0] == 200
        # server-sent events: the first message is the whole picture, then one per control cycle
        messages: list[dict[str, Any]] = []
        async with (
            aiohttp.ClientSession(headers={"Authorization": f"Bearer {TOKEN}"}) as http,
            http.get(base + "/dashboard/events") as resp,
        ):
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            async for line in resp.content:
                if line.startswith(b"data: "):
                    messages.append(json.loads(line[6:]))
                if len(messages) == 6:
                    break
        _, body = await _get(base + "/dashboard/snapshot")
        snap = json.loads(body)
    finally:
        await _stop(sim_task)
        await svc.stop()
    first, updates = messages[0], messages[1:]
    assert set(first) == {"state", "history", "meta"} and first["meta"]["primary_policy"] == "full_power"
    assert first["meta"]["fallback_policy"] == "rule_based"
    cycles = [m["state"]["loop"]["cycle"] for m in updates]
    assert all(b == a + 1 for a, b in itertools.pairwise(cycles)), cycles  # none skipped
    for m in updates:
        assert m["point"]["cycle"] == m["state"]["loop"]["cycle"]
        assert m["point"]["import_limit_kw"] == 30.0
    assert snap["history"] and snap["history"][-1]["cycle"] >= cycles[-1]
    assert {c["id"] for c in snap["state"]["chargers"]} == {"CP1-1", "CP1-2", "CP2-1", "CP2-2"}


# --------------------------------------------------------------------------- the browser

COLLECT_JS = """
const val = (id) => { const e = document.getElementById(id); return [e.dataset.value, e.textContent]; };
const ids = ["cycle", "site-import", "import-limit", "peak-target", "pv", "base-load", "planned-import",
             "policy", "fallback-reason", "latency", "latency-p99", "fallbacks", "violations", "interval"];
const out = {ids: {}, chargers: {}, nodes: {}, kind: document.getElementById("policy").dataset.kind,
             conn: document.getElementById("conn").dataset.state,
             chartPoints: +document.getElementById("chart").dataset.points,
             importPath: !!document.querySelector("#chart path[data-series=import]")};
for (const id of ids) out.ids[id] = val(id);
for (const tr of document.querySelectorAll("tr[data-charger]")) {
  const c = {flags: [...tr.querySelectorAll("[data-flag]")].map((e) => e.dataset.flag),
             connected: tr.dataset.connected, offender_row: tr.classList.contains("offender")};
  for (const e of tr.querySelectorAll("[data-value]")) c[e.dataset.field] = [e.dataset.value, e.textContent];
  out.chargers[tr.dataset.charger] = c;
}
for (const li of document.querySelectorAll("li[data-node]"))
  out.nodes[li.dataset.node] = {measured: li.dataset.measured, limit: li.dataset.limit,
                                planned: li.dataset.planned, depth: li.parentElement.closest("li") ? 1 : 0};
return out;
"""


def _num(raw: str) -> float | None:
    return None if raw == "" else float(raw)


def _mismatches(page: dict[str, Any], api: dict[str, Any]) -> list[str]:
    """Where the page disagrees with ``/api/state`` taken in the same control cycle."""
    bad: list[str] = []

    def same(name: str, shown: str, want: Any, tol: float = 1e-9) -> None:
        got = _num(shown)
        if want is None or got is None:
            if want is not got:
                bad.append(f"{name}: page {shown!r} != api {want!r}")
        elif abs(got - float(want)) > tol:
            bad.append(f"{name}: page {got} != api {want}")

    def shown_as(name: str, pair: list[str], digits: int) -> None:
        value, text = pair
        if value and abs(float(text) - float(value)) > 0.5 * 10**-digits + 1e-9:
            bad.append(f"{name}: text {text!r} does not show {value}")

    site, loop, ids = api["site"], api["loop"], page["ids"]
    # decided once per cycle: equal to the last digit
    for key, want in [
        ("cycle", loop["cycle"]),
        ("import-limit", site["import_limit_kw"]),
        ("peak-target", site["peak_import_kw"]),
        ("base-load", site["base_load_kw"]),
        ("planned-import", loop["planned_import_kw"]),
        ("latency", loop["latency_ms"]),
        ("latency-p99", loop["p99_latency_ms"]),
        ("fallbacks", loop["fallbacks"]),
        ("violations", loop["violations"]),
        ("interval", loop["control_interval_s"]),
    ]:
        same(key, ids[key][0], want)
    # measured between cycles (meter pushes): equal within what can change in a cycle at steady state
    same("site-import", ids["site-import"][0], site["site_import_kw"], tol=0.05)
    same("pv", ids["pv"][0], site["pv_kw"], tol=0.05)
    if ids["policy"][0] != loop["policy"] or page["kind"] != "primary":
        bad.append(f"policy: page {ids['policy']} / {page['kind']} != api {loop['policy']}")
    shown_as("site-import", ids["site-import"], 2)
    shown_as("latency", ids["latency"], 1)
    chargers = {c["id"]: c for c in api["chargers"]}
    if set(page["chargers"]) != set(chargers):
        return [*bad, f"chargers: page {sorted(page['chargers'])} != api {sorted(chargers)}"]
    for cid, c in chargers.items():
        row = page["chargers"][cid]
        same(f"{cid}.energy_asked_kwh", row["energy_asked_kwh"][0], c["energy_asked_kwh"])
        same(f"{cid}.limit_kw", row["limit_kw"][0], c["limit_kw"], tol=1e-6)
        same(f"{cid}.power_kw", row["power_kw"][0], c["power_kw"], tol=0.05)
        same(f"{cid}.energy_delivered_kwh", row["energy_delivered_kwh"][0], c["energy_delivered_kwh"], 0.1)
        same(f"{cid}.time_left_h", row["time_left_h"][0], c["time_left_h"], tol=0.01)
        shown_as(f"{cid}.power_kw", row["power_kw"], 2)
        flags = sorted(k for k, v in c["flags"].items() if v)
        if sorted(row["flags"]) != flags:
            bad.append(f"{cid}.flags: page {row['flags']} != api {flags}")
        if row["connected"] != str(c["connected"]).lower():
            bad.append(f"{cid}.connected: page {row['connected']} != api {c['connected']}")
    for node in api["nodes"]:
        shown = page["nodes"].get(node["id"])
        if shown is None:
            bad.append(f"node {node['id']} missing")
            continue
        same(f"{node['id']}.limit", shown["limit"], node["limit_kw"])
        same(f"{node['id']}.planned", shown["planned"], node["planned_kw"])
        same(f"{node['id']}.measured", shown["measured"], node["measured_kw"], tol=0.1)
    return bad


def _browser(profile_dir: Path) -> Any:
    """Debian's headless Chromium through its chromedriver, offline, with the operator token on every
    request (set through the DevTools protocol, as a proxy in front of the dashboard would)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1440,1000",
        f"--user-data-dir={profile_dir}",
    ):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=DriverService(executable_path=str(CHROMEDRIVER)))
    driver.set_page_load_timeout(20)
    driver.execute_cdp_cmd("Network.enable", {})
    driver.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"Authorization": f"Bearer {TOKEN}"}})
    return driver


async def _wait_for(check: Any, timeout_s: float, what: str) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while True:
        got = await asyncio.to_thread(check)
        if got:
            return got
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


@pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)
async def test_dashboard_in_headless_chromium_matches_the_api_and_flags_the_offender(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download anything
    site = small_site()
    cfg = serving_config(tmp_path, control_interval_s=0.5, dashboard_port=0, station_meter_timeout_s=5.0)
    svc = Service(cfg, site, FullPower(), PASSWORDS, operator_token=TOKEN)
    await svc.start()
    scenario = small_scenario(site, hours=4.0, energy_kwh=60.0)
    sim = _sim(svc, scenario, version="mixed", ignore_profiles=frozenset({"CP1"}), duration_s=50.0)
    sim_task = asyncio.create_task(sim.run())
    driver = await asyncio.to_thread(_browser, tmp_path / "chromium-profile")
    url = f"http://127.0.0.1:{svc.dashboard_port}/dashboard/"
    try:
        await asyncio.to_thread(driver.get, url)

        def collect() -> dict[str, Any]:
            page: dict[str, Any] = driver.execute_script(COLLECT_JS)
            return page

        def offenders_flagged() -> dict[str, Any] | None:
            page = collect()
            flagged = {c for c, row in page["chargers"].items() if "not_following_profile" in row["flags"]}
            return page if flagged == {"CP1-1", "CP1-2"} and page["conn"] == "live" else None

        await _wait_for(offenders_flagged, 25.0, "the offender flags on the page")
        # a few cycles more so the others settle at their reduced limits and the chart has a line
        first = int(collect()["ids"]["cycle"][0])
        await _wait_for(lambda: int(collect()["ids"]["cycle"][0]) >= first + 4, 10.0, "more cycles")
        problems: list[str] = []
        for _ in range(8):  # the page and the API are compared at the same control cycle
            page = await asyncio.to_thread(collect)
            status, body = await _get(f"http://127.0.0.1:{svc.http_port}/api/state")
            after = await asyncio.to_thread(collect)
            api = json.loads(body)
            if not (status == 200 and page["ids"]["cycle"] == after["ids"]["cycle"]):
                continue
            if int(page["ids"]["cycle"][0]) != api["loop"]["cycle"]:
                continue
            problems = _mismatches(page, api)
            if not problems:
                break
            await asyncio.sleep(0.3)
        else:
            raise AssertionError(f"page never matched /api/state in one cycle: {problems}")
        shot = tmp_path / "dashboard.png"
        assert await asyncio.to_thread(driver.save_screenshot, str(shot))
    finally:
        await asyncio.to_thread(driver.quit)
        await _stop(sim_task)
        await svc.stop()
    if os.environ.get("EVDLM_ARTIFACTS"):
        out = Path(os.environ["EVDLM_ARTIFACTS"])
        out.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, out / "dashboard.png")
    # what was compared is what an operator needs to see
    offenders = {c: row for c, row in page["chargers"].items() if row["offender_row"]}
    assert set(offenders) == {"CP1-1", "CP1-2"}
    assert all((_num(row["power_kw"][0]) or 0.0) > 11.0 for row in offenders.values())  # full 16 A x 3
    cp2_limits = [_num(page["chargers"][c]["limit_kw"][0]) or 0.0 for c in ("CP2-1", "CP2-2")]
    assert max(cp2_limits) < 11.0  # the others were cut to make room
    assert page["ids"]["policy"][0] == "full_power" and page["ids"]["import-limit"][0] == "30"
    assert page["nodes"]["main"]["limit"] == "30" and page["chartPoints"] >= 5 and page["importPath"]
    assert page["chargers"]["CP2-1"]["energy_asked_kwh"][0] == "60"  # 2.0.1 stations say what they need
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
