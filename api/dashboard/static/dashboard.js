// WHK dashboard: draws the uPlot charts from the JSON islands next to them; redraws after htmx swaps.
(function () {
  "use strict";
  var SERIES = [
    { key: "events_in", label: "events in /min", stroke: "#2563eb" },
    { key: "delivered", label: "delivered /min", stroke: "#16a34a" },
    { key: "failed", label: "failed /min", stroke: "#dc2626" }
  ];

  function draw(el) {
    var island = el.parentElement.querySelector("script.chart-data");
    if (!island || typeof uPlot === "undefined") return;
    var data = JSON.parse(island.textContent);
    var perMin = 60 / (data.bucket_s || 60);
    var cols = [data.t];
    var series = [{}];
    SERIES.forEach(function (s) {
      if (!data[s.key]) return;
      cols.push(data[s.key].map(function (v) { return v * perMin; }));
      series.push({ label: s.label, stroke: s.stroke, width: 2, points: { show: false } });
    });
    el.innerHTML = "";
    var width = Math.max(280, el.clientWidth || el.parentElement.clientWidth - 32);
    new uPlot({ width: width, height: 220, series: series, scales: { x: { time: true } },
                axes: [{}, { size: 60 }] }, cols, el);
    el.setAttribute("data-drawn", String(cols[0].length));
  }

  function drawAll(root) {
    (root || document).querySelectorAll("[data-chart]").forEach(draw);
  }

  document.addEventListener("DOMContentLoaded", function () { drawAll(document); });
  document.addEventListener("htmx:afterSwap", function (e) { drawAll(e.target); });
  var resizeTimer = null;
  window.addEventListener("resize", function () {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(function () { drawAll(document); }, 200);
  });
  // "Retry all" asks once more with the count the server showed.
  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) e.preventDefault();
  });
})();
