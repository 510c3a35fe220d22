// The siamid console's only script: plain JavaScript, no library, nothing fetched from
// elsewhere. Every text that came from the server or a file name is set with textContent,
// never as HTML.
"use strict";

function csrfToken() {
  const meta = document.querySelector('meta[name="csrf-token"]');
  return meta ? meta.content : "";
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function fmt(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

// Drop zones: files dropped on the zone become the file input's files.
function setupDropZones() {
  document.querySelectorAll("[data-drop-for]").forEach((zone) => {
    const input = document.getElementById(zone.dataset.dropFor);
    if (!input) return;
    const show = () => {
      const list = zone.querySelector(".chosen");
      if (!list) return;
      list.replaceChildren(...Array.from(input.files).map((f) => el("li", "", f.name)));
    };
    zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
    zone.addEventListener("dragleave", () => zone.classList.remove("over"));
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      zone.classList.remove("over");
      const transfer = new DataTransfer();
      const files = Array.from(e.dataTransfer.files).filter((f) => f.type.startsWith("image/"));
      (input.multiple ? files : files.slice(0, 1)).forEach((f) => transfer.items.add(f));
      input.files = transfer.files;
      input.dispatchEvent(new Event("change", { bubbles: true }));
    });
    input.addEventListener("change", show);
  });
}

// Pages that follow a job (an enrolment, a removal) poll its status until it ends.
function setupFollow() {
  const box = document.querySelector(".follow[data-status-url]");
  if (!box || box.dataset.finished === "yes") return;
  const tick = async () => {
    let body;
    try {
      const r = await fetch(box.dataset.statusUrl, { credentials: "same-origin" });
      if (r.status === 401) { window.location.reload(); return; }
      body = await r.json();
    } catch (err) {
      setTimeout(tick, 2000);
      return;
    }
    const job = body.job !== undefined ? body.job : body;
    if (job) {
      document.getElementById("job-status").textContent = job.status;
      document.getElementById("job-error").textContent = job.error || "";
      const result = document.getElementById("job-result");
      if (result && job.result) {
        result.textContent = `index version ${job.result.index_version}, ${job.result.vectors} vectors`;
      }
    }
    (body.photos || []).forEach((p) => {
      const row = box.querySelector(`tr[data-sha="${p.sha256}"]`);
      if (!row) return;
      row.querySelector(".outcome").textContent = p.outcome;
      row.querySelector(".detail").textContent = p.detail || "";
    });
    const finished = body.finished !== undefined ? body.finished : ["done", "failed"].includes(job.status);
    if (finished) {
      box.dataset.finished = "yes";
    } else {
      setTimeout(tick, 700);
    }
  };
  setTimeout(tick, 300);
}

// Identify: send the photo, then box and label every face on it and list its candidates.
function setupIdentify() {
  const input = document.getElementById("probe");
  const form = document.getElementById("identify-form");
  if (!input || !form) return;
  const error = document.getElementById("identify-error");
  const result = document.getElementById("identify-result");
  const frame = document.getElementById("probe-frame");
  const image = document.getElementById("probe-image");
  const list = document.getElementById("faces");
  let objectUrl = null;

  input.addEventListener("change", async () => {
    const file = input.files[0];
    if (!file) return;
    error.textContent = "";
    result.hidden = true;
    document.body.dataset.identify = "running";
    const data = new FormData();
    data.append("image", file, file.name);
    let body;
    try {
      const r = await fetch("/ui/identify", {
        method: "POST",
        body: data,
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrfToken() },
      });
      body = await r.json();
      if (!r.ok) throw new Error(body.detail || `HTTP ${r.status}`);
    } catch (err) {
      error.textContent = String(err.message || err);
      document.body.dataset.identify = "failed";
      return;
    }
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(file);
    image.onload = () => draw(body);
    image.src = objectUrl;
  });

  function draw(body) {
    frame.querySelectorAll(".box").forEach((b) => b.remove());
    list.replaceChildren();
    const w = image.naturalWidth, h = image.naturalHeight;
    body.faces.forEach((face, i) => {
      const known = face.decision === "match";
      const label = known ? face.identity : (face.decision === "unknown" ? "unknown" : face.decision);
      const [l, t, r, b] = face.box || [0, 0, w, h];
      const box = el("span", `box ${known ? "known" : "unknown"}`);
      box.style.left = `${(100 * l) / w}%`;
      box.style.top = `${(100 * t) / h}%`;
      box.style.width = `${(100 * (r - l)) / w}%`;
      box.style.height = `${(100 * (b - t)) / h}%`;
      const tag = el("span", "tag", `${i + 1}: ${label}`);
      box.appendChild(tag);
      frame.appendChild(box);

      const item = el("li", `face ${known ? "known" : "unknown"}`);
      const head = el("p", "face-head");
      head.appendChild(el("strong", "face-label", label));
      head.appendChild(el("span", "numbers",
        ` distance ${fmt(face.distance)} · threshold ${fmt(face.threshold)} (${face.threshold_source})`));
      item.appendChild(head);
      if (face.error) item.appendChild(el("p", "detail", face.error));
      if (face.candidates.length) {
        const cands = el("ul", "candidates");
        face.candidates.forEach((c) => {
          const li = el("li", c.distance <= face.threshold ? "within" : "beyond");
          const a = el("a");
          a.href = c.href;
          if (c.thumb) {
            const img = el("img");
            img.src = c.thumb;
            img.alt = "";
            img.width = 48;
            a.appendChild(img);
          }
          a.appendChild(el("span", "cand-name", c.identity));
          li.appendChild(a);
          li.appendChild(el("span", "numbers", ` ${fmt(c.distance)}`));
          cands.appendChild(li);
        });
        item.appendChild(cands);
      }
      list.appendChild(item);
    });
    result.hidden = false;
    document.body.dataset.identify = "done";
  }
}

document.addEventListener("DOMContentLoaded", () => {
  setupDropZones();
  setupFollow();
  setupIdentify();
});
