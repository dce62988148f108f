// buckets.js — the Buckets page (#/buckets): the account's buckets for full captures
// (…/pcaps/ownership), adding one (the API writes a challenge file into it), validating it
// with that file's contents, and deleting one.
"use strict";

async function renderBuckets(notice) {
  const buckets = await api("GET", "/pcaps/ownership");
  main().innerHTML = `<h2>Buckets</h2>
    ${notice ? `<div class="notice" role="status">${notice}</div>` : ""}
    <table id="buckets"><thead><tr><th scope="col">Destination</th><th scope="col">Status</th>
      <th scope="col">Challenge file</th><th scope="col">Validated</th><th scope="col">
      <span class="visually-hidden">Actions</span></th></tr></thead><tbody>
      ${buckets.map((b) => `<tr><td class="mono">${esc(b.destination_conf)}</td>
        <td>${badge(b.status)}</td><td class="mono">${esc(b.filename)}</td>
        <td>${esc(b.validated || "–")}</td><td><button class="secondary danger" data-delete="${
        esc(b.id)}" aria-label="Delete ${esc(b.destination_conf)}">Delete</button></td></tr>`)
        .join("") || '<tr><td colspan="5">No buckets yet.</td></tr>'}</tbody></table>
    <h3>Add a bucket</h3>
    <form id="add" novalidate>
      ${field("destination_conf", "Bucket URL", "text",
              "file:///dir, s3://bucket/dir?region=…, gs://bucket/dir, az://container/dir")}
      <div class="error" id="form-error" role="alert"></div>
      <button class="primary" type="submit">Add</button></form>
    <h3>Validate a bucket</h3>
    <form id="validate" novalidate>
      <div class="field"><label for="v-dest">Bucket</label><select id="v-dest" name="dest">
        ${buckets.filter((b) => b.status !== "success").map((b) => `<option>${
        esc(b.destination_conf)}</option>`).join("")}</select></div>
      <div class="field"><label for="v-challenge">Contents of the challenge file</label>
        <textarea id="v-challenge" name="challenge" rows="2" spellcheck="false"></textarea></div>
      <div class="error" id="validate-error" role="alert"></div>
      <button class="primary" type="submit">Validate</button></form>`;
  $("#add").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const dest = $("#f-destination_conf").value.trim();
    try {
      const b = await api("POST", "/pcaps/ownership", { destination_conf: dest });
      await renderBuckets(`Wrote <b class="mono">${esc(b.filename)}</b> into ${esc(dest)}.
        Open that file, paste its contents below and validate.`);
    } catch (err) { $("#form-error").textContent = err.message; }
  });
  $("#validate").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      await api("POST", "/pcaps/ownership/validate", {
        destination_conf: $("#v-dest").value, ownership_challenge: $("#v-challenge").value.trim(),
      });
      await renderBuckets("Bucket validated: full captures may write to it.");
    } catch (err) { $("#validate-error").textContent = err.message; }
  });
  document.querySelectorAll("[data-delete]").forEach((btn) => btn.addEventListener("click",
    async () => {
      await api("DELETE", `/pcaps/ownership/${btn.dataset.delete}`).catch(showError);
      renderBuckets("Bucket removed.").catch(showError);
    }));
}

PAGES.push([/^#\/buckets$/, () => renderBuckets()]);
