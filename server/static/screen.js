/* The public big screen: each window's stars and figures; no staff, no tickets. */
"use strict";
(function () {
  const { text, pct, el, connect } = window.WR;
  const tiles = document.getElementById("tiles");
  const byKey = new Map();
  const starText = (stars) => {
    const full = stars === null ? 0 : Math.round(stars);
    return [el("span", { text: "★".repeat(full) }), el("span", { class: "off", text: "★".repeat(5 - full) })];
  };
  const tile = (r) => el("article", { class: "tile " + r.state, "data-key": r.hall + "/" + r.window }, [
    el("div", { class: "name", text: r.name || r.window }),
    el("div", { class: "stars", title: r.stars === null ? "–" : String(r.stars) }, starText(r.stars)),
    el("div", { class: "figures", text: text("ratings") + " " + r.ratings + " · " + text("satisfaction_rate") + " " + pct(r.satisfaction_rate) }),
  ]);
  const draw = () => {
    const rows = [...byKey.values()];
    tiles.replaceChildren(...rows.map(tile));
    document.getElementById("empty").hidden = rows.length > 0;
  };
  connect("/api/live/stream?view=public", {
    snapshot: (snap) => {
      byKey.clear();
      snap.rows.forEach((r) => byKey.set(r.hall + "/" + r.window, r));
      document.getElementById("date").textContent = snap.date;
      draw();
    },
    window: (msg) => { byKey.set(msg.row.hall + "/" + msg.row.window, msg.row); draw(); },
  }, document.getElementById("live-state"));
})();
