// Export page: start an export job, poll its progress, then link the file and manifest.
(function () {
  "use strict";
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const csrf = () => (document.cookie.split("; ").find(c => c.startsWith("wr_csrf=")) || "=").split("=")[1];
  const $ = id => document.getElementById(id);
  async function poll(id) {
    const r = await fetch(`/api/exports/${id}`);
    const job = await r.json();
    $("bar").value = job.progress;
    $("label").textContent = `${job.done_days}/${job.total_days} ${T.days}`;
    if (job.state === "done") {
      $("label").textContent += ` · ${T.done} · ${job.rows} ${T.rows} · sha256 ${job.sha256.slice(0, 12)}…`;
      $("file").href = `/api/exports/${id}/file`;
      $("manifest").href = `/api/exports/${id}/manifest`;
      $("links").hidden = false;
      $("start").disabled = false;
    } else if (job.state === "failed") {
      $("error").textContent = `${T.failed}: ${job.error}`;
      $("error").hidden = false;
      $("start").disabled = false;
    } else {
      setTimeout(() => poll(id), 500);
    }
  }
  $("form").addEventListener("submit", async ev => {
    ev.preventDefault();
    $("status").hidden = false; $("links").hidden = true; $("error").hidden = true;
    $("start").disabled = true;
    const body = {from: $("from").value, to: $("to").value, level: $("level").value,
                  format: $("format").value, hall: $("hall").value || null, lang: T.lang};
    const r = await fetch("/api/exports", {method: "POST", headers: {"Content-Type": "application/json",
                          "X-CSRF-Token": csrf()}, body: JSON.stringify(body)});
    if (r.status === 401) { $("error").textContent = T.login; $("error").hidden = false; $("start").disabled = false; return; }
    const job = await r.json();
    if (!r.ok) { $("error").textContent = JSON.stringify(job.detail); $("error").hidden = false; $("start").disabled = false; return; }
    poll(job.id);
  });
})();
