// chart.js — the Traffic page's stacked-area chart, a thin layer over the vendored uPlot
// (vendor/uplot/, MIT). It draws series stacked on a UTC time axis, says what is under the
// cursor, and reports a span dragged on the plot. The colours are PALETTE's, the same as
// the .c0….c10 swatch classes of style.css (no inline style: the CSP allows none).
"use strict";

const PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1",
                 "#ff9da7", "#9c755f", "#86bcb6"];
const OTHER_COLOUR = "#c5cad3"; // the "other" group's, swatch class c10

// 1234567 → "1.23 M": packets/s and bits/s read better with SI prefixes.
function si(value) {
  const v = Math.abs(value);
  for (const [n, p] of [[1e12, "T"], [1e9, "G"], [1e6, "M"], [1e3, "k"]]) {
    if (v >= n) return `${(value / n).toPrecision(3)} ${p}`;
  }
  return v >= 10 || v === 0 ? `${Math.round(value)} ` : `${value.toPrecision(2)} `;
}

function utcTime(sec) { return new Date(sec * 1000).toISOString().slice(11, 19); }

// A stacked chart in `el`. draw(times, series, unit) with series [{label, values, colour}]
// bottom first; onSpan([from, to] | null) when the user drags a span (unix seconds) or
// clears it with a click.
class StackedChart {
  constructor(el, { onSpan, readout }) {
    this.el = el;
    this.onSpan = onSpan;
    this.readout = readout;
    this.plot = null;
    this.span = null;
    this.dragging = false;
    el.addEventListener("mousedown", () => { this.dragging = true; });
    window.addEventListener("mouseup", () => { this.dragging = false; });
    this.resize = () => this.plot?.setSize(this.size());
    window.addEventListener("resize", this.resize);
  }

  size() { return { width: Math.max(320, this.el.clientWidth), height: 320 }; }

  draw(times, series, unit) {
    this.plot?.destroy();
    this.el.textContent = "";
    this.times = times;
    this.series = series;
    // Stacked by hand: each series is drawn as the running total up to it, top of the
    // stack first, each filled down to zero with an opaque colour over the one above it.
    const totals = [];
    let acc = times.map(() => 0);
    for (const s of series) {
      acc = acc.map((a, i) => a + (s.values[i] || 0));
      totals.push(acc);
    }
    const order = series.map((_, i) => i).reverse();
    const opts = {
      ...this.size(),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      legend: { show: false },
      cursor: { drag: { x: true, y: false, setScale: false }, points: { show: false } },
      scales: { x: { time: true }, y: { range: (u, min, max) => [0, max > 0 ? max * 1.05 : 1] } },
      axes: [{ stroke: "#5b6475", grid: { stroke: "#e6e9ef" },
               values: (u, splits) => splits.map((v) => utcTime(v).slice(0, 5)) },
             { stroke: "#5b6475", grid: { stroke: "#e6e9ef" }, size: 70,
               values: (u, splits) => splits.map((v) => `${si(v)}${unit}`) }],
      series: [{}, ...order.map((i) => ({
        label: series[i].label, stroke: series[i].colour, fill: series[i].colour, width: 1,
        points: { show: false },
      }))],
      hooks: {
        setSelect: [(u) => this.selected(u)],
        setCursor: [(u) => this.hover(u, unit)],
      },
    };
    this.plot = new uPlot(opts, [times, ...order.map((i) => totals[i])], this.el);
    if (this.span) this.showSpan(this.span);
  }

  selected(u) {
    if (u.select.width < 2) return;
    const from = Math.round(u.posToVal(u.select.left, "x"));
    const to = Math.round(u.posToVal(u.select.left + u.select.width, "x"));
    this.span = [from, to];
    this.onSpan(this.span);
  }

  showSpan([from, to]) {
    const left = this.plot.valToPos(from, "x");
    const width = this.plot.valToPos(to, "x") - left;
    this.plot.setSelect({ left, width, top: 0, height: this.plot.over.clientHeight }, false);
  }

  clearSpan() {
    this.span = null;
    this.plot?.setSelect({ left: 0, width: 0, top: 0, height: 0 }, false);
  }

  hover(u, unit) {
    const i = u.cursor.idx;
    if (i == null || !this.readout) return;
    const parts = this.series.map((s) => `${s.label} ${si(s.values[i] || 0)}${unit}`);
    this.readout.textContent = `${utcTime(this.times[i])} UTC — ${parts.join(", ")}`;
  }

  destroy() {
    window.removeEventListener("resize", this.resize);
    this.plot?.destroy();
    this.plot = null;
  }
}
