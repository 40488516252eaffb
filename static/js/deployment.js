/* A deployment's page, live: instance states follow "deployment.<id>" (the table is fetched again),
 * the chosen instance's log lines stream from "instance.<id>.log", and its serving metrics come
 * from its node's telemetry ("telemetry.node.<id>", the instances part). */
(function () {
  "use strict";
  const MAX_LINES = 500, WINDOW_S = 300;

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.querySelector("[data-live-deployment]");
    if (!box) return;
    const id = box.dataset.liveDeployment;
    FleetLive.subscribe("deployment." + id, function () {
      if (window.htmx) htmx.ajax("GET", location.pathname, { target: "#instances", select: "#instances", swap: "outerHTML" });
    });

    const pre = box.querySelector('[data-testid="instance-log"]');
    const select = box.querySelector("[data-log-instance]");
    if (!select) return;
    let current = null;
    function follow(instanceId) {
      current = instanceId;
      pre.textContent = "";
      FleetLive.subscribe("instance." + instanceId + ".log", function (msg) {
        if (current !== instanceId) return;
        pre.textContent += msg.lines.join("\n") + "\n";
        const lines = pre.textContent.split("\n");
        if (lines.length > MAX_LINES) pre.textContent = lines.slice(-MAX_LINES).join("\n");
        pre.scrollTop = pre.scrollHeight;
      });
    }
    select.addEventListener("change", function () { follow(select.value); });
    follow(select.value);

    const el = box.querySelector('[data-chart="serving"]');
    if (typeof uPlot === "undefined" || !el) return;
    const data = [[], [], [], []];
    const chart = new uPlot({ width: Math.max(320, el.clientWidth || 600), height: 200,
      series: [{}, { label: "running", stroke: "#3b82c4" }, { label: "waiting", stroke: "#e67e22" },
               { label: "KV cache %", stroke: "#27ae60", scale: "%" }],
      axes: [{}, {}, { scale: "%", side: 1 }], scales: { "%": { range: [0, 100] } } }, data, el);
    const nodes = new Set(Array.from(select.options).map(function (o) { return o.dataset.node; }));
    nodes.forEach(function (node) {
      FleetLive.subscribe("telemetry.node." + node, function (m) {
        const mine = (m.instances || []).find(function (i) { return String(i.instance) === String(current); });
        if (!mine) return;
        data[0].push(m.ts); data[1].push(mine.running || 0); data[2].push(mine.waiting || 0);
        data[3].push(100 * (mine.kv_cache_usage || 0));
        while (data[0].length && data[0][0] < m.ts - WINDOW_S) data.forEach(function (s) { s.shift(); });
        chart.setData(data);
      });
    });
  });
})();
