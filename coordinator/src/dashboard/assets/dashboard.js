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
