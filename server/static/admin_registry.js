// Registry page: list the records of one entity, add, edit and delete them, import CSV/XLSX files.
(function () {
  "use strict";
  const {cfg, T, api, show, fail, clear, el, button, when} = window.WRAdmin;
  if (cfg.user === null || !cfg.spec) { return; }
  const spec = cfg.spec;
  const base = `/api/registry/${spec.name}`;
  const XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
  const form = document.getElementById("record-form");
  const tbody = document.querySelector("#records tbody");
  let editing = null; // the record being edited, null when adding

  const itemPath = (rec) => `${base}/${spec.key.map((k) => encodeURIComponent(rec[k])).join("/")}`;
  const cell = (col, value) => {
    if (value === null || value === undefined) { return ""; }
    if (typeof value === "boolean") { return value ? T.adm_yes : T.adm_no; }
    return col === "created" ? when(value) : value;
  };

  async function load() {
    const res = await api("GET", base);
    if (!res.ok) { fail(res); return; }
    tbody.replaceChildren();
    res.body.forEach((rec) => {
      const tr = el("tr", {"data-key": spec.key.map((k) => rec[k]).join("/")});
      spec.columns.forEach((c) => tr.append(el("td", {className: `col-${c}`}, cell(c, rec[c]))));
      const td = el("td", {className: "actions"});
      td.append(button(T.adm_edit, () => edit(rec), "edit"));
      const del = button(T.adm_delete, async () => {
        if (!del.classList.contains("armed")) {
          del.classList.add("armed");
          del.textContent = T.adm_confirm_delete;
          return;
        }
        const r = await api("DELETE", itemPath(rec));
        if (r.ok) { show(T.adm_deleted, false); load(); } else { fail(r); }
      }, "delete");
      td.append(del);
      tr.append(td);
      tbody.append(tr);
    });
    document.getElementById("records-empty").hidden = res.body.length > 0;
  }

  function edit(rec) {
    editing = rec;
    clear();
    document.getElementById("form-title").textContent = T.adm_edit_record;
    document.getElementById("cancel").hidden = false;
    spec.fields.forEach((f) => {
      const input = form.elements[f.name];
      if (f.kind === "bool") { input.checked = Boolean(rec[f.name]); } else { input.value = rec[f.name] ?? ""; }
      input.disabled = !spec.patch.includes(f.name);
    });
    form.scrollIntoView();
  }

  function reset() {
    editing = null;
    form.reset();
    spec.fields.forEach((f) => { form.elements[f.name].disabled = false; });
    if (cfg.user.hall && form.elements.hall) { form.elements.hall.value = cfg.user.hall; }
    document.getElementById("form-title").textContent = T.adm_add;
    document.getElementById("cancel").hidden = true;
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {};
    spec.fields.forEach((f) => {
      if (editing && !spec.patch.includes(f.name)) { return; }
      const input = form.elements[f.name];
      if (f.kind === "bool") { body[f.name] = input.checked; return; }
      const value = input.value.trim();
      if (value) { body[f.name] = value; } else if (editing && !f.required) { body[f.name] = null; }
    });
    const res = editing ? await api("PATCH", itemPath(editing), body) : await api("POST", base, body);
    if (!res.ok) { fail(res); return; }
    show(editing ? T.adm_saved : T.adm_added, false);
    reset();
    load();
  });
  document.getElementById("cancel").addEventListener("click", () => { reset(); clear(); });

  // Import: preview (dry run) shows each row's errors; "import" writes all rows or none.
  const fileInput = document.getElementById("import-file");
  const doImport = document.getElementById("do-import");
  const rowsTable = document.getElementById("import-rows");
  function fileType(file) {
    return file.name.toLowerCase().endsWith(".xlsx") ? XLSX : "text/csv";
  }
  function report(result, dryRun) {
    const summary = document.getElementById("import-summary");
    const bad = result.rows.filter((r) => !r.ok).length;
    summary.textContent = dryRun
      ? `${T.adm_preview_of} ${result.rows.length} ${T.adm_rows}, ${bad} ${T.adm_with_errors}`
      : `${T.adm_imported} ${result.written} ${T.adm_rows}`;
    summary.hidden = false;
    const fileErrors = document.getElementById("import-file-errors");
    fileErrors.replaceChildren(...result.errors.map((e) => el("li", {}, (e.field ? e.field + ": " : "") + e.message)));
    const body = rowsTable.querySelector("tbody");
    body.replaceChildren();
    result.rows.forEach((r) => {
      const tr = el("tr", {"data-row": r.row, className: r.ok ? "ok" : "bad"});
      tr.append(el("td", {}, r.row), el("td", {}, r.ok ? "✓" : "✗"));
      tr.append(el("td", {}, Object.entries(r.values).map(([k, v]) => `${k}=${v}`).join(", ")));
      tr.append(el("td", {className: "error"}, r.errors.map((e) => (e.field ? e.field + ": " : "") + e.message).join("; ")));
      body.append(tr);
    });
    rowsTable.hidden = result.rows.length === 0;
  }
  async function send(dryRun) {
    const file = fileInput.files[0];
    if (!file) { return null; }
    clear();
    const res = await api("POST", `${base}/import?dry_run=${dryRun}`, file, fileType(file));
    if (res.body && Array.isArray(res.body.rows)) { report(res.body, dryRun); }
    if (!res.ok) { fail(res); }
    return res;
  }
  document.getElementById("import-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    doImport.disabled = true;
    const res = await send(true);
    doImport.disabled = !(res && res.ok && res.body.ok);
  });
  fileInput.addEventListener("change", () => { doImport.disabled = true; });
  doImport.addEventListener("click", async () => {
    doImport.disabled = true;
    const res = await send(false);
    if (res && res.ok) { show(`${T.adm_imported} ${res.body.written} ${T.adm_rows}`, false); load(); }
  });

  reset();
  load();
})();
