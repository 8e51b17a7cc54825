// The mydfs dashboard: polls GET /cluster/view and redraws. Plain JS, no libraries, no CDN.
"use strict";
const REFRESH_MS = 1500;
const HISTORY = 120;                    // points kept per series (3 minutes at 1.5 s)
const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
const series = { ops: new Map(), mbs: new Map() };   // name -> [values]

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function fmtBytes(n) {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return n.toFixed(i ? 1 : 0) + " " + units[i];
}

const SLOT = 4 * 1024 * 1024;

function push(map, name, value) {
  let s = map.get(name);
  if (!s) { s = []; map.set(name, s); }
  s.push(value);
  if (s.length > HISTORY) s.shift();
}

function ops(rates) {
  return (rates.read_per_s || 0) + (rates.write_per_s || 0) + (rates.replicate_per_s || 0) + (rates.edit_per_s || 0);
}

function record(view) {
  const seen = new Set(["cluster"]);
  push(series.ops, "cluster", view.cluster.ops_per_s);
  push(series.mbs, "cluster", (view.cluster.bytes_in_per_s + view.cluster.bytes_out_per_s) / 1e6);
  for (const g of view.groups) {
    for (const n of g.nodes) {
      const rates = (n.up && n.stats && n.stats.rates) || {};
      seen.add(n.node_id);
      push(series.ops, n.node_id, ops(rates));
      push(series.mbs, n.node_id, ((rates.bytes_in_per_s || 0) + (rates.bytes_out_per_s || 0)) / 1e6);
    }
  }
  for (const map of Object.values(series)) {
    for (const name of [...map.keys()]) if (!seen.has(name)) map.delete(name);
  }
}

function color(i) { return COLORS[i % COLORS.length]; }

function draw(canvas, map) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height, pad = 28;
  ctx.clearRect(0, 0, w, h);
  let max = 1;
  for (const s of map.values()) for (const v of s) max = Math.max(max, v);
  ctx.strokeStyle = "#ddd"; ctx.fillStyle = "#666"; ctx.font = "10px sans-serif";
  for (let k = 0; k <= 4; k++) {
    const y = h - pad / 2 - (h - pad) * k / 4;
    ctx.beginPath(); ctx.moveTo(pad, y); ctx.lineTo(w, y); ctx.stroke();
    ctx.fillText((max * k / 4).toFixed(max < 10 ? 1 : 0), 0, y + 3);
  }
  let i = 0;
  for (const [name, s] of map) {
    ctx.strokeStyle = color(i++);
    ctx.lineWidth = name === "cluster" ? 2.5 : 1.2;
    ctx.beginPath();
    s.forEach((v, j) => {
      const x = pad + (w - pad) * (j + HISTORY - s.length) / (HISTORY - 1);
      const y = h - pad / 2 - (h - pad) * v / max;
      if (j === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
  const legend = document.getElementById("legend");
  legend.replaceChildren(...[...map.keys()].map((name, k) =>
    el("span", {}, el("i", { style: "background:" + color(k) }), name)));
}

function nodeRow(n) {
  const st = n.stats || {};
  const rates = st.rates || {};
  const raft = st.raft || {};
  const pool = st.executor || {};
  const role = n.role === "leader" ? el("span", { class: "badge leader" }, "leader") : n.role;
  return el("tr", { class: n.up ? "up" : "down", "data-node": n.node_id, "data-up": n.up ? "1" : "0" },
    el("td", {}, n.node_id),
    el("td", {}, el("span", { class: "badge " + (n.up ? "up" : "down") }, n.up ? "up" : "down")),
    el("td", {}, role),
    el("td", { class: "num" }, n.term),
    el("td", { class: "num" }, n.last_seen_s.toFixed(1) + " s"),
    el("td", { class: "num" }, n.up ? ops(rates).toFixed(1) : "–"),
    el("td", { class: "num" }, n.up ? fmtBytes((rates.bytes_in_per_s || 0) + (rates.bytes_out_per_s || 0)) + "/s" : "–"),
    el("td", { class: "num" }, st.inflight ?? "–"),
    el("td", { class: "num" }, pool.queued ?? "–"),
    el("td", { class: "num" }, raft.lag ?? "–"),
    el("td", { class: "num" }, fmtBytes(n.used_slots * SLOT)),
    el("td", { class: "num" }, n.free_slots === null ? "∞" : fmtBytes(n.free_slots * SLOT)));
}

function renderMap(view) {
  const head = ["node", "state", "role", "term", "heartbeat", "ops/s", "I/O", "in flight", "disk queue", "apply lag", "used", "free"];
  const boxes = view.groups.map(g => el("div", { class: "group" + (g.writable ? "" : " bad"), "data-group": g.group_id },
    el("h3", {}, `group ${g.group_id} — `, g.writable ? "writable" : "NOT writable",
      el("span", { class: "muted" }, ` · leader ${g.leader || "none"} · term ${g.term ?? "–"} · ${g.up}/${g.nodes.length} up`)),
    el("table", {}, el("thead", {}, el("tr", {}, ...head.map(t => el("th", {}, t)))),
      el("tbody", {}, ...g.nodes.map(nodeRow)))));
  document.getElementById("map").replaceChildren(...boxes);
}

function renderHot(view) {
  const rows = view.hot.map(h => el("tr", { "data-file": h.file_id },
    el("td", {}, h.path || "(" + h.file_id.slice(0, 12) + "…)"),
    el("td", { class: "num" }, h.index),
    el("td", {}, `${h.group}:${h.slot}`),
    el("td", { class: "num" }, h.recent),
    el("td", { class: "num" }, h.since_start),
    el("td", { class: "num" }, h.total),
    el("td", {}, h.nodes.join(" "))));
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: 7, class: "muted" }, "no reads in the last minute")));
  document.querySelector("#hot tbody").replaceChildren(...rows);
}

function renderEvents(view) {
  const items = view.events.slice(0, 60).map(e => {
    const bad = /down|NOT writable|leader: none/.test(e.text);
    const when = new Date(e.time * 1000).toLocaleTimeString();
    return el("li", { class: bad ? "bad" : "" }, `${when}  ${e.text}`);
  });
  document.getElementById("events").replaceChildren(...items);
}

function renderSummary(view) {
  const c = view.cluster;
  document.getElementById("summary").textContent =
    `${c.groups} groups (${c.writable_groups} writable) · ${c.nodes_up} nodes up, ${c.nodes_down} down · ` +
    `${c.ops_per_s.toFixed(1)} ops/s · ${fmtBytes(c.bytes_out_per_s)}/s out · ${fmtBytes(c.bytes_in_per_s)}/s in · ` +
    `${c.inflight} in flight · ${fmtBytes(c.used_slots * SLOT)} used`;
}

// The API key comes in the URL's fragment (`mydfs ui` prints /ui#token=...): a fragment never
// leaves the browser, so the key is in no request line, log or Referer. Kept for this tab only.
function apiToken() {
  const m = /(?:^|[#&])token=([^&]+)/.exec(location.hash);
  if (m) {
    sessionStorage.setItem("mydfs-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem("mydfs-token");
}
const TOKEN = apiToken();

async function refresh() {
  const status = document.getElementById("status");
  try {
    const headers = TOKEN ? { Authorization: "Bearer " + TOKEN } : {};
    const resp = await fetch("/cluster/view", { cache: "no-store", headers });
    if (resp.status === 401 || resp.status === 403)
      throw new Error("HTTP " + resp.status + ": open the URL `mydfs ui` prints (it carries an API key)");
    if (!resp.ok) throw new Error("HTTP " + resp.status);
    const view = await resp.json();
    record(view);
    renderSummary(view);
    renderMap(view);
    renderHot(view);
    renderEvents(view);
    draw(document.getElementById("ops"), series.ops);
    draw(document.getElementById("mbs"), series.mbs);
    status.textContent = "updated " + new Date().toLocaleTimeString();
    document.body.dataset.updated = String(Date.now());
  } catch (err) {
    status.textContent = "tracker unreachable: " + err.message;
  }
}

refresh();
setInterval(refresh, REFRESH_MS);
