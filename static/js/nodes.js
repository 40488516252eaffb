/* Nodes, live. On the list: bars and states update in place from "telemetry.fleet" and "fleet".
 * On a node's page: two uPlot charts gain a point per telemetry message; the GPU table and host
 * figures follow; the history chart is drawn from the 1-minute rollups embedded in the page. */
(function () {
  "use strict";
  const WINDOW_S = 120; // the live charts show the last two minutes

  function summarize(m) { // the same as fleet/telemetry.py summarize()
    const gpus = m.gpus || [];
    let util, used, total;
    if (gpus.length) {
      util = gpus.reduce(function (a, g) { return a + (g.util || 0); }, 0) / gpus.length;
      used = gpus.reduce(function (a, g) { return a + (g.mem_used || 0); }, 0);
      total = gpus.reduce(function (a, g) { return a + (g.mem_total || 0); }, 0);
    } else {
      const h = m.host || {};
      util = h.cpu || 0; used = h.ram_used || 0; total = h.ram_total || 0;
    }
    return { util: Math.round(util * 10) / 10, mem: total ? Math.round(1000 * used / total) / 10 : null };
  }

  function setBar(el, pct) {
    if (!el) return;
    const v = pct == null ? 0 : pct;
    el.querySelector("span").style.width = Math.min(100, v) + "%";
    el.querySelector("em").textContent = (pct == null ? "—" : pct) + "%";
    el.setAttribute("aria-valuenow", v);
  }

  function fmtBytes(n) {
    if (n == null) return "—";
    const units = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return n.toFixed(1) + " " + units[i];
  }

  /* --- the list ---------------------------------------------------------------------------- */
  function bindList() {
    if (!document.querySelector("[data-live-nodes]")) return;
    const row = function (id) { return document.querySelector('[data-live-nodes] tr[data-node="' + id + '"]'); };
    FleetLive.subscribe("telemetry.fleet", function (m) {
      const tr = row(m.node);
      if (!tr) return;
      const s = summarize(m);
      setBar(tr.querySelector('[data-field="util"]'), s.util);
      setBar(tr.querySelector('[data-field="mem"]'), s.mem);
      const seen = tr.querySelector('[data-field="seen"]');
      const when = new Date(m.ts * 1000);
      seen.dateTime = when.toISOString();
      seen.textContent = when.toISOString().replace("T", " ").slice(0, 19);
    });
    // The list fetched again, with the current filters.
    const refetch = function () {
      const form = document.querySelector("form.filters");
      if (form && window.htmx) htmx.trigger(form, "submit");
    };
    FleetLive.subscribe("fleet", function (e) {
      const tr = row(e.node);
      if (!tr) {
        if (e.kind === "joined") refetch();  // a node this page has not listed yet
        return;
      }
      if (e.kind === "removed") { tr.remove(); return; }
      const badge = tr.querySelector('[data-field="state"]');
      badge.className = "badge " + e.state;
      badge.textContent = e.state === "online" ? "Online" : "Offline";
      let cordon = tr.querySelector('[data-field="cordoned"]');
      if (e.cordoned && !cordon) {
        cordon = document.createElement("span");
        cordon.className = "badge cordoned"; cordon.dataset.field = "cordoned"; cordon.textContent = "Cordoned";
        badge.after(" ", cordon);
      } else if (!e.cordoned && cordon) cordon.remove();
    }, refetch);  // and on (re)joining: a change while the socket was down shows too
  }

  /* --- a node's page ------------------------------------------------------------------------- */
  function chart(el, labels, unit) {
    const width = Math.max(300, el.clientWidth || 480);
    const series = [{}].concat(labels.map(function (label, i) {
      return { label: label, stroke: ["#3b82c4", "#8e44ad", "#27ae60", "#e67e22", "#c0392b", "#16a085", "#7f8c8d", "#d35400"][i % 8],
               width: 1.5, value: function (_u, v) { return v == null ? "—" : v.toFixed(1) + unit; } };
    }));
    const data = [[]].concat(labels.map(function () { return []; }));
    return new uPlot({ width: width, height: 200, series: series, scales: { y: { range: [0, 100] } },
                       axes: [{}, { values: function (_u, ticks) { return ticks.map(function (t) { return t + unit; }); } }] },
                     data, el);
  }

  function bindNode() {
    const box = document.querySelector("[data-live-node]");
    if (!box || typeof uPlot === "undefined") return;
    const id = box.dataset.liveNode;
    const gpu = box.dataset.kind === "gpu";
    const lastSample = JSON.parse(document.getElementById("node-last-sample").textContent || "null");
    const gpuIndexes = gpu ? Array.from(document.querySelectorAll("tr[data-gpu]")).map(function (tr) { return +tr.dataset.gpu; }) : [];
    const labels = gpu ? gpuIndexes.map(function (i) { return "GPU " + i; }) : [gpu ? "" : "host"];
    const util = chart(box.querySelector('[data-chart="util"]'), labels, "%");
    const mem = chart(box.querySelector('[data-chart="mem"]'), labels, "%");
    const utilData = [[]].concat(labels.map(function () { return []; }));
    const memData = [[]].concat(labels.map(function () { return []; }));
    const counter = document.querySelector('[data-testid="live-points"]');
    let points = 0;

    function add(m) {
      utilData[0].push(m.ts); memData[0].push(m.ts);
      if (gpu) {
        const byIndex = {};
        (m.gpus || []).forEach(function (g) { byIndex[g.i] = g; });
        gpuIndexes.forEach(function (i, k) {
          const g = byIndex[i]; // a GPU whose reading failed this tick leaves a gap
          utilData[k + 1].push(g ? g.util : null);
          memData[k + 1].push(g && g.mem_total ? 100 * g.mem_used / g.mem_total : null);
          if (g) updateGpuRow(g);
        });
      } else {
        const h = m.host || {};
        utilData[1].push(h.cpu);
        memData[1].push(h.ram_total ? 100 * h.ram_used / h.ram_total : null);
      }
      while (utilData[0].length && utilData[0][0] < m.ts - WINDOW_S) {
        utilData.forEach(function (s) { s.shift(); }); memData.forEach(function (s) { s.shift(); });
      }
      util.setData(utilData); mem.setData(memData);
      const host = m.host || {};
      const cpu = document.querySelector('[data-host="cpu"]'); if (cpu) cpu.textContent = host.cpu + " %";
      const load = document.querySelector('[data-host="load1"]'); if (load) load.textContent = host.load1;
      points++;
      if (counter) counter.textContent = String(points);
    }

    function updateGpuRow(g) {
      const tr = document.querySelector('tr[data-gpu="' + g.i + '"]');
      if (!tr) return;
      const set = function (f, text) { const td = tr.querySelector('[data-field="' + f + '"]'); if (td) td.textContent = text; };
      set("util", g.util + "%"); set("mem_used", fmtBytes(g.mem_used)); set("temp", g.temp + " °C");
      set("power", (g.power == null ? "—" : g.power) + " / " + (g.power_limit == null ? "—" : g.power_limit) + " W");
      set("sm_clock", (g.sm_clock == null ? "—" : g.sm_clock) + " MHz");
      set("ecc", g.ecc == null ? "—" : g.ecc); set("xid", g.xid == null ? "—" : g.xid);
      set("throttle", (g.throttle || []).join(", ") || "—");
    }

    if (lastSample && lastSample.ts > Date.now() / 1000 - WINDOW_S) add(lastSample);
    FleetLive.subscribe("telemetry.node." + id, add);
  }

  function bindHistory() {
    const el = document.querySelector("[data-history-chart]");
    const source = document.getElementById("node-history");
    if (!el || !source || typeof uPlot === "undefined") return;
    const h = JSON.parse(source.textContent);
    const labels = Object.keys(h.series);
    const c = chart(el, labels, "%");
    c.setData([h.t].concat(labels.map(function (l) { return h.series[l]; })));
  }

  document.addEventListener("DOMContentLoaded", function () { bindList(); bindNode(); bindHistory(); });
})();
