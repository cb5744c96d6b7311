// Tidings console: times in the viewer's zone, copy buttons, confirmations, live tables.
"use strict";

function localTimes(root) {
  for (const el of root.querySelectorAll("time[datetime]")) {
    const t = new Date(el.getAttribute("datetime"));
    if (!isNaN(t)) {
      el.textContent = t.toLocaleString(undefined, {
        year: "numeric", month: "short", day: "numeric",
        hour: "2-digit", minute: "2-digit", second: "2-digit",
      });
    }
  }
}

function copyButtons(root) {
  for (const b of root.querySelectorAll("button[data-copy]")) {
    b.addEventListener("click", async () => {
      const source = document.getElementById(b.dataset.copy);
      if (!source) return;
      try {
        await navigator.clipboard.writeText(source.textContent.trim());
        b.textContent = "Copied";
      } catch {
        const range = document.createRange();
        range.selectNodeContents(source);
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        b.textContent = "Selected: press Ctrl+C";
      }
      setTimeout(() => { b.textContent = "Copy"; }, 2000);
    });
  }
}

function confirmations(root) {
  for (const b of root.querySelectorAll("button[data-confirm]")) {
    b.form.addEventListener("submit", (e) => {
      if (e.submitter === b && !window.confirm(b.dataset.confirm)) e.preventDefault();
    });
  }
}

// A table whose body names a `data-live` URL is refreshed from it every few seconds.
function liveTables() {
  for (const body of document.querySelectorAll("tbody[data-live]")) {
    const url = body.dataset.live;
    let last = body.innerHTML;
    const tick = async () => {
      if (document.hidden) return;
      try {
        const r = await fetch(url, { credentials: "same-origin", redirect: "manual" });
        if (r.status !== 200) {
          if (r.type === "opaqueredirect" || r.status === 401) window.location.reload();
          return;
        }
        const html = await r.text();
        if (html !== last) {
          last = html;
          body.innerHTML = html;
          localTimes(body);
        }
      } catch {
        // The server is away for a moment; the next tick tries again.
      }
    };
    setInterval(tick, 2000);
  }
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  copyButtons(document);
  confirmations(document);
  liveTables();
});
