/* The window page: today's timeline, hour × weekday heatmap, daily trend (ECharts, served locally). */
"use strict";
(function () {
  const { text, pct, fixed, levelLabel, connect, I18N } = window.WR;
  const hall = document.body.dataset.hall;
  const win = document.body.dataset.window;
  const charts = {
    timeline: echarts.init(document.getElementById("timeline")),
    heatmap: echarts.init(document.getElementById("heatmap")),
    trend: echarts.init(document.getElementById("trend")),
  };
  window.addEventListener("resize", () => Object.values(charts).forEach((c) => c.resize()));
  let points = [];
  const drawTimeline = () => {
    charts.timeline.setOption({
      animation: false,
      tooltip: { trigger: "item", formatter: (p) => new Date(p.value[0]).toLocaleTimeString() + " " + levelLabel(p.value[2], p.value[3]) },
      xAxis: { type: "time" },
      yAxis: { type: "value", min: 0, max: 100, name: text("score") },
      series: [{ type: "scatter", symbolSize: 10,
        data: points.map((p) => [p.ts, ((p.level - 1) / (p.scale - 1)) * 100, p.scale, p.level]),
        itemStyle: { color: (p) => (p.value[1] < 50 ? "#d55e00" : "#0072b2") } }],
    });
  };
  const draw = (h) => {
    points = h.timeline;
    drawTimeline();
    const days = text("weekdays").split(",");
    const max = Math.max(1, ...h.heatmap.map((c) => c[2]));
    charts.heatmap.setOption({
      animation: false,
      tooltip: {},
      xAxis: { type: "category", data: [...Array(24).keys()].map(String), name: text("hour") },
      yAxis: { type: "category", data: days },
      visualMap: { min: 0, max, calculable: true, orient: "horizontal", right: 10, top: 0 },
      grid: { top: 50, bottom: 40 },
      series: [{ type: "heatmap", data: h.heatmap.map((c) => [c[1], c[0], c[2]]) }],
    });
    charts.trend.setOption({
      animation: false,
      tooltip: { trigger: "axis" },
      legend: { data: [text("ratings"), text("score")] },
      xAxis: { type: "category", data: h.trend.map((d) => d.date) },
      yAxis: [{ type: "value", name: text("ratings") }, { type: "value", name: text("score"), min: 0, max: 100 }],
      series: [
        { name: text("ratings"), type: "bar", data: h.trend.map((d) => d.ratings) },
        { name: text("score"), type: "line", yAxisIndex: 1, data: h.trend.map((d) => (d.score === null ? null : Number(d.score.toFixed(1)))) },
      ],
    });
  };
  const kpis = (r) => {
    document.getElementById("kpi-state").textContent = text("state_" + r.state);
    document.getElementById("kpi-ratings").textContent = r.ratings;
    document.getElementById("kpi-rate").textContent = pct(r.satisfaction_rate);
    document.getElementById("kpi-score").textContent = fixed(r.score);
    document.getElementById("kpi-negatives").textContent = r.negatives;
    if (r.name) document.getElementById("window-name").textContent = r.window + " " + r.name;
  };
  const load = () => fetch("/api/live/windows/" + encodeURIComponent(hall) + "/" + encodeURIComponent(win))
    .then((r) => r.json()).then(draw).catch(() => {});
  load();
  connect("/api/live/stream?view=public", {
    snapshot: (snap) => { const r = snap.rows.find((x) => x.hall === hall && x.window === win); if (r) kpis(r); },
    window: (msg) => {
      if (msg.row.hall !== hall || msg.row.window !== win) return;
      kpis(msg.row);
      if (msg.rating) { points.push({ ts: msg.rating.ts, scale: msg.rating.scale, level: msg.rating.level }); drawTimeline(); }
    },
  }, document.getElementById("live-state"));
  void I18N;
})();
