// Admin pages: shared helpers (config, API calls with the CSRF header, messages) and the login form.
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("admin-config").textContent);
  const T = cfg.t;
  const csrf = () => {
    const c = document.cookie.split("; ").find((x) => x.startsWith("wr_csrf="));
    return c ? decodeURIComponent(c.slice("wr_csrf=".length)) : "";
  };

  // Call an API; returns {ok, status, body} (body parsed as JSON when it is JSON).
  async function api(method, path, body, contentType) {
    const headers = {};
    let payload;
    if (method !== "GET") { headers["X-CSRF-Token"] = csrf(); }
    if (body instanceof Blob) {
      payload = body;
      headers["Content-Type"] = contentType || body.type || "application/octet-stream";
    } else if (body !== undefined) {
      payload = JSON.stringify(body);
      headers["Content-Type"] = "application/json";
    }
    let resp;
    try {
      resp = await fetch(path, {method, headers, body: payload, credentials: "same-origin"});
    } catch (err) {
      return {ok: false, status: 0, body: {detail: String(err)}};
    }
    const text = await resp.text();
    let parsed = null;
    try { parsed = text ? JSON.parse(text) : null; } catch (err) { parsed = {detail: text}; }
    return {ok: resp.ok, status: resp.status, body: parsed};
  }

  // The message of a refused call: the API's detail and field errors.
  function describe(res) {
    const b = res.body || {};
    const parts = [];
    if (typeof b.detail === "string") { parts.push(b.detail); }
    else if (Array.isArray(b.detail)) {
      b.detail.forEach((d) => parts.push((d.loc ? d.loc.slice(1).join(".") + ": " : "") + d.msg));
    }
    (b.errors || []).forEach((e) => parts.push((e.field ? e.field + ": " : "") + e.message));
    return `${T.adm_error} ${res.status}: ${parts.join("; ") || T.adm_failed}`;
  }

  const msgBox = document.getElementById("msg");
  function show(text, isError) {
    msgBox.textContent = text;
    msgBox.className = isError ? "msg error" : "msg ok";
    msgBox.hidden = false;
  }
  function fail(res) { show(describe(res), true); }
  function clear() { msgBox.hidden = true; msgBox.textContent = ""; }

  // Make an element with attributes and text.
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "className") { node.className = v; } else { node.setAttribute(k, v); }
    });
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function button(label, onClick, cls) {
    const b = el("button", {type: "button", className: cls || ""}, label);
    b.addEventListener("click", onClick);
    return b;
  }
  function when(iso) {
    if (!iso) { return "–"; }
    const d = new Date(iso);
    const pad = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  const login = document.getElementById("login");
  if (login) {
    login.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      const res = await api("POST", "/api/auth/login",
        {username: login.username.value, password: login.password.value});
      if (res.ok) { location.reload(); } else { show(`${T.adm_login_failed} (${res.status})`, true); }
    });
  }

  window.WRAdmin = {cfg, T, api, describe, show, fail, clear, el, button, when};
})();
