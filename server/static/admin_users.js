// User page (admins): list users, create one, deactivate or activate, reset a password.
(function () {
  "use strict";
  const {cfg, T, api, show, fail, el, button, when} = window.WRAdmin;
  if (cfg.user === null || cfg.user.role !== "admin") { return; }

  async function load() {
    const res = await api("GET", "/api/users");
    if (!res.ok) { fail(res); return; }
    const tbody = document.querySelector("#users tbody");
    tbody.replaceChildren();
    res.body.forEach((u) => {
      const tr = el("tr", {"data-user": u.username, className: u.active ? "" : "inactive"});
      tr.append(el("td", {}, u.username), el("td", {}, T["adm_role_" + u.role] || u.role), el("td", {}, u.hall || "–"));
      tr.append(el("td", {className: "active"}, u.active ? T.adm_yes : T.adm_no), el("td", {}, when(u.created)));
      const td = el("td", {className: "actions"});
      const path = `/api/users/${encodeURIComponent(u.username)}`;
      td.append(button(u.active ? T.adm_deactivate : T.adm_activate, async () => {
        const r = await api("POST", `${path}/${u.active ? "deactivate" : "activate"}`);
        if (r.ok) { show(`${T.adm_saved} ${u.username}`, false); load(); } else { fail(r); }
      }, u.active ? "deactivate" : "activate"));
      const pw = el("input", {type: "password", className: "new-password", placeholder: T.adm_new_password, autocomplete: "new-password"});
      td.append(pw, button(T.adm_reset_password, async () => {
        const r = await api("POST", `${path}/password`, {password: pw.value});
        if (r.ok) { pw.value = ""; show(`${T.adm_password_set} ${u.username}`, false); } else { fail(r); }
      }, "reset-password"));
      tr.append(td);
      tbody.append(tr);
    });
  }

  const form = document.getElementById("user-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {username: form.username.value.trim(), password: form.password.value, role: form.role.value};
    if (form.hall.value.trim()) { body.hall = form.hall.value.trim(); }
    const res = await api("POST", "/api/users", body);
    if (!res.ok) { fail(res); return; }
    show(`${T.adm_created_user} ${res.body.username}`, false);
    form.reset();
    load();
  });

  load();
})();
