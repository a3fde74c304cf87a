// Login form of the case pages: POST the credentials, reload on success (message on the form).
(function () {
  "use strict";
  const form = document.getElementById("login");
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const resp = await fetch("/api/auth/login", {
      method: "POST", headers: {"Content-Type": "application/json"},
      body: JSON.stringify({username: form.username.value, password: form.password.value}),
    });
    if (resp.ok) { location.reload(); }
    else { document.getElementById("login-error").textContent = form.dataset.failed + " (" + resp.status + ")"; }
  });
})();
