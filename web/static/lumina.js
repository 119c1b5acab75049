// Lumina dashboard: theme, auto-refresh, copy buttons, confirmations and the charts (overview, quality, alerts).
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
  // A form, or the button that sent it, may ask first.
  document.querySelectorAll("form").forEach((form) => {
    form.addEventListener("submit", (event) => {
      const question = event.submitter?.dataset.confirm || form.dataset.confirm;
      if (question && !confirm(question)) event.preventDefault();
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
    case "alert": {
      const fmt = (u, v) => formatIn(data.unit, v);
      return [[data.value, data.threshold], [
        { label: data.label, stroke: cssVar("--bar"), width: 1.5, value: fmt, points: { show: true, size: 4 } },
        { label: "threshold", stroke: cssVar("--err"), width: 1.2, dash: [6, 4], value: fmt, points: { show: false } },
      ]];
    }
    case "tokens": {
      const used = TOKEN_SERIES.filter(([key]) => data[key].some((v) => v));
      return [used.map(([key]) => data[key]), used.map(([, label, colour]) => ({ label, stroke: cssVar(colour), width: 1.5, value: plain }))];
    }
  }
  return [[], []];
}

// an alert's metric in its unit (the server says which: usd, ratio, ms, score or number)
function formatIn(unit, v) {
  if (v == null) return "–";
  switch (unit) {
    case "usd":
      return "$" + v.toFixed(v < 1 ? 4 : 2);
    case "ratio":
      return (v * 100).toFixed(1) + "%";
    case "ms":
      return Math.round(v) + " ms";
    case "score":
      return v.toFixed(3);
  }
  return compact(v);
}

function axisIn(unit, v) {
  if (unit === "usd") return "$" + compact(v);
  if (unit === "ratio") return +(v * 100).toPrecision(3) + "%";
  return compact(v);
}

// the span of time an alert was open (to its end, or the chart's right edge), shaded behind the lines
function openShading(data) {
  if (!data.open) return {};
  const [from, to] = data.open;
  return {
    drawClear: [
      (u) => {
        const { ctx, bbox } = u;
        const left = Math.max(bbox.left, u.valToPos(from, "x", true));
        const right = Math.min(bbox.left + bbox.width, to == null ? Infinity : u.valToPos(to, "x", true));
        if (!(right > left)) return;
        ctx.save();
        ctx.fillStyle = cssVar("--err-soft");
        ctx.fillRect(left, bbox.top, right - left, bbox.height);
        ctx.restore();
      },
    ],
  };
}

function chartHooks(name, data) {
  return name === "alert" ? openShading(data) : {};
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
      const tick = figure.dataset.chart === "alert" ? (v) => axisIn(data.unit, v) : compact;
      const yAxis = { ...axis, size: 50, values: (u, ticks) => ticks.map(tick) };
      const opts = {
        width: Math.max(box.clientWidth, 200),
        height: Number(figure.dataset.height) || 150,
        tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
        series: [{ label: "UTC" }, ...series],
        axes: [axis, yAxis],
        legend: { live: true },
        cursor: { points: { size: 5 } },
        hooks: chartHooks(figure.dataset.chart, data),
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
