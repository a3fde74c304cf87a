// Case page actions: POST the chosen action with the note, then reload (case id on <main>).
(function () {
  "use strict";
  function csrf() {
    const m = document.cookie.match(/(?:^|; )wr_csrf=([^;]*)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  const caseId = document.querySelector("main").dataset.caseId;
  document.querySelectorAll("section.actions button").forEach((btn) => {
    btn.addEventListener("click", async () => {
      const note = document.getElementById("note").value;
      const a = btn.dataset.action;
      let body;
      if (a === "transition") body = {to: btn.dataset.to, note: note};
      else if (a === "appeal") body = {kind: btn.dataset.kind, reason: note};
      else if (a === "decision") body = {approve: btn.dataset.approve === "true", note: note};
      else body = {note: note};
      const resp = await fetch("/api/cases/" + encodeURIComponent(caseId) + "/" + a, {
        method: "POST",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf()},
        body: JSON.stringify(body),
      });
      if (resp.ok) { location.reload(); return; }
      let detail = String(resp.status);
      try { const j = await resp.json(); detail = j.detail ? JSON.stringify(j.detail) : detail; } catch (e) {}
      document.getElementById("action-error").textContent = detail;
    });
  });
})();
