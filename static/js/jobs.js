/* Jobs, live. The list follows "jobs" (its rows are fetched again); a job's page follows
 * "job.<id>": progress, phase, state and log lines as the agent reports them, and a reload when
 * the job ends so its result shows. Benchmark results (#bench-runs) become uPlot charts, one
 * series per run, x = concurrency or request rate. */
(function () {
  "use strict";
  const MAX_LINES = 2000;
  const COLORS = ["#3b82c4", "#e67e22", "#27ae60", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#d35400"];
  const LABELS = { queued: "Queued", running: "Running", succeeded: "Succeeded", failed: "Failed", cancelled: "Cancelled" };
  const DONE = ["succeeded", "failed", "cancelled"];

  function liveJob(box) {
    const id = box.dataset.liveJob;
    const pre = box.querySelector('[data-testid="job-log"]');
    const progress = box.querySelector('[data-field="progress"]');
    const phase = box.querySelector('[data-field="phase"]');
    const state = box.querySelector('[data-field="state"]');
    const error = box.querySelector('[data-field="error"]');
    function finished() {
      if (box.dataset.done === "1") return;
      box.dataset.done = "1";
      setTimeout(function () { location.reload(); }, 300);
    }
    FleetLive.subscribe("job." + id, function (m) {
      if (m.progress != null) progress.value = m.progress;
      if (m.phase) phase.textContent = m.phase;
      if (m.state) state.textContent = LABELS[m.state] || m.state;
      if (m.error) { error.textContent = m.error; error.hidden = false; }
      if (m.lines && m.lines.length) {
        const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.textContent += m.lines.join("\n") + "\n";
        const lines = pre.textContent.split("\n");
        if (lines.length > MAX_LINES) pre.textContent = lines.slice(-MAX_LINES).join("\n");
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      }
      if (m.kind === "finished") finished();
    }, function () {
      // Joined (again, after a reconnect): what changed while the page was not listening shows
      // now; a job that ended meanwhile (e.g. while a cancel redirected here) reloads.
      if (box.dataset.done === "1") return;
      fetch("/api/jobs/" + id + "/", { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (!j) return;
          if (DONE.indexOf(j.state) >= 0) { finished(); return; }
          progress.value = j.progress;
          if (j.phase) phase.textContent = j.phase;
          state.textContent = LABELS[j.state] || j.state;
        });
    });
    pre.scrollTop = pre.scrollHeight;
  }

  function liveList(box) {
    let pending = null;
    function refresh() {
      if (pending || !window.htmx) return;
      pending = setTimeout(function () {  // one refetch per burst of progress reports
        pending = null;
        htmx.ajax("GET", location.pathname + location.search, { target: "#jobs", select: "#jobs", swap: "outerHTML" });
      }, 500);
    }
    FleetLive.subscribe("jobs", refresh, refresh);  // and on (re)joining: nothing missed stays missed
  }

  function charts(runs) {
    const key = runs[0].mode === "rate" ? "rate" : "concurrency";
    const xs = Array.from(new Set([].concat.apply([], runs.map(function (r) { return r.points.map(function (p) { return p[key]; }); }))))
      .sort(function (a, b) { return a - b; });
    function column(run, field) {
      return xs.map(function (x) { const p = run.points.find(function (q) { return q[key] === x; }); return p ? p[field] : null; });
    }
    function draw(el, fields) {
      const series = [{ label: key }], data = [xs];
      runs.forEach(function (run, i) {
        fields.forEach(function (f, j) {
          series.push({ label: run.label + (fields.length > 1 ? " " + f.split("_")[1] : ""), stroke: COLORS[i % COLORS.length],
                        dash: j ? [6, 4] : undefined, width: 2, points: { show: true } });
          data.push(column(run, f));
        });
      });
      new uPlot({ width: Math.max(280, el.clientWidth || 400), height: 200, series: series,
                  scales: { x: { time: false } }, axes: [{ label: key === "rate" ? "requests/s" : "in flight",
                                  // ticks at the levels that were run, nothing between them
                                  splits: function () { return xs; }, values: function (u, splits) { return splits.map(String); } }, {}] },
                  data, el);
    }
    const plan = { output_throughput: ["output_throughput"], request_throughput: ["request_throughput"],
                   ttft: ["ttft_p50_ms", "ttft_p99_ms"], tpot: ["tpot_p50_ms", "tpot_p99_ms"], e2el: ["e2el_p50_ms", "e2el_p99_ms"] };
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      if (plan[el.dataset.chart]) draw(el, plan[el.dataset.chart]);
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    const job = document.querySelector("[data-live-job]");
    if (job && job.dataset.done !== "1") liveJob(job);
    const list = document.querySelector("[data-live-jobs]");
    if (list) liveList(list);
    const data = document.getElementById("bench-runs");
    if (data && typeof uPlot !== "undefined") {
      const runs = JSON.parse(data.textContent);
      if (runs.length) charts(runs);
    }
  });
})();
