/* The usage page's chart: prompt and completion tokens per day (bars), from the server's summary. */
(function () {
  "use strict";
  document.addEventListener("DOMContentLoaded", function () {
    const el = document.querySelector('[data-chart="usage-days"]');
    const src = document.getElementById("usage-days");
    if (!el || !src || typeof uPlot === "undefined") return;
    const days = JSON.parse(src.textContent);
    if (!days.length) { el.textContent = "No calls in this period."; return; }
    const data = [days.map(function (d) { return Date.parse(d.day + "T00:00:00Z") / 1000; }),
                  days.map(function (d) { return d.prompt_tokens; }),
                  days.map(function (d) { return d.completion_tokens; })];
    const bars = uPlot.paths.bars({ size: [0.6, 60] });
    new uPlot({ width: Math.max(320, el.clientWidth || 700), height: 220,
      series: [{}, { label: "prompt tokens", stroke: "#3b82c4", fill: "rgba(59,130,196,.35)", paths: bars },
               { label: "completion tokens", stroke: "#27ae60", fill: "rgba(39,174,96,.35)", paths: bars }],
      axes: [{}, { size: 70 }] }, data, el);
  });
})();
