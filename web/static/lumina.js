// Lumina dashboard: theme, auto-refresh, copy buttons, confirmations and the overview charts.
// Pages work without it; this only adds to them. No inline scripts: the CSP forbids them.
"use strict";

(function theme() {
  const root = document.documentElement;
  const saved = localStorage.getItem("lumina.theme");
  if (saved) root.dataset.theme = saved;
  document.addEventListener("DOMContentLoaded", () => {
    const button = document.getElementById("theme-toggle");
    if (!button) return;
    button.addEventListener("click", () => {
      const dark = root.dataset.theme
        ? root.dataset.theme === "dark"
        : window.matchMedia("(prefers-color-scheme: dark)").matches;
      root.dataset.theme = dark ? "light" : "dark";
      localStorage.setItem("lumina.theme", root.dataset.theme);
      document.dispatchEvent(new Event("lumina:theme"));
    });
  });
})();

const REFRESH_SECONDS = 30;

function autoRefresh() {
  const box = document.getElementById("auto-refresh");
  if (!box) return;
  let timer = null;
  const arm = () => {
    clearTimeout(timer);
    if (box.checked) timer = setTimeout(() => location.reload(), REFRESH_SECONDS * 1000);
  };
  box.checked = localStorage.getItem("lumina.refresh") === "on";
  box.addEventListener("change", () => {
    localStorage.setItem("lumina.refresh", box.checked ? "on" : "off");
    arm();
  });
  arm();
}

function copyButtons() {
  document.querySelectorAll("button[data-copy]").forEach((button) => {
    button.addEventListener("click", async () => {
      try {
        await navigator.clipboard.writeText(button.dataset.copy);
        button.textContent = "Copied";
      } catch {
        button.textContent = "Copy failed";
      }
      setTimeout(() => (button.textContent = "Copy"), 1500);
    });
  });
}

function formsHelpers() {
  document.querySelectorAll("select[data-autosubmit]").forEach((select) => {
    select.addEventListener("change", () => select.form.submit());
  });
  // leave empty filters out of the URL, so that it stays short enough to read and share
  document.querySelectorAll("form[method=get]").forEach((form) => {
    form.addEventListener("submit", () => {
      form.querySelectorAll("input, select").forEach((field) => {
        if (field.name && field.value === "") field.disabled = true;
      });
    });
  });
  document.querySelectorAll("form[data-confirm]").forEach((form) => {
    form.addEventListener("submit", (event) => {
      if (!confirm(form.dataset.confirm)) event.preventDefault();
    });
  });
}

// ---- charts (uPlot) ----

function cssVar(name) {
  return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
}

const TOKEN_SERIES = [
  ["input_tokens", "input", "--bar"],
  ["cache_read_tokens", "cache read", "--ok"],
  ["cache_write_tokens", "cache write", "--warn"],
  ["output_tokens", "output", "--bar-llm"],
  ["reasoning_tokens", "reasoning", "--err"],
];

// 1.2M, 350k, 12, 0.05: short enough for an axis
function compact(value) {
  const size = Math.abs(value);
  if (size >= 1e9) return +(value / 1e9).toPrecision(3) + "G";
  if (size >= 1e6) return +(value / 1e6).toPrecision(3) + "M";
  if (size >= 1e4) return +(value / 1e3).toPrecision(3) + "k";
  return +value.toPrecision(3) + "";
}

function chartSeries(name, data) {
  const one = (key, label, colour, fmt) => [[data[key]], [{ label, stroke: cssVar(colour), width: 1.5, value: fmt }]];
  const usd = (u, v) => (v == null ? "–" : "$" + v.toFixed(v < 1 ? 4 : 2));
  const plain = (u, v) => (v == null ? "–" : v.toLocaleString());
  switch (name) {
    case "requests":
      return [[data.requests, data.errors], [
        { label: "requests", stroke: cssVar("--bar"), width: 1.5, fill: cssVar("--accent-soft"), value: plain },
        { label: "errors", stroke: cssVar("--err"), width: 1.5, value: plain },
      ]];
    case "cost":
      return one("cost", "cost", "--bar", usd);
    case "error_rate":
      return one("error_rate", "error rate %", "--err", (u, v) => (v == null ? "–" : v.toFixed(2) + "%"));
    case "p95":
      return one("p95", "p95 ms", "--warn", (u, v) => (v == null ? "–" : Math.round(v) + " ms"));
    case "score":
      return one("score", "mean score", "--ok", (u, v) => (v == null ? "–" : v.toFixed(3)));
    case "changed_rate":
      return one("changed_rate", "changed %", "--warn", (u, v) => (v == null ? "–" : v.toFixed(1) + "%"));
    case "tokens": {
      const used = TOKEN_SERIES.filter(([key]) => data[key].some((v) => v));
      return [used.map(([key]) => data[key]), used.map(([, label, colour]) => ({ label, stroke: cssVar(colour), width: 1.5, value: plain }))];
    }
  }
  return [[], []];
}

function drawCharts() {
  const source = document.getElementById("chart-data");
  if (!source || typeof uPlot === "undefined") return;
  const data = JSON.parse(source.textContent);
  const plots = [];
  const draw = () => {
    plots.splice(0).forEach((plot) => plot.destroy());
    document.querySelectorAll("figure[data-chart]").forEach((figure) => {
      const box = figure.querySelector(".plot");
      box.textContent = "";
      const [columns, series] = chartSeries(figure.dataset.chart, data);
      if (!data.x.length) {
        box.textContent = "No data in this range.";
        box.className = "plot empty";
        return;
      }
      const axis = { stroke: cssVar("--muted"), grid: { stroke: cssVar("--line"), width: 1 }, ticks: { stroke: cssVar("--line") } };
      const yAxis = { ...axis, size: 50, values: (u, ticks) => ticks.map(compact) };
      const opts = {
        width: Math.max(box.clientWidth, 200),
        height: 150,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        series: [{ label: "UTC" }, ...series],
        axes: [axis, yAxis],
        legend: { live: true },
        cursor: { points: { size: 5 } },
      };
      plots.push(new uPlot(opts, [data.x, ...columns], box));
    });
  };
  draw();
  let resize = null;
  window.addEventListener("resize", () => {
    clearTimeout(resize);
    resize = setTimeout(draw, 150);
  });
  document.addEventListener("lumina:theme", draw);
}

document.addEventListener("DOMContentLoaded", () => {
  autoRefresh();
  copyButtons();
  formsHelpers();
  drawCharts();
});
