// Device page: live device list with commands (refreshed every 2 s) and provisioning of devices.
(function () {
  "use strict";
  const {cfg, T, api, show, fail, el, button, when} = window.WRAdmin;
  if (cfg.user === null) { return; }
  const mayCommand = ["admin", "office", "hall_manager"].includes(cfg.user.role);
  const mayProvision = ["admin", "hall_manager"].includes(cfg.user.role);
  const yesNo = (v) => (v === null || v === undefined ? "–" : v ? T.adm_yes : T.adm_no);

  async function command(dev, cmd) {
    const body = {cmd};
    const ticket = document.getElementById("ticket").value.trim();
    if (cmd === "prompt" && ticket) { body.ticket = ticket; }
    const res = await api("POST", `/api/devices/${encodeURIComponent(dev.device)}/commands`, body);
    if (res.ok) { show(`${T.adm_sent} ${T["adm_cmd_" + cmd]} → ${dev.device}`, false); } else { fail(res); }
    setTimeout(loadDevices, 300);
  }

  async function loadDevices() {
    const res = await api("GET", "/api/devices");
    if (!res.ok) { fail(res); return; }
    const tbody = document.querySelector("#devices tbody");
    tbody.replaceChildren();
    res.body.forEach((d) => {
      const tr = el("tr", {"data-device": d.device});
      tr.append(el("td", {}, d.hall), el("td", {}, d.device), el("td", {}, d.window || "–"));
      const state = el("td", {className: "state"});
      state.append(el("span", {className: `badge state-${d.state}`, "data-state": d.state}, T["adm_state_" + d.state] || d.state));
      tr.append(state, el("td", {}, when(d.last_seen)), el("td", {}, d.backlog ?? "–"));
      tr.append(el("td", {}, d.version || "–"), el("td", {}, yesNo(d.clock_synced)));
      const td = el("td", {className: "actions"});
      if (mayCommand && d.registered) {
        ["pause", "resume", "identify", "prompt"].forEach((c) => td.append(button(T["adm_cmd_" + c], () => command(d, c), `cmd-${c}`)));
      }
      tr.append(td);
      tbody.append(tr);
    });
    document.getElementById("devices-empty").hidden = res.body.length > 0;
  }

  function showCode(code) {
    // As an image (no inline SVG): an SVG file needs its namespace, which svg_inline leaves out.
    const text = code.qr_svg.includes("xmlns=") ? code.qr_svg
      : code.qr_svg.replace("<svg ", '<svg xmlns="http://www.w3.org/2000/svg" ');
    const svg = new TextEncoder().encode(text);
    let bin = "";
    svg.forEach((b) => { bin += String.fromCharCode(b); });
    document.getElementById("code-qr").src = `data:image/svg+xml;base64,${btoa(bin)}`;
    document.getElementById("code-device").textContent = `${code.hall}/${code.device}`;
    document.getElementById("code-value").textContent = code.code;
    document.getElementById("code-expires").textContent = when(code.expires);
    document.getElementById("code-url").textContent = code.url;
    document.getElementById("code-fp").textContent = code.ca_fingerprint || T.adm_no_ca;
    document.getElementById("code-box").hidden = false;
  }

  async function loadAccounts() {
    const res = await api("GET", "/api/provisioning/accounts");
    if (!res.ok) { fail(res); return; }
    const tbody = document.querySelector("#accounts tbody");
    tbody.replaceChildren();
    res.body.filter((a) => a.role === "device").forEach((a) => {
      const tr = el("tr", {"data-account": a.username});
      tr.append(el("td", {}, a.username), el("td", {}, a.hall || "–"), el("td", {}, yesNo(a.revoked)), el("td", {}, when(a.updated)));
      const td = el("td", {className: "actions"});
      if (mayProvision) {
        td.append(button(T.adm_new_code, async () => {
          const r = await api("POST", `/api/provisioning/devices/${encodeURIComponent(a.username)}/code`);
          if (r.ok) { showCode(r.body); loadAccounts(); } else { fail(r); }
        }, "new-code"));
        if (!a.revoked) {
          td.append(button(T.adm_revoke, async () => {
            const r = await api("POST", `/api/provisioning/devices/${encodeURIComponent(a.username)}/revoke`);
            if (r.ok) { show(`${T.adm_revoked_msg} ${a.username}`, false); loadAccounts(); } else { fail(r); }
          }, "revoke"));
        }
      }
      tr.append(td);
      tbody.append(tr);
    });
  }

  const form = document.getElementById("provision-form");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const body = {hall: form.hall.value.trim(), device: form.device.value.trim(), test_device: form.test_device.checked};
    if (form.window.value.trim()) { body.window = form.window.value.trim(); }
    const res = await api("POST", "/api/provisioning/devices", body);
    if (!res.ok) { fail(res); return; }
    show(`${T.adm_registered} ${res.body.device}`, false);
    showCode(res.body);
    loadAccounts();
    loadDevices();
  });

  loadDevices();
  loadAccounts();
  setInterval(loadDevices, 2000);
})();
