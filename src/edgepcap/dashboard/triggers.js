// triggers.js — the Triggers pages: #/triggers lists the account's capture triggers
// (…/pcaps/triggers) with their status and the captures each has fired, deletes them, and
// arms a new one (a filter, a threshold of estimated packets/s over a window, and the full
// capture it starts); #/triggers/{id} shows one, its fired and refused list. Query
// parameters of #/triggers (from the Traffic page) pre-fill the filter.
"use strict";

const TRIGGER_NUMBERS = ["threshold_pps", "window", "cooldown", "time_limit", "packet_limit",
                         "byte_limit", "source_port", "destination_port", "protocol"];
const CAPTURE_FIELDS = ["colo_name", "destination_conf", "time_limit", "packet_limit",
                        "byte_limit"];

function triggerBadge(status) {
  return `<span class="badge ${esc(status)}">${esc(status.replace("_", " "))}</span>`;
}

function firedLinks(t, n) {
  return t.fired.slice(-n).reverse().map((f) => `<a class="mono" href="#/captures/${
    esc(f.pcap_id)}" title="${esc(f.at)}, ~${esc(Math.round(f.estimated_pps))} pps">${
    esc(f.pcap_id.slice(0, 8))}</a>`).join(" ");
}

// Draws of the list, counted: a draw (or a refresh) that a newer one started after leaves
// the page to it, so that a slow refresh never replaces what an action just showed.
let triggersDrawn = 0;

async function renderTriggers(params, notice) {
  const drawn = ++triggersDrawn;
  const [triggers, colos, buckets] = await Promise.all([api("GET", "/pcaps/triggers"),
    api("GET", "/pcaps/colos"), api("GET", "/pcaps/ownership")]);
  if (drawn !== triggersDrawn) return;
  const expires = rfc3339(Math.floor(Date.now() / 1000) + 86400);
  main().innerHTML = `<h2>Capture triggers</h2>
    <p class="hint">A trigger starts a full capture when the estimated packets/s of its
      filter, from the samples, stay over its threshold for its window.</p>
    ${notice ? `<div class="notice" role="status">${esc(notice)}</div>` : ""}
    <table id="triggers"><thead><tr><th scope="col">ID</th><th scope="col">Filter</th>
      <th scope="col">Threshold</th><th scope="col">Captures</th><th scope="col">Expires</th>
      <th scope="col">Status</th><th scope="col">Fired</th><th scope="col">
      <span class="visually-hidden">Actions</span></th></tr></thead><tbody>
      ${triggers.map((t) => `<tr data-id="${esc(t.id)}">
        <td class="mono"><a href="#/triggers/${esc(t.id)}">${esc(t.id.slice(0, 8))}</a></td>
        <td>${esc(filterSummary(t.filter_v1))}</td>
        <td>${esc(t.threshold_pps)} pps over ${esc(t.window)} s</td>
        <td>full, ${esc(t.capture.colo_name)}, ${esc(t.capture.time_limit)} s</td>
        <td>${esc(t.expires)}</td><td>${triggerBadge(t.status)}</td>
        <td>${t.fired.length}${t.fired.length ? `: ${firedLinks(t, 3)}` : ""}${
          t.refused.length ? ` <span class="hint">(${t.refused.length} refused)</span>` : ""}</td>
        <td><button class="secondary danger" data-delete="${esc(t.id)}"
          aria-label="Delete trigger ${esc(t.id.slice(0, 8))}">Delete</button></td></tr>`)
        .join("") || '<tr><td colspan="8">No triggers yet.</td></tr>'}</tbody></table>
    <h3>Arm a trigger</h3>
    <form id="arm" novalidate>
      <fieldset><legend>Filter (empty: all packets of your prefixes)</legend><div class="grid">
      ${Object.entries(FIELDS).map(([n, [l, t, h]]) => field(n, l, t, h)).join("")}
      </div></fieldset>
      <fieldset><legend>When</legend><div class="grid">
      ${field("threshold_pps", "Threshold (packets/s)", "number",
              "estimated from the samples, 1 or more", 'value="1000" required')}
      ${field("window", "Window (s)", "number", "10–300: the rate averaged over this long",
              'value="10" required')}
      ${field("cooldown", "Cooldown (s)", "number", "0–604800: no new capture this long after one",
              'value="300" required')}
      ${field("expires", "Expires (UTC)", "text", "RFC 3339, at most 30 days ahead",
              `value="${expires}" required`)}</div></fieldset>
      <fieldset><legend>The full capture it starts</legend><div class="grid">
        <div class="field"><label for="f-colo_name">Colo or machine</label>
          <select id="f-colo_name" name="colo_name" aria-describedby="e-colo_name">
          ${colos.map((c) => `<option value="${esc(c.colo)}">${esc(c.colo)}</option>` +
            c.machines.map((m) => `<option value="${esc(m.name)}">${esc(m.name)} (${
            esc(c.colo)})</option>`).join("")).join("")}</select>
          <span class="error" id="e-colo_name"></span></div>
        <div class="field"><label for="f-destination_conf">Bucket</label>
          <select id="f-destination_conf" name="destination_conf"
                  aria-describedby="e-destination_conf">${buckets.filter((b) =>
            b.status === "success").map((b) => `<option value="${esc(b.destination_conf)}">${
            esc(b.destination_conf)}</option>`).join("")}</select>
          <span class="error" id="e-destination_conf"></span></div>
        ${field("time_limit", "Time limit (s)", "number", "1–86400", 'value="60" required')}
        ${field("packet_limit", "Packet limit", "number", "optional")}
        ${field("byte_limit", "Byte limit", "number", "optional")}</div></fieldset>
      <div class="error" id="form-error" role="alert"></div>
      <button class="primary" type="submit">Arm</button></form>`;
  prefill(params);
  $("#arm").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = { filter_v1: {}, capture: { type: "full", system: "magic-transit" } };
    for (const [key, value] of new FormData(ev.target).entries()) {
      if (value === "") continue;
      const v = TRIGGER_NUMBERS.includes(key) ? Number(value) : value;
      if (key in FIELDS) body.filter_v1[key] = v;
      else if (CAPTURE_FIELDS.includes(key)) body.capture[key] = v;
      else body[key] = v;
    }
    clearFieldErrors("#arm");
    try {
      const t = await api("POST", "/pcaps/triggers", body);
      await renderTriggers(new URLSearchParams(), `Trigger ${t.id.slice(0, 8)} armed.`);
    } catch (err) { showFieldErrors(err); }
  });
  document.querySelectorAll("[data-delete]").forEach((btn) => btn.addEventListener("click",
    async () => {
      await api("DELETE", `/pcaps/triggers/${btn.dataset.delete}`).catch(showError);
      renderTriggers(new URLSearchParams(), "Trigger deleted.").catch(showError);
    }));
  // The list's status and fired captures change on their own: refresh the table only.
  refreshEvery(10_000, async () => {
    const fresh = await api("GET", "/pcaps/triggers");
    if (drawn !== triggersDrawn) return;
    const changed = (t) => JSON.stringify([t.status, t.fired.length, t.refused.length]);
    if (fresh.length !== triggers.length ||
        fresh.some((t, i) => changed(t) !== changed(triggers[i] || t) ||
                   t.id !== triggers[i]?.id)) {
      // Redraw (keeps what the form holds: the form is rebuilt only on a change).
      const form = new FormData($("#arm"));
      const shown = document.querySelector(".notice[role=status]")?.textContent;
      await renderTriggers(new URLSearchParams([...form].filter(([, v]) => v !== "")), shown);
    }
  });
}

async function renderTrigger(id) {
  const t = await api("GET", `/pcaps/triggers/${id}`);
  const c = t.capture;
  const facts = [["Status", triggerBadge(t.status)], ["Filter", esc(filterSummary(t.filter_v1))],
    ["Threshold", `${esc(t.threshold_pps)} packets/s over ${esc(t.window)} s`],
    ["Cooldown", `${esc(t.cooldown)} s`], ["Created", esc(t.created)],
    ["Expires", esc(t.expires)], ["Captures", `full, ${esc(c.colo_name)} → ${
      esc(c.destination_conf)}, ${esc(c.time_limit)} s${c.packet_limit ? `, ${
      esc(c.packet_limit)} packets` : ""}${c.byte_limit ? `, ${esc(c.byte_limit)} bytes` : ""}`]];
  main().innerHTML = `<h2>Trigger <span class="mono">${esc(t.id)}</span></h2>
    <dl class="facts">${facts.map(([k, v]) => `<dt>${k}</dt><dd>${v}</dd>`).join("")}</dl>
    <div class="row"><button class="secondary danger" id="delete">Delete</button>
      <a href="#/triggers">All triggers</a></div>
    <h3>Fired</h3>${t.fired.length ? `<table id="fired"><thead><tr><th scope="col">At</th>
      <th scope="col">Capture</th><th scope="col">Estimated packets/s</th></tr></thead><tbody>
      ${t.fired.map((f) => `<tr><td>${esc(f.at)}</td><td class="mono"><a href="#/captures/${
        esc(f.pcap_id)}">${esc(f.pcap_id)}</a></td><td>${esc(Math.round(f.estimated_pps))}</td>
      </tr>`).join("")}</tbody></table>` : "<p>Not fired yet.</p>"}
    ${t.refused.length ? `<h3>Refused</h3><table id="refused"><thead><tr><th scope="col">At
      </th><th scope="col">Estimated packets/s</th><th scope="col">Why</th></tr></thead><tbody>
      ${t.refused.map((r) => `<tr><td>${esc(r.at)}</td><td>${esc(Math.round(r.estimated_pps))}
      </td><td>${esc(r.message)}</td></tr>`).join("")}</tbody></table>` : ""}`;
  $("#delete").addEventListener("click", async () => {
    try {
      await api("DELETE", `/pcaps/triggers/${id}`);
      location.hash = "#/triggers";
    } catch (err) { showError(err); }
  });
  refreshEvery(10_000, async () => {
    const fresh = await api("GET", `/pcaps/triggers/${id}`);
    if (fresh.status !== t.status || fresh.fired.length !== t.fired.length ||
        fresh.refused.length !== t.refused.length) await renderTrigger(id);
  });
}

PAGES.push([/^#\/triggers$/, (m, params) => renderTriggers(params)]);
PAGES.push([/^#\/triggers\/([0-9A-Za-z_-]+)$/, (m) => renderTrigger(m[1])]);
