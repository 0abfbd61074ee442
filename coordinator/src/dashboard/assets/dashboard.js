// The dashboard's one script: first-party, loaded from /static/ (the Content-Security-Policy
// allows no inline script). Every page works without it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  // Times are written in UTC by the server; show them in the reader's own time zone, and
  // keep the UTC form as the tooltip.
  for (const t of document.querySelectorAll("time[datetime]")) {
    const when = new Date(t.getAttribute("datetime"));
    if (!Number.isNaN(when.getTime())) {
      t.title = t.textContent;
      t.textContent = when.toLocaleString();
    }
  }
});

// Live regions: an element marked data-live="URL" follows that server-sent event stream; each
// event carries {id, html, last} and replaces the content of the element with that id (HTML the
// server rendered and escaped). The region is marked stale while the stream is down.
document.addEventListener("DOMContentLoaded", () => {
  for (const region of document.querySelectorAll("[data-live]")) {
    const source = new EventSource(region.dataset.live);
    source.onmessage = (e) => {
      const update = JSON.parse(e.data);
      const target = document.getElementById(update.id);
      if (target) {
        target.innerHTML = update.html;
      }
      region.classList.remove("stale");
      if (update.last) {
        source.close();
        // The figures were drawn when the page loaded: draw them again with the final data.
        for (const img of document.querySelectorAll("img[data-refresh]")) {
          img.src = img.src.split("?")[0] + "?at=" + Date.now();
        }
      }
    };
    source.onerror = () => region.classList.add("stale");
  }
});
