// HQ console: live fleet rows (server-sent events), charts, confirmations. No inline script:
// the page's content security policy allows only files served from here.
"use strict";

function liveFleet() {
  const live = document.getElementById("live");
  const rows = document.getElementById("fleet-rows");
  if (!live || !rows || !window.EventSource) return;
  const source = new EventSource(live.dataset.stream);
  source.addEventListener("fleet", (event) => {
    rows.innerHTML = JSON.parse(event.data); // rendered and escaped by the server
    live.classList.add("on");
    live.dataset.updated = new Date().toISOString();
  });
  source.addEventListener("open", () => live.classList.add("on"));
  source.addEventListener("error", () => live.classList.remove("on"));
}

function charts() {
  const data = document.getElementById("chart-data");
  if (!data || !window.Chart) return;
  const parsed = JSON.parse(data.textContent);
  const colours = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700", "#8250df", "#0a7ea4"];
  document.querySelectorAll("canvas.chart").forEach((canvas, i) => {
    const key = canvas.dataset.series;
    const labels = parsed.labels;
    let datasets;
    if (parsed.series && key in parsed.series) {
      datasets = [{ label: canvas.getAttribute("aria-label"), data: parsed.series[key],
        borderColor: colours[i % colours.length], backgroundColor: colours[i % colours.length],
        spanGaps: true, pointRadius: 0, borderWidth: 2 }];
    } else if (parsed.groups && key in parsed.groups) {
      const group = parsed.groups[key];
      datasets = (Array.isArray(group) ? group : Object.entries(group)).map(([name, values], j) => ({
        label: name, data: values, borderColor: colours[j % colours.length],
        backgroundColor: colours[j % colours.length], pointRadius: 0, borderWidth: 2 }));
    } else return;
    new window.Chart(canvas, {
      type: canvas.dataset.kind || "line",
      data: { labels, datasets },
      options: { animation: false, responsive: true, maintainAspectRatio: false,
        plugins: { legend: { display: datasets.length > 1 } },
        scales: { x: { ticks: { maxTicksLimit: 8 } } } },
    });
    canvas.dataset.drawn = "1";
  });
}

function confirmations() {
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!window.confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

document.addEventListener("DOMContentLoaded", () => {
  liveFleet();
  charts();
  confirmations();
});
