// traffic.js — the Traffic page (#/traffic): the account's sampled traffic over a chosen
// window (GET …/traffic), as a stacked chart of estimated packets/s or bits/s (chart.js)
// grouped by one dimension, with the top groups in a table beside it. It refreshes every
// 10 s while the tab is visible. Selecting a group (table row or legend) or a span (drag
// on the chart) offers "Capture this": the capture wizard (app.js) opened pre-filled, a
// sample capture of a past span or a full capture from now; or a trigger armed for it.
"use strict";

const RANGES = [["15m", "15 min", 900], ["1h", "1 hour", 3600], ["6h", "6 hours", 21600],
                ["24h", "24 hours", 86400]];
const GROUPS = [["protocol", "Protocol"], ["source_address", "Source address"],
                ["destination_address", "Destination address"], ["source_port", "Source port"],
                ["destination_port", "Destination port"], ["colo", "Colo"],
                ["machine", "Machine"]];
const PROTOCOLS = { 1: "ICMP", 6: "TCP", 17: "UDP", 47: "GRE", 50: "ESP", 58: "ICMPv6" };
const SAMPLE_MAX = 300; // a sample capture's longest time_limit, in seconds

const traffic = { range: "1h", groupBy: "destination_port", unit: "pps", group: null,
                  span: null, result: null, chart: null, seq: 0 };

function groupLabel(key) {
  if (traffic.result?.group_by === "protocol" && PROTOCOLS[key]) return `${key} (${PROTOCOLS[key]})`;
  if (key === "none") return "none (no ports)";
  return String(key);
}

function rfc3339(sec) { return new Date(sec * 1000).toISOString().replace(/\.\d+Z$/, "Z"); }

async function renderTraffic() {
  traffic.chart?.destroy();
  traffic.group = null;
  traffic.span = null;
  const option = ([v, l]) => `<option value="${v}">${esc(l)}</option>`;
  main().innerHTML = `<h2>Traffic</h2>
    <form id="traffic-controls" class="controls">
      <div class="field"><label for="t-range">Time range</label>
        <select id="t-range">${RANGES.map(option).join("")}</select></div>
      <div class="field"><label for="t-group">Group by</label>
        <select id="t-group">${GROUPS.map(option).join("")}</select></div>
      <fieldset class="inline"><legend>Show</legend>
        <label><input type="radio" name="unit" value="pps" checked> packets/s</label>
        <label><input type="radio" name="unit" value="bps"> bits/s</label></fieldset>
    </form>
    <p class="hint" id="traffic-about"></p>
    <div class="error" id="traffic-error" role="alert"></div>
    <div class="traffic" id="traffic">
      <div class="chart-box"><div id="chart" role="img" aria-label="Stacked chart of
        estimated traffic; drag across it to select a time span"></div>
        <p class="hint mono" id="readout">Drag across the chart to select a time span.</p>
        <div id="legend" class="legend" aria-label="Groups"></div></div>
      <div class="side"><table id="top"><caption class="hint">Top groups, heaviest first
        </caption><thead><tr><th scope="col">Group</th><th scope="col">Est. packets</th>
        <th scope="col">Avg</th><th scope="col">Samples</th></tr></thead><tbody></tbody>
        </table><section id="selection" aria-live="polite"></section></div>
    </div>`;
  $("#t-range").value = traffic.range;
  $("#t-group").value = traffic.groupBy;
  $(`#traffic-controls input[value="${traffic.unit}"]`).checked = true;
  $("#t-range").addEventListener("change", (ev) => {
    traffic.range = ev.target.value;
    traffic.span = null;
    traffic.chart.clearSpan();
    reloadTraffic();
  });
  $("#t-group").addEventListener("change", (ev) => {
    traffic.groupBy = ev.target.value;
    traffic.group = null;
    reloadTraffic();
  });
  $("#traffic-controls").addEventListener("change", (ev) => {
    if (ev.target.name === "unit") { traffic.unit = ev.target.value; drawTraffic(); }
  });
  traffic.chart = new StackedChart($("#chart"), {
    readout: $("#readout"),
    onSpan: (span) => { traffic.span = span; showSelection(); },
  });
  await loadTraffic();
  refreshEvery(10_000, loadTraffic);
}

function reloadTraffic() {
  loadTraffic().catch(showError);
  showSelection();
}

async function loadTraffic() {
  const seq = ++traffic.seq;
  const seconds = RANGES.find((r) => r[0] === traffic.range)[2];
  const since = Math.floor(Date.now() / 1000) - seconds;
  const query = new URLSearchParams({ since, group_by: traffic.groupBy, limit: 10 });
  let result;
  try {
    result = await api("GET", `/traffic?${query}`);
  } catch (err) {
    if (err instanceof ApiError && err.status === 400) {
      $("#traffic-error").textContent = err.message;
      return;
    }
    throw err;
  }
  if (seq !== traffic.seq || !$("#traffic")) return; // a newer query, or another page
  $("#traffic-error").textContent = "";
  traffic.result = result;
  drawTraffic();
  $("#traffic").dataset.loaded = `${result.group_by} ${traffic.range}`;
}

function drawTraffic() {
  const r = traffic.result;
  if (!r) return;
  const since = Date.parse(r.since) / 1000, until = Date.parse(r.until) / 1000;
  const grid = new Set();
  for (let t = Math.floor(since / r.step) * r.step; t < until; t += r.step) grid.add(t);
  r.series.forEach((s) => s.points.forEach((p) => grid.add(p[0])));
  const times = [...grid].sort((a, b) => a - b);
  const column = traffic.unit === "pps" ? 1 : 2;
  const series = r.series.map((s, i) => {
    const at = new Map(s.points.map((p) => [p[0], p[column]]));
    return { key: s.key, label: groupLabel(s.key), values: times.map((t) => at.get(t) || 0),
             colour: s.key === "other" ? OTHER_COLOUR : PALETTE[i % PALETTE.length],
             swatch: s.key === "other" ? "c10" : `c${i % PALETTE.length}` };
  });
  traffic.chart.draw(times, series, traffic.unit === "pps" ? "p/s" : "b/s");
  const seconds = Math.max(1, until - since);
  $("#traffic-about").textContent = `${rfc3339(since)} – ${rfc3339(until)}, ${r.step} s steps;
    ${r.samples} samples at 1 in ${r.sample_rate}: estimates, ± shown at 95 %.`;
  const rows = r.series.map((s, i) => {
    const avg = traffic.unit === "pps" ? `${si(s.packets / seconds)}p/s`
      : `${si(s.bits / seconds)}b/s`;
    const on = traffic.group === s.key;
    return `<tr data-key="${esc(s.key)}" class="${on ? "selected" : ""}">
      <td><button type="button" class="link group" data-key="${esc(s.key)}" aria-pressed="${on}">
      <span class="swatch ${series[i].swatch}"></span>${esc(groupLabel(s.key))}</button></td>
      <td>${esc(si(s.packets))}<span class="hint"> ± ${esc(si(s.packets_error_95))}</span></td>
      <td>${esc(avg)}</td><td>${esc(s.samples)}</td></tr>`;
  });
  $("#top tbody").innerHTML = rows.join("") ||
    '<tr><td colspan="4">No sampled traffic in this window.</td></tr>';
  $("#legend").innerHTML = r.series.map((s, i) => `<button type="button" class="link group"
    data-key="${esc(s.key)}" aria-pressed="${traffic.group === s.key}"><span class="swatch
    ${series[i].swatch}"></span>${esc(groupLabel(s.key))}</button>`).join("");
  document.querySelectorAll("#traffic button.group").forEach((b) => b.addEventListener("click",
    () => {
      traffic.group = traffic.group === b.dataset.key ? null : b.dataset.key;
      drawTraffic();
      showSelection();
    }));
}

// What a capture of the selection filters on: the selected group's own field.
function selectionFilter() {
  const key = traffic.group, by = traffic.result?.group_by;
  if (key == null || key === "other" || key === "none" || by === "colo" || by === "machine") {
    return {};
  }
  return { [by]: key };
}

function showSelection() {
  const box = $("#selection");
  if (!box) return;
  const by = traffic.result?.group_by;
  if (traffic.group == null && !traffic.span) { box.innerHTML = ""; return; }
  const now = Math.floor(Date.now() / 1000);
  const [from, to] = traffic.span || [now - SAMPLE_MAX, now];
  const length = Math.min(SAMPLE_MAX, Math.max(1, to - from));
  const filter = selectionFilter();
  const colo = (by === "colo" || by === "machine") && traffic.group !== "other"
    ? traffic.group : null;
  const what = traffic.group == null ? "all traffic"
    : `${GROUPS.find((g) => g[0] === by)[1].toLowerCase()} ${groupLabel(traffic.group)}`;
  const sample = new URLSearchParams({ ...filter, time_limit: length, offset_time: rfc3339(to) });
  const full = new URLSearchParams({ ...filter, ...(colo ? { colo_name: colo } : {}) });
  box.innerHTML = `<h3>Selection</h3>
    <p>${esc(what)}${traffic.group === "other" ? " (the groups not listed: no filter)" : ""},
    ${traffic.span ? `${utcTime(from)}–${utcTime(to)} UTC (${to - from} s)`
      : "no span selected"}</p>
    <form id="capture-this"><fieldset><legend>Capture this</legend>
      <label><input type="radio" name="when" value="past" checked> Sample of ${traffic.span
        ? `the selected span${to - from > SAMPLE_MAX ? `, its last ${SAMPLE_MAX} s` : ""}`
        : `the last ${SAMPLE_MAX} s`} (${esc(rfc3339(to - length))} – ${esc(rfc3339(to))})
      </label><br>
      <label><input type="radio" name="when" value="now"> Full capture from now${colo
        ? ` in ${esc(colo)}` : ""}</label></fieldset>
      <div class="row"><button class="primary" type="submit">Capture this</button>
        <a href="#/triggers?${new URLSearchParams(filter)}">Arm a trigger for this</a>
        <button type="button" class="link" id="clear-selection">Clear selection</button></div>
    </form>`;
  $("#capture-this").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const past = new FormData(ev.target).get("when") === "past";
    location.hash = past ? `#/new/simple?${sample}` : `#/new/full?${full}`;
  });
  $("#clear-selection").addEventListener("click", () => {
    traffic.group = null;
    traffic.span = null;
    traffic.chart.clearSpan();
    drawTraffic();
    showSelection();
  });
}

PAGES.push([/^#\/traffic$/, () => renderTraffic()]);
