// The edgepcap dashboard: plain JavaScript over the public API, no build step.
// The API token lives in sessionStorage only (never in a URL); every action is an API call,
// so the dashboard can do nothing the API would refuse.
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const main = () => $("#main");
let refreshTimer = null;

function session() {
  const raw = sessionStorage.getItem("edgepcap");
  return raw ? JSON.parse(raw) : null;
}

function esc(value) {
  return String(value ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

class ApiError extends Error {
  constructor(status, errors) {
    super(errors.map((e) => e.message).join("; ") || `HTTP ${status}`);
    this.status = status;
    this.errors = errors;
  }
}

async function api(method, path, body) {
  const s = session();
  const headers = { Authorization: `Bearer ${s.token}` };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(`${s.api}/client/v4/accounts/${s.account}${path}`, {
    method, headers, body: body === undefined ? undefined : JSON.stringify(body),
  });
  let data = null;
  try { data = await r.json(); } catch { /* not JSON */ }
  if (!r.ok || !data || !data.success) {
    throw new ApiError(r.status, (data && data.errors) || [{ message: `HTTP ${r.status}` }]);
  }
  return data.result;
}

function say(text) { $("#status").textContent = text; }

function badge(status) { return `<span class="badge ${esc(status)}">${esc(status)}</span>`; }

// A copy of edgepcap.formats.filters.summary (the CLI's): the same text for the same
// filter, so change both together.
function filterSummary(f) {
  if (!f || !Object.keys(f).length) return "all packets";
  const src = (f.source_address || "any") + (f.source_port != null ? `:${f.source_port}` : "");
  const dst = (f.destination_address || "any") +
    (f.destination_port != null ? `:${f.destination_port}` : "");
  const parts = [];
  if (f.address != null || f.port != null) {
    // edgepcap's fields that match either direction
    const either = f.address != null
      ? f.address + (f.port != null ? `:${f.port}` : "") : `port ${f.port}`;
    if (src !== "any" || dst !== "any") parts.push(`${src} → ${dst}`);
    parts.push(`${either} either way`);
  } else {
    parts.push(`${src} → ${dst}`);
  }
  if (f.protocol != null) parts.push(`proto ${f.protocol}`);
  return parts.join(" ");
}

// The pages of the other files (traffic.js, triggers.js): [hash regex, render(match, params)].
const PAGES = [];
let refreshPaused = null, refreshRound = 0;

function stopRefresh() {
  refreshRound += 1;
  refreshPaused = null;
  if (refreshTimer) { clearTimeout(refreshTimer); refreshTimer = null; }
}

// Runs `load` every `ms` until the next page, paused while the tab is hidden.
function refreshEvery(ms, load) {
  const round = ++refreshRound;
  const run = () => load().then(tick, showError);
  const tick = () => {
    if (round !== refreshRound) return;
    refreshTimer = setTimeout(() => { if (document.hidden) refreshPaused = run; else run(); }, ms);
  };
  tick();
}

document.addEventListener("visibilitychange", () => {
  if (!document.hidden && refreshPaused) { const run = refreshPaused; refreshPaused = null; run(); }
});

// Fills a form's fields (#f-NAME) from query parameters: the wizard and the triggers form,
// opened from the Traffic page.
function prefill(params) {
  for (const [name, value] of params) { const el = $(`#f-${name}`); if (el) el.value = value; }
}

// ---- sign in ----------------------------------------------------------------------------
function renderSignIn(message) {
  $("#nav").hidden = true;
  main().innerHTML = `
    <h2>Sign in</h2>
    <form id="signin" novalidate>
      <div class="field"><label for="account">Account ID</label>
        <input id="account" name="account" required autocomplete="username"
               pattern="[0-9a-f]{32}" spellcheck="false"></div>
      <div class="field"><label for="token">API token</label>
        <input id="token" name="token" type="password" required autocomplete="current-password">
        <span class="hint">Kept in this browser tab only, until you sign out.</span></div>
      <div class="error" id="signin-error" role="alert">${esc(message || "")}</div>
      <button class="primary" type="submit">Sign in</button>
    </form>`;
  $("#signin").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const account = $("#account").value.trim();
    const token = $("#token").value.trim();
    sessionStorage.setItem("edgepcap", JSON.stringify({ api: location.origin, account, token }));
    try {
      await api("GET", "/pcaps");
      location.hash = "#/captures";
      route();
    } catch (err) {
      sessionStorage.removeItem("edgepcap");
      $("#signin-error").textContent = err.message;
    }
  });
  $("#account").focus();
}

// ---- captures list ----------------------------------------------------------------------
async function renderCaptures() {
  main().innerHTML = `<h2>Network packet captures</h2>
    <div class="row"><a href="#/new">Start a capture</a></div>
    <table id="captures"><caption class="hint">The 50 newest, newest first</caption><thead><tr>
      <th scope="col">ID</th><th scope="col">Type</th><th scope="col">Colo</th>
      <th scope="col">Filter</th><th scope="col">Submitted</th><th scope="col">Status</th>
      <th scope="col">Packets</th></tr></thead><tbody></tbody></table>`;
  const load = async () => {
    const pcaps = await api("GET", "/pcaps");
    $("#captures tbody").innerHTML = pcaps.map((p) => `<tr data-id="${esc(p.id)}">
      <td class="mono"><a href="#/captures/${esc(p.id)}">${esc(p.id)}</a></td>
      <td>${p.type === "simple" ? "sample" : "full"}</td><td>${esc(p.colo_name || "–")}</td>
      <td>${esc(filterSummary(p.filter_v1))}</td><td>${esc(p.submitted)}</td>
      <td>${badge(p.status)}</td><td>${esc(p.packets_captured)}</td></tr>`).join("") ||
      `<tr><td colspan="7">No captures yet.</td></tr>`;
    if (pcaps.some((p) => p.status === "pending" || p.status === "running")) {
      refreshTimer = setTimeout(() => load().catch(showError), 1000);
    }
  };
  await load();
}

// ---- start a capture --------------------------------------------------------------------
const FIELDS = {
  source_address: ["Source address", "text", "IPv4 or IPv6 host, e.g. 198.51.100.7"],
  destination_address: ["Destination address", "text", "IPv4 or IPv6 host"],
  source_port: ["Source port", "number", "0–65535"],
  destination_port: ["Destination port", "number", "0–65535"],
  protocol: ["Protocol", "number", "0–255 (6 TCP, 17 UDP, 1 ICMP)"],
};

function field(name, label, type, hint, extra = "") {
  return `<div class="field"><label for="f-${name}">${esc(label)}</label>
    <input id="f-${name}" name="${name}" type="${type}" ${extra}
           aria-describedby="h-${name} e-${name}">
    <span class="hint" id="h-${name}">${esc(hint)}</span>
    <span class="error" id="e-${name}"></span></div>`;
}

async function renderNew() {
  main().innerHTML = `<h2>Start a capture</h2>
    <form id="choose"><fieldset><legend>Type of capture</legend>
      <label><input type="radio" name="type" value="simple" checked> Sample — 1 in 100 packets
        of recent history, first 160 bytes, ready at once</label><br>
      <label><input type="radio" name="type" value="full"> Full — every matching packet from
        now on, written to your bucket</label></fieldset>
      <button class="primary" type="submit">Next</button></form>`;
  $("#choose").addEventListener("submit", (ev) => {
    ev.preventDefault();
    location.hash = `#/new/${new FormData(ev.target).get("type")}`;
  });
}

async function renderFields(type, params) {
  const full = type === "full";
  let coloOptions = "", bucketOptions = "";
  if (full) {
    const [colos, buckets] = await Promise.all([api("GET", "/pcaps/colos"),
                                                api("GET", "/pcaps/ownership")]);
    coloOptions = colos.map((c) => `<option value="${esc(c.colo)}">${esc(c.colo)} — all
        ${c.live} live machines</option>` + c.machines.filter((m) => m.live).map((m) =>
        `<option value="${esc(m.name)}">${esc(m.name)} (${esc(c.colo)})</option>`).join(""))
      .join("");
    bucketOptions = buckets.filter((b) => b.status === "success").map((b) =>
      `<option value="${esc(b.destination_conf)}">${esc(b.destination_conf)}</option>`).join("");
  }
  main().innerHTML = `<h2>Start a ${full ? "full" : "sample"} capture</h2>
    <form id="start" novalidate>
      <fieldset><legend>Filter (empty: all packets of your prefixes)</legend><div class="grid">
      ${Object.entries(FIELDS).map(([n, [l, t, h]]) => field(n, l, t, h)).join("")}
      </div></fieldset>
      <fieldset><legend>Limits</legend><div class="grid">
      ${field("time_limit", "Time limit (s)", "number", full ? "1–86400" : "1–300",
              `value="${full ? 300 : 60}" required`)}
      ${field("packet_limit", "Packet limit", "number", "1–10000",
              full ? "" : 'value="10000" required')}
      ${full ? field("byte_limit", "Byte limit", "number", "1–1000000000") : ""}
      ${full ? "" : field("offset_time", "Window ends at (UTC, optional)", "text",
                          "RFC 3339, e.g. 2026-01-02T15:04:05Z; empty: now")}
      </div></fieldset>
      ${full ? `<fieldset><legend>Where</legend>
        <div class="field"><label for="f-colo_name">Colo or machine</label>
          <select id="f-colo_name" name="colo_name" aria-describedby="e-colo_name">
          ${coloOptions}</select><span class="error" id="e-colo_name"></span></div>
        <div class="field"><label for="f-destination_conf">Bucket</label>
          <select id="f-destination_conf" name="destination_conf"
                  aria-describedby="e-destination_conf">${bucketOptions}</select>
          <span class="hint">Only validated buckets; add one under <a href="#/buckets">Buckets</a>.
          </span><span class="error" id="e-destination_conf"></span></div></fieldset>` : ""}
      <div class="error" id="form-error" role="alert"></div>
      <div class="row"><button class="primary" type="submit">Start</button>
        <a href="#/new">Back</a></div>
    </form>`;
  prefill(params);
  $("#start").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    const body = { system: "magic-transit", type, filter_v1: {} };
    for (const [key, value] of form.entries()) {
      if (value === "") continue;
      const number = ["source_port", "destination_port", "protocol", "time_limit",
                      "packet_limit", "byte_limit"].includes(key);
      const v = number ? Number(value) : value;
      if (key in FIELDS) body.filter_v1[key] = v; else body[key] = v;
    }
    clearFieldErrors("#start");
    try {
      const pcap = await api("POST", "/pcaps", body);
      location.hash = `#/captures/${pcap.id}`;
    } catch (err) {
      showFieldErrors(err);
    }
  });
}

function clearFieldErrors(form) {
  document.querySelectorAll(`${form} .error`).forEach((e) => { e.textContent = ""; });
  document.querySelectorAll(`${form} [aria-invalid]`).forEach((e) =>
    e.removeAttribute("aria-invalid"));
}

function showFieldErrors(err) {
  const rest = [];
  for (const e of err.errors || [{ message: err.message }]) {
    // The API names the field in backticks: show its message under that field.
    const m = /`(?:[a-z_0-9]+\.)*([a-z_]+)`/.exec(e.message);
    const slot = m && $(`#e-${m[1]}`);
    if (slot) {
      slot.textContent = e.message;
      $(`#f-${m[1]}`)?.setAttribute("aria-invalid", "true");
    } else {
      rest.push(e.message);
    }
  }
  $("#form-error").textContent = rest.join("; ");
  const first = document.querySelector('[aria-invalid="true"]');
  if (first) first.focus();
}

// ---- capture details --------------------------------------------------------------------
async function renderDetails(id) {
  const p = await api("GET", `/pcaps/${id}`);
  const active = p.status === "pending" || p.status === "running";
  const facts = [["Status", badge(p.status)], ["Type", p.type === "simple" ? "sample" : "full"],
    ["Submitted", esc(p.submitted)], ["Filter", esc(filterSummary(p.filter_v1))],
    ["Colo", esc(p.colo_name || "–")], ["Bucket", esc(p.destination_conf || "–")],
    ["Time limit", `${esc(p.time_limit)} s`], ["Packet limit", esc(p.packet_limit ?? "–")],
    ["Byte limit", esc(p.byte_limit ?? "–")], ["Packets captured", esc(p.packets_captured)],
    ["Stop requested", esc(p.stop_requested || "–")], ["Message", esc(p.error_message || "–")],
    ["Started by", p.trigger_id ? `<a href="#/triggers/${esc(p.trigger_id)}">trigger ${
      esc(p.trigger_id.slice(0, 8))}</a>` : "you"]];
  main().innerHTML = `<h2>Capture <span class="mono">${esc(p.id)}</span></h2>
    <dl class="facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>
    <div class="row">
      ${p.type === "full" && active ? '<button class="secondary danger" id="stop">Stop</button>' : ""}
      ${p.status === "success" ? '<button class="secondary" id="download">Download</button>' : ""}
    </div>
    ${p.machines.length ? `<h3>Machines</h3><table id="machines"><thead><tr>
      <th scope="col">Machine</th><th scope="col">State</th><th scope="col">Packets</th>
      <th scope="col">Bytes</th><th scope="col">Kernel drops</th><th scope="col">File / error</th>
      </tr></thead><tbody>${p.machines.map((m) => `<tr><td>${esc(m.machine)}</td>
      <td>${esc(m.state)}</td><td>${esc(m.packets)}</td><td>${esc(m.bytes)}</td>
      <td>${esc(m.dropped)}</td><td class="mono">${esc(m.error || m.object || "")}</td></tr>`)
      .join("")}</tbody></table>` : ""}
    <section id="preview"></section>`;
  $("#stop")?.addEventListener("click", async () => {
    await api("PUT", `/pcaps/${id}/stop`).catch(showError);
    say("Stop requested");
    renderDetails(id).catch(showError);
  });
  $("#download")?.addEventListener("click", () => download(p).catch(showError));
  if (active) refreshTimer = setTimeout(() => renderDetails(id).catch(showError), 1000);
  if (p.status === "success") renderPreview(id).catch((err) => {
    $("#preview").innerHTML = `<p class="notice alert">${esc(err.message)}</p>`;
  });
}

async function download(p) {
  const s = session();
  say("Downloading…");
  const r = await fetch(`${s.api}/client/v4/accounts/${s.account}/pcaps/${p.id}/download`,
                        { headers: { Authorization: `Bearer ${s.token}` } });
  if (!r.ok) throw new ApiError(r.status, (await r.json()).errors);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url; a.download = `pcap_${p.id}.pcap`;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
  say("Downloaded");
}

async function renderPreview(id) {
  const data = await api("GET", `/pcaps/${id}/preview?count=100`);
  const rows = data.packets;
  const t0 = rows.length ? rows[0].time_ns : 0;
  $("#preview").innerHTML = `<h3>First ${rows.length} packets</h3>
    ${rows.length ? `<table id="packets"><thead><tr><th scope="col">#</th>
      <th scope="col">Time (s)</th><th scope="col">Source</th><th scope="col">Destination</th>
      <th scope="col">Protocol</th><th scope="col">Ports</th><th scope="col">Length</th>
      </tr></thead><tbody>${rows.map((r, i) => `<tr tabindex="0" data-i="${i}">
      <td>${i + 1}</td><td class="mono">${((r.time_ns - t0) / 1e9).toFixed(6)}</td>
      <td class="mono">${esc(r.source)}</td><td class="mono">${esc(r.destination)}</td>
      <td>${esc(r.protocol)}</td><td>${r.source_port != null ?
      `${esc(r.source_port)} → ${esc(r.destination_port)}` : ""}</td><td>${esc(r.length)}</td>
      </tr>`).join("")}</tbody></table><h3>Packet bytes</h3>
      <pre class="hex" id="hex" aria-live="polite">Select a packet.</pre>` :
      "<p>No packets in this capture.</p>"}`;
  const show = (tr) => {
    document.querySelectorAll("#packets tr.selected").forEach((x) => x.classList.remove("selected"));
    tr.classList.add("selected");
    $("#hex").textContent = hexdump(rows[Number(tr.dataset.i)].hex);
  };
  document.querySelectorAll("#packets tbody tr").forEach((tr) => {
    tr.addEventListener("click", () => show(tr));
    tr.addEventListener("keydown", (ev) => { if (ev.key === "Enter") show(tr); });
  });
}

function hexdump(hex) {
  const lines = [];
  for (let off = 0; off < hex.length / 2; off += 16) {
    const bytes = hex.slice(off * 2, off * 2 + 32).match(/../g) || [];
    const ascii = bytes.map((b) => { const c = parseInt(b, 16);
      return c >= 32 && c < 127 ? String.fromCharCode(c) : "."; }).join("");
    lines.push(`${off.toString(16).padStart(4, "0")}  ${bytes.join(" ").padEnd(47)}  ${ascii}`);
  }
  return lines.join("\n");
}

// ---- routing ----------------------------------------------------------------------------
function showError(err) {
  if (err instanceof ApiError && (err.status === 401 || err.status === 403)) {
    sessionStorage.removeItem("edgepcap");
    renderSignIn(err.message);
    return;
  }
  main().insertAdjacentHTML("afterbegin", `<p class="notice alert" role="alert">${
    esc(err.message)}</p>`);
}

async function route() {
  stopRefresh();
  if (!session()) { renderSignIn(); return; }
  $("#nav").hidden = false;
  const [hash, query] = (location.hash || "#/captures").split("?");
  const params = new URLSearchParams(query || "");
  const details = /^#\/captures\/([0-9a-f]{32})$/.exec(hash);
  const page = PAGES.map(([re, render]) => [re.exec(hash), render]).find(([m]) => m);
  try {
    if (details) await renderDetails(details[1]);
    else if (page) await page[1](page[0], params);
    else if (hash === "#/new") await renderNew();
    else if (hash === "#/new/simple" || hash === "#/new/full") {
      await renderFields(hash.slice(6), params);
    } else await renderCaptures();
  } catch (err) { showError(err); }
  main().focus();
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#signout").addEventListener("click", () => {
    sessionStorage.removeItem("edgepcap");
    location.hash = "";
    route();
  });
  route();
});
