// A set's chart: knee cave per rep for each leg, with the minor/moderate/severe thresholds (uPlot).
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("chart-data").textContent);
  var box = document.getElementById("chart");
  var flat = function (v) { return data.rep.map(function () { return v; }); };
  var threshold = function (label, colour) {
    return { label: label, stroke: colour, dash: [6, 4], width: 1, points: { show: false } };
  };
  var options = {
    width: Math.min(800, box.clientWidth || 800), height: 320,
    scales: { x: { time: false } },
    axes: [{ label: "rep", incrs: [1] }, { label: "knee cave (leg lengths)" },
           { scale: "load", side: 1, label: "load", grid: { show: false } }],
    series: [
      { label: "rep" },
      { label: "left knee", stroke: "#1f6fd1", width: 2, points: { size: 8 } },
      { label: "right knee", stroke: "#d1342f", width: 2, points: { size: 8 } },
      threshold("minor", "#e0a400"), threshold("moderate", "#e07000"), threshold("severe", "#a00000"),
      { label: "load", stroke: "#777", scale: "load", width: 1, points: { show: false } }
    ]
  };
  var plot = new uPlot(options, [data.rep, data.left, data.right,
    flat(data.minor), flat(data.moderate), flat(data.severe), data.load], box);
  box.dataset.rendered = String(plot.series.length);
})();
