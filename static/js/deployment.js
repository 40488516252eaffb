/* A deployment's page, live: instance states follow "deployment.<id>" (the table is fetched again),
 * the log of the chosen instance (the newest running one unless a "Log" button says otherwise)
 * streams from "instance.<id>.log", and its serving metrics come from its node's telemetry
 * ("telemetry.node.<id>", the instances part). */
(function () {
  "use strict";
  const MAX_LINES = 500, WINDOW_S = 300;
  const QUIET = { stopped: 1, failed: 1, lost: 1 };

  document.addEventListener("DOMContentLoaded", function () {
    const box = document.querySelector("[data-live-deployment]");
    if (!box) return;
    const id = box.dataset.liveDeployment;
    const pre = box.querySelector('[data-testid="instance-log"]');
    const title = box.querySelector("[data-log-title]");
    let current = null, chosen = false;
    const nodes = new Set();
    const data = [[], [], [], []];
    let chart = null;
    const el = box.querySelector('[data-chart="serving"]');
    if (typeof uPlot !== "undefined" && el) {
      chart = new uPlot({ width: Math.max(320, el.clientWidth || 600), height: 200,
        series: [{}, { label: "running", stroke: "#3b82c4" }, { label: "waiting", stroke: "#e67e22" },
                 { label: "KV cache %", stroke: "#27ae60", scale: "%" }],
        axes: [{}, {}, { scale: "%", side: 1 }], scales: { "%": { range: [0, 100] } } }, data, el);
    }

    function onTelemetry(m) {
      const mine = (m.instances || []).find(function (i) { return String(i.instance) === String(current); });
      if (!mine || !chart) return;
      data[0].push(m.ts); data[1].push(mine.running || 0); data[2].push(mine.waiting || 0);
      data[3].push(100 * (mine.kv_cache_usage || 0));
      while (data[0].length && data[0][0] < m.ts - WINDOW_S) data.forEach(function (s) { s.shift(); });
      chart.setData(data);
    }

    function follow(instanceId, node) {
      if (current === instanceId) return;
      current = instanceId;
      pre.textContent = "";
      title.textContent = "instance " + instanceId;
      FleetLive.subscribe("instance." + instanceId + ".log", function (msg) {
        if (current !== instanceId) return;
        pre.textContent += msg.lines.join("\n") + "\n";
        const lines = pre.textContent.split("\n");
        if (lines.length > MAX_LINES) pre.textContent = lines.slice(-MAX_LINES).join("\n");
        pre.scrollTop = pre.scrollHeight;
      }, function () {
        // (Re)joined: the log so far, as the console kept it; lines pushed meanwhile follow.
        fetch("/api/instances/" + instanceId + "/log/", { credentials: "same-origin" })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (tail) {
            if (!tail || current !== instanceId) return;
            pre.textContent = tail.lines.length ? tail.lines.join("\n") + "\n" : "";
            pre.scrollTop = pre.scrollHeight;
          });
      });
      if (node && !nodes.has(node)) {
        nodes.add(node);
        FleetLive.subscribe("telemetry.node." + node, onTelemetry);
      }
    }

    function pick() {
      document.querySelectorAll("[data-show-log]").forEach(function (b) {
        b.onclick = function () { chosen = true; const tr = b.closest("tr"); follow(tr.dataset.instance, tr.dataset.node); };
      });
      if (chosen && current) return;
      const row = Array.from(document.querySelectorAll("tr[data-instance]")).find(function (tr) { return !QUIET[tr.dataset.state]; });
      if (row) follow(row.dataset.instance, row.dataset.node);
      else if (!current) pre.textContent = "No running instance.";
    }

    function refresh() {
      if (!window.htmx) return;
      // the instances, and the deployment's own state beside its name (one page fetch for both)
      htmx.ajax("GET", location.pathname, { target: "#instances", select: "#instances", swap: "outerHTML",
                                            selectOOB: "#deployment-state-live" });
    }
    // Fetched again on every change, and each time the topic is (re)joined: what changed before
    // the page was listening, or while its socket was down, shows too.
    FleetLive.subscribe("deployment." + id, refresh, refresh);
    document.body.addEventListener("htmx:afterSettle", pick);
    pick();
  });
})();
