/* The live hall board: rows replaced from the SSE stream, the last negative rating flashing. */
"use strict";
(function () {
  const { text, pct, fixed, clock, levelLabel, el, totals, connect, I18N } = window.WR;
  const tbody = document.getElementById("rows");
  const table = document.getElementById("board");
  const empty = document.getElementById("empty");
  const foot = document.getElementById("total");
  const updated = document.getElementById("updated");
  const byKey = new Map();
  const FLASH_MS = 60000;

  const cell = (value, cls) => el("td", { class: cls || "", text: String(value) });
  const render = (r, flash) => {
    const link = el("a", { href: "/window/" + r.hall + "/" + r.window + "?lang=" + I18N.lang, text: r.window });
    if (r.name) link.title = r.name;
    const tr = el("tr", { "data-key": r.hall + "/" + r.window, class: "state-" + r.state }, [
      el("td", { class: "window" }, [link]),
      cell(r.hall),
      el("td", { class: "state" }, [el("span", { class: "dot " + r.state }), document.createTextNode(text("state_" + r.state))]),
      cell(r.staff || "–", "staff-col"),
      cell(r.ratings, "num ratings"),
      ...r.columns.map((n) => cell(n, "num")),
      cell(pct(r.satisfaction_rate), "num rate"),
      cell(fixed(r.score), "num score"),
      cell(r.negatives, "num negatives"),
      cell(r.last_negative ? clock(r.last_negative.ts) + " " + levelLabel(r.last_negative.scale, r.last_negative.level) : "–", "last-negative"),
    ]);
    if (r.negatives) tr.classList.add("has-negative");
    if (flash) tr.classList.add("flash");
    return tr;
  };
  const isFresh = (r) => r.last_negative && Date.now() - r.last_negative.ts < FLASH_MS;
  const refreshTotals = () => {
    const rows = [...byKey.values()];
    const total = totals(rows);
    empty.textContent = text("empty");
    empty.hidden = total.ratings > 0 || rows.length > 0;
    table.hidden = rows.length === 0;
    foot.hidden = rows.length < 2;
    const tds = foot.querySelectorAll("td");
    /* Cells: label, staff (hidden in the public view), ratings, 5 levels, rate, score, negatives. */
    const vals = [total.ratings, ...total.columns, pct(total.rate), fixed(total.score), total.negatives];
    vals.forEach((v, i) => (tds[i + 2].textContent = String(v)));
    updated.textContent = clock(Date.now());
  };
  const upsert = (r, flash) => {
    const key = r.hall + "/" + r.window;
    byKey.set(key, r);
    const fresh = render(r, flash);
    const old = tbody.querySelector('tr[data-key="' + CSS.escape(key) + '"]');
    if (old) { old.replaceWith(fresh); return; }
    const after = [...tbody.children].find((tr) => tr.dataset.key > key);
    tbody.insertBefore(fresh, after || null);
  };
  /* Negative-rating cases still to handle (logged-in users; 401/403 hides the alert). */
  const alertBox = document.getElementById("case-alert");
  let newestCase = null;
  const fill = (tpl, vals) => tpl.replace(/\{(\w+)\}/g, (_, k) => String(vals[k]));
  const pollCases = async () => {
    try {
      const resp = await fetch("/api/cases/summary", { credentials: "same-origin" });
      if (!resp.ok) { alertBox.hidden = true; return; } /* e.g. the login expired */
      const s = await resp.json();
      alertBox.hidden = s.unclosed === 0;
      alertBox.querySelector(".count").textContent = fill(text("case_alert"), { n: s.unclosed });
      alertBox.querySelector(".overdue").textContent = s.overdue ? fill(text("case_alert_overdue"), { n: s.overdue }) : "";
      const n = s.newest;
      alertBox.querySelector(".newest").textContent = n ? fill(text("case_alert_newest"), { window: n.window, time: clock(Date.parse(n.rating_ts)) }) : "";
      if (n && newestCase !== null && n.id !== newestCase) alertBox.classList.add("new");
      if (n) newestCase = n.id;
    } catch (e) { /* offline: keep what is shown */ }
  };
  /* Only for a logged-in browser (the CSRF cookie is readable, the session cookie is not). */
  if (alertBox && /(^|; )wr_csrf=/.test(document.cookie)) { pollCases(); setInterval(pollCases, 5000); }
  document.body.classList.add("js");
  connect("/api/live/stream", {
    snapshot: (snap) => {
      byKey.clear();
      tbody.replaceChildren(...snap.rows.map((r) => { byKey.set(r.hall + "/" + r.window, r); return render(r, isFresh(r)); }));
      document.getElementById("date").textContent = snap.date;
      document.body.classList.toggle("public", snap.rows.every((r) => r.staff === null));
      refreshTotals();
    },
    window: (msg) => {
      upsert(msg.row, Boolean(msg.rating && msg.rating.negative) || isFresh(msg.row));
      refreshTotals();
      document.body.dataset.lastRating = msg.rating ? msg.rating.id : "";
    },
  }, document.getElementById("live-state"));
})();
