/*
 * Relative times ("just now", "3 min ago") that stay true while the page is open: every
 * <time data-relative datetime="ISO"> is rewritten from its ISO timestamp every 15 seconds, in the
 * wording of the server's "ago" filter (web/pages.py), so the first render and the updates agree.
 */
(function () {
  "use strict";

  function ago(ms) {
    var secs = Math.max(0, ms / 1000);
    if (secs < 5) return "just now";
    if (secs < 60) return Math.floor(secs) + " s ago";
    if (secs < 3600) return Math.floor(secs / 60) + " min ago";
    if (secs < 86400) return Math.floor(secs / 3600) + " h ago";
    var days = Math.floor(secs / 86400);
    return days + " day" + (days !== 1 ? "s" : "") + " ago";
  }

  function refresh() {
    var now = Date.now();
    Array.prototype.forEach.call(document.querySelectorAll("time[data-relative][datetime]"), function (t) {
      var when = Date.parse(t.getAttribute("datetime"));
      if (isNaN(when)) return;
      var text = ago(now - when);
      if (t.textContent !== text) t.textContent = text;
    });
  }

  window.atelierRelativeTimes = refresh;
  refresh();
  window.setInterval(refresh, 15000);
})();
