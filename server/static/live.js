/* WindowRate live pages: shared helpers (strings, formatting, the SSE connection). */
"use strict";
window.WR = (function () {
  const I18N = JSON.parse(document.getElementById("i18n").textContent);
  const text = (key) => I18N.text[key] || key;
  const pct = (x) => (x === null || x === undefined ? "–" : (x * 100).toFixed(1) + "%");
  const fixed = (x) => (x === null || x === undefined ? "–" : Number(x).toFixed(1));
  const clock = (ms) => new Date(ms).toLocaleTimeString(I18N.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
  const levelLabel = (scale, level) => I18N.level[scale + "-" + level] || String(level);
  const el = (tag, attrs, children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else if (k === "class") node.className = v;
      else node.setAttribute(k, v);
    }
    for (const c of children || []) node.appendChild(c);
    return node;
  };
  /* Totals of many rows from their per-scale level counts (same rules as the server). */
  const totals = (rows) => {
    let n = 0, sat = 0, idx = 0, neg = 0;
    const columns = [0, 0, 0, 0, 0];
    for (const r of rows) {
      for (const [key, c] of Object.entries(r.levels)) {
        const [s, lv] = key.split("-").map(Number);
        n += c;
        if ((s === 5 && lv >= 3) || (s !== 5 && lv >= 2)) sat += c;
        idx += ((lv - 1) / (s - 1)) * 100 * c;
        if ((s === 5 && lv <= 2) || (s !== 5 && lv === 1)) neg += c;
      }
      r.columns.forEach((c, i) => (columns[i] += c));
    }
    return { ratings: n, columns, negatives: neg, rate: n ? sat / n : null, score: n ? idx / n : null };
  };
  /* Open the SSE stream; handlers by event name; the status element shows the connection. */
  const connect = (url, handlers, statusEl) => {
    const source = new EventSource(url);
    source.onopen = () => { if (statusEl) { statusEl.textContent = text("live_connected"); statusEl.classList.add("up"); } };
    source.onerror = () => { if (statusEl) { statusEl.textContent = text("live_reconnecting"); statusEl.classList.remove("up"); } };
    for (const [name, fn] of Object.entries(handlers)) {
      source.addEventListener(name, (e) => fn(JSON.parse(e.data)));
    }
    return source;
  };
  return { I18N, text, pct, fixed, clock, levelLabel, el, totals, connect };
})();
