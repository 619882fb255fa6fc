fetch("/api/hello")
  .then((r) => r.json())
  .then((j) => { document.getElementById("api").textContent = JSON.stringify(j.server); })
  .catch(() => { document.getElementById("api").textContent = "no backend running (cargo run --example backend -- --port 5000)"; });
