/* Charts drawn from data the page carries: <div data-chart data-source="id"> with a json_script
 * {"x": [epoch seconds], "series": [{"label", "values"}]} (data-kind="bars" for bars, "steps" for a
 * value that holds until it changes, such as replicas). Drawn
 * again when htmx swaps a dashboard in (its data came with it). */
(function () {
  "use strict";
  const COLOURS = ["#3b82c4", "#27ae60", "#8e44ad", "#e67e22"];

  function draw(el) {
    const src = document.getElementById(el.dataset.source);
    if (!src || typeof uPlot === "undefined") return;
    const data = JSON.parse(src.textContent);
    el.replaceChildren();
    if (!data.series.some(function (s) { return s.values.some(function (v) { return v; }); })) {
      const empty = document.createElement("p");
      empty.className = "muted";
      empty.textContent = el.dataset.empty || "Nothing in this period yet.";
      el.append(empty);
      return;
    }
    const kind = el.dataset.kind;
    const bars = kind === "bars" ? uPlot.paths.bars({ size: [0.6, 60] })
      : kind === "steps" ? uPlot.paths.stepped({ align: 1 }) : undefined;
    const series = [{}].concat(data.series.map(function (s, i) {
      const colour = COLOURS[i % COLOURS.length];
      return { label: s.label, stroke: colour, fill: kind === "bars" ? colour + "66" : undefined, paths: bars, points: { show: false } };
    }));
    new uPlot({ width: Math.max(280, el.clientWidth || 600), height: 200, series: series, axes: [{}, { size: 60 }] },
      [data.x].concat(data.series.map(function (s) { return s.values; })), el);
  }

  function drawAll(root) { (root || document).querySelectorAll("[data-chart][data-source]").forEach(draw); }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", function () { drawAll(); });
  else drawAll();
  document.addEventListener("htmx:afterSettle", function (ev) { drawAll(ev.target); });
})();
