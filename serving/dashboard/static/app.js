// evdlm live dashboard: renders /dashboard/events (server-sent events, one message per control cycle).
// Every number is written twice: formatted as text and raw in data-value, so tests and scrapers read the
// exact value the service sent. No dependencies; the chart is hand-drawn SVG.
"use strict";

const W = 960, H = 260, PAD = { l: 44, r: 10, t: 10, b: 22 };
const SERIES = [
  ["import", "site_import_kw"], ["limit", "import_limit_kw"], ["peak", "peak_import_kw"],
  ["pv", "pv_kw"], ["base", "base_load_kw"],
];
const model = { history: [], meta: {}, state: null, windowS: 6 * 3600 };

const $ = (id) => document.getElementById(id);
const isNum = (v) => typeof v === "number" && isFinite(v);
const fmt = (v, d = 1) => (isNum(v) ? v.toFixed(d) : "—");
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
const raw = (v) => (v === null || v === undefined ? "" : String(v));

function setNum(id, v, d = 1) {
  const el = $(id);
  el.dataset.value = raw(v);
  el.textContent = fmt(v, d);
}

function setText(id, text, value) {
  const el = $(id);
  el.dataset.value = raw(value === undefined ? text : value);
  el.textContent = text;
}

function duration(h) {
  if (!isNum(h)) return "—";
  const m = Math.round(h * 60);
  return m >= 60 ? `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, "0")}` : `${m} min`;
}

function renderCards(s) {
  const site = s.site, loop = s.loop;
  setText("site-name", site.name);
  setNum("cycle", loop.cycle, 0);
  const t = loop.time ? new Date(loop.time) : null;
  setText("updated", t ? t.toLocaleTimeString() : "—", loop.time);
  setNum("site-import", site.site_import_kw, 2);
  setNum("import-limit", site.import_limit_kw, 1);
  const headroom = isNum(site.site_import_kw) ? site.import_limit_kw - site.site_import_kw : null;
  setNum("headroom", headroom, 1);
  setNum("site-export", site.export_kw, 2);
  setNum("export-limit", site.export_limit_kw, 1);
  setNum("site-discharge", site.discharge_kw, 2);
  const overExport = isNum(site.export_kw) && isNum(site.export_limit_kw) && site.export_kw > site.export_limit_kw + 1e-6;
  $("card-import").classList.toggle("alarm", (isNum(headroom) && headroom < -1e-6) || overExport);
  const meter = $("meter");
  meter.dataset.stale = raw(site.meter_stale);
  meter.textContent = site.meter_stale ? "meter STALE: stepping down to the safe share"
    : isNum(site.meter_age_s) ? `meter read ${fmt(site.meter_age_s, 1)} s ago` : "no site meter reading";
  setNum("peak-target", site.peak_import_kw, 2);
  setNum("planned-import", loop.planned_import_kw, 2);
  setNum("pv", site.pv_kw, 2);
  setNum("base-load", site.base_load_kw, 2);

  const fallback = loop.fallback_reason !== null && loop.fallback_reason !== undefined;
  const kind = loop.policy === null || loop.policy === undefined ? "none" : fallback ? "fallback" : "primary";
  const pol = $("policy");
  pol.dataset.value = raw(loop.policy);
  pol.dataset.kind = kind;
  pol.textContent = loop.policy ?? "—";
  const pk = $("policy-kind");
  pk.className = "pill " + (kind === "fallback" ? "pill-fallback" : kind === "primary" ? "pill-primary" : "");
  pk.textContent = kind === "fallback" ? "fallback" : kind === "primary"
    ? (loop.policy === "rule_based" || loop.policy === "static" ? "rule-based" : "learned policy") : "—";
  setText("fallback-reason", fallback ? `because: ${loop.fallback_reason}` : "", loop.fallback_reason);
  $("card-policy").classList.toggle("alarm", fallback);

  setNum("latency", loop.latency_ms, 1);
  setNum("latency-p99", loop.p99_latency_ms, 1);
  setNum("interval", loop.control_interval_s, 1);
  setNum("fallbacks", loop.fallbacks, 0);
  setNum("violations", loop.violations, 0);
  setNum("overloads", loop.overloads_uncontrollable ?? 0, 0);
  setNum("load-rises", loop.violations_base_load_rise ?? 0, 0);
  const lastOverload = loop.last_uncontrollable;
  setText("last-overload", lastOverload ? new Date(lastOverload).toLocaleTimeString() : "—", lastOverload ?? "");
  const offenders = s.chargers.filter((c) => c.flags.not_following_profile).length;
  setNum("offenders", offenders, 0);
  $("card-counters").classList.toggle("alarm", loop.violations > 0 || offenders > 0);
}

// The site battery over Modbus (null without one): SoC, power (+ charge, - discharge), the setpoint written
// and its link; absent (lost or stale link) means the loop plans without it and it is commanded idle.
function renderBattery(b) {
  const card = $("card-battery");
  card.hidden = !b;
  if (!b) return;
  card.dataset.link = raw(b.link);
  setNum("battery-soc", b.soc_pct, 1);
  setNum("battery-power", b.power_kw, 2);
  setNum("battery-setpoint", b.setpoint_kw, 2);
  const link = $("battery-link");
  link.dataset.value = raw(b.link);
  link.textContent = b.link;
  link.className = "pill " + (b.present ? "pill-primary" : "pill-fallback");
  const p = b.power_kw;
  const note = !b.present ? "ABSENT: planned without it, set idle"
    : isNum(p) && p > 0.05 ? "charging" : isNum(p) && p < -0.05 ? "discharging" : "idle";
  setText("battery-note", note, b.present);
  card.classList.toggle("alarm", !b.present);
}

const FLAG_TEXT = {
  not_following_profile: "not following profile", offline: "offline", v2g_active: "V2G", meter_fault: "meter fault",
};

function cell(field, value, text, cls = "num") {
  return `<td class="${cls}" data-field="${field}" data-value="${esc(raw(value))}">${esc(text)}</td>`;
}

function renderChargers(chargers) {
  let active = 0;
  const rows = chargers.map((c) => {
    const charging = c.transaction_id !== null && c.transaction_id !== undefined;
    if (charging) active += 1;
    const flags = Object.keys(FLAG_TEXT).filter((k) => c.flags[k]);
    const cls = [c.flags.not_following_profile ? "offender" : "", c.flags.offline ? "offline" : ""].join(" ");
    const limitText = isNum(c.limit_kw)
      ? `${fmt(c.limit_kw, 2)} kW (${fmt(c.limit_value, 1)} ${c.limit_unit})` : "—";
    return `<tr data-charger="${esc(c.id)}" class="${cls}" data-connected="${c.connected}"`
      + ` data-flags="${esc(flags.join(" "))}">`
      + cell("id", c.id, c.id, "")
      + cell("station_id", c.station_id, `${c.station_id} #${c.connector_id}`, "")
      + cell("status", c.status, `${c.connected ? "online" : "offline"} · ${c.status}`, "")
      + `<td class="num"><span data-field="energy_delivered_kwh" data-value="${esc(raw(c.energy_delivered_kwh))}">`
      + `${fmt(c.energy_delivered_kwh, 2)}</span> / <span data-field="energy_asked_kwh"`
      + ` data-value="${esc(raw(c.energy_asked_kwh))}">${fmt(c.energy_asked_kwh, 1)}</span></td>`
      + cell("time_left_h", c.time_left_h, duration(c.time_left_h))
      + cell("limit_kw", c.limit_kw, limitText)
      + cell("power_kw", c.power_kw, fmt(c.power_kw, 2))
      + cell("discharge_kw", c.discharge_kw, fmt(c.discharge_kw, 2))
      + cell("v2g_mode", c.v2g_mode, c.v2g_mode === "charge_only" ? "charge only" : (c.v2g_mode ?? "—"), "")
      + `<td data-field="flags">${flags.map((f) =>
        `<span class="flag flag-${f}" data-flag="${f}">${FLAG_TEXT[f]}</span>`).join("")}</td></tr>`;
  });
  document.querySelector("#chargers tbody").innerHTML = rows.join("");
  setNum("active-count", active, 0);
  setNum("charger-count", chargers.length, 0);
}

function renderTree(nodes) {
  const children = new Map();
  for (const n of nodes) {
    const key = n.parent ?? "";
    if (!children.has(key)) children.set(key, []);
    children.get(key).push(n);
  }
  const item = (n) => {
    const lim = isNum(n.limit_kw) && n.limit_kw > 0 ? n.limit_kw : null;
    const frac = lim ? Math.abs(n.measured_kw) / lim : 0;
    const cls = frac > 1 + 1e-6 ? "over" : frac > 0.9 ? "high" : "";
    const plan = lim && isNum(n.planned_kw) ? Math.min(100, (100 * Math.abs(n.planned_kw)) / lim) : null;
    const kids = children.get(n.id) || [];
    return `<li class="node ${cls}" data-node="${esc(n.id)}" data-measured="${esc(raw(n.measured_kw))}"`
      + ` data-limit="${esc(raw(n.limit_kw))}" data-planned="${esc(raw(n.planned_kw))}">`
      + `<div class="node-head"><span>${esc(n.id)}</span><span class="num">`
      + `<span data-field="measured_kw">${fmt(n.measured_kw, 1)}</span> / `
      + `<span data-field="limit_kw">${fmt(n.limit_kw, 1)}</span> kW</span></div>`
      + `<div class="bar"><div class="fill" style="width:${Math.min(100, 100 * frac).toFixed(1)}%"></div>`
      + (plan === null ? "" : `<div class="plan" style="left:${plan.toFixed(1)}%" title="planned"></div>`)
      + `</div>${kids.length ? `<ul>${kids.map(item).join("")}</ul>` : ""}</li>`;
  };
  $("tree").innerHTML = (children.get("") || []).map(item).join("");
}

function niceStep(span, ticks) {
  const raw0 = span / Math.max(ticks, 1);
  const p = Math.pow(10, Math.floor(Math.log10(raw0)));
  const m = raw0 / p;
  return (m <= 1 ? 1 : m <= 2 ? 2 : m <= 5 ? 5 : 10) * p;
}

function renderChart() {
  const pts = model.history;
  const svg = $("chart");
  svg.dataset.points = String(pts.length);
  if (pts.length === 0) { svg.innerHTML = ""; return; }
  const t1 = pts[pts.length - 1].t_s;
  const t0 = Math.max(pts[0].t_s, t1 - model.windowS);
  const span = Math.max(t1 - t0, 1);
  let lo = 0, hi = 1;
  for (const p of pts) for (const [, key] of SERIES) {
    const v = p[key];
    if (isNum(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  }
  hi *= 1.08;
  const x = (t) => PAD.l + ((t - t0) / span) * (W - PAD.l - PAD.r);
  const y = (v) => H - PAD.b - ((v - lo) / (hi - lo)) * (H - PAD.t - PAD.b);
  const parts = [];
  const ys = niceStep(hi - lo, 5);
  for (let v = Math.ceil(lo / ys) * ys; v <= hi; v += ys) {
    parts.push(`<line class="grid" x1="${PAD.l}" x2="${W - PAD.r}" y1="${y(v)}" y2="${y(v)}"/>`
      + `<text class="tick" x="${PAD.l - 4}" y="${y(v) + 4}" text-anchor="end">${+v.toFixed(1)}</text>`);
  }
  for (let k = 0; k <= 4; k++) {
    const t = t0 + (span * k) / 4;
    const label = new Date(t * 1000).toLocaleTimeString([], span > 600
      ? { hour: "2-digit", minute: "2-digit" } : { hour: "2-digit", minute: "2-digit", second: "2-digit" });
    parts.push(`<text class="tick" x="${x(t)}" y="${H - 6}" text-anchor="${k === 0 ? "start" : k === 4 ? "end" : "middle"}">${label}</text>`);
  }
  for (const [name, key] of SERIES) {
    let d = "", pen = false;
    for (const p of pts) {
      if (p.t_s < t0) continue;
      const v = p[key];
      if (!isNum(v)) { pen = false; continue; }
      d += `${pen ? "L" : "M"}${x(p.t_s).toFixed(1)},${y(v).toFixed(1)}`;
      pen = true;
    }
    if (d) parts.push(`<path class="s-${name}" data-series="${name}" d="${d}"/>`);
  }
  svg.innerHTML = parts.join("");
}

function render() {
  const s = model.state;
  if (!s) return;
  renderCards(s);
  renderBattery(s.battery);
  renderChargers(s.chargers);
  renderTree(s.nodes);
  renderChart();
  document.body.dataset.cycle = String(s.loop.cycle);
}

function onMessage(ev) {
  const msg = JSON.parse(ev.data);
  if (msg.history) model.history = msg.history;
  if (msg.meta) {
    model.meta = msg.meta;
    if (isNum(msg.meta.window_h)) {
      model.windowS = msg.meta.window_h * 3600;
      $("window-h").textContent = String(+msg.meta.window_h.toFixed(1));
    }
  }
  if (msg.point) {
    const last = model.history[model.history.length - 1];
    if (!last || msg.point.t_s > last.t_s) model.history.push(msg.point);
    const cut = msg.point.t_s - model.windowS;
    while (model.history.length && model.history[0].t_s < cut) model.history.shift();
  }
  model.state = msg.state;
  render();
}

function connect() {
  const conn = $("conn");
  const es = new EventSource("events");
  es.onopen = () => { conn.className = "pill pill-on"; conn.textContent = "live"; conn.dataset.state = "live"; };
  es.onerror = () => { conn.className = "pill pill-off"; conn.textContent = "reconnecting…"; conn.dataset.state = "down"; };
  es.onmessage = onMessage;
}

connect();
