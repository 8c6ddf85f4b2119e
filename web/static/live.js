/*
 * Keeps server-rendered lists (jobs, workers) current without a second template in JavaScript: every
 * few seconds it fetches the same page again and swaps in the fresh copy of each region marked
 * data-live-interval. A jobs region refreshes only while it shows an unfinished job (data-active);
 * data-live-always refreshes regardless. Parsing with DOMParser never runs scripts, and the markup
 * comes from our own autoescaped templates.
 */
(function () {
  "use strict";

  var regions = Array.prototype.slice.call(document.querySelectorAll("[data-live-interval]"));
  if (!regions.length || !window.DOMParser) return;

  function wanted(el) {
    return el.hasAttribute("data-live-always") || el.querySelector("[data-active]") !== null;
  }

  function refresh() {
    var live = regions.filter(wanted);
    if (!live.length) return Promise.resolve(false);
    if (document.hidden) return Promise.resolve(true);
    var options = { headers: { Accept: "text/html" }, cache: "no-store", credentials: "same-origin" };
    return fetch(window.location.href, options)
      .then(function (r) { if (!r.ok) throw new Error("HTTP " + r.status); return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        live.forEach(function (el) {
          var fresh = doc.getElementById(el.id);
          if (fresh) el.replaceChildren.apply(el, Array.prototype.map.call(fresh.childNodes, function (n) {
            return document.importNode(n, true);
          }));
        });
        return true;
      })
      .catch(function () { return true; });
  }

  var interval = Math.max(1000, Math.min.apply(null, regions.map(function (el) {
    return parseInt(el.getAttribute("data-live-interval"), 10) || 3000;
  })));

  function loop() {
    refresh().then(function (again) { if (again) window.setTimeout(loop, interval); });
  }
  window.setTimeout(loop, interval);

  // Filter selects apply as soon as they change; the Filter button remains for keyboard and no-JS use.
  Array.prototype.forEach.call(document.querySelectorAll("select[data-autosubmit]"), function (sel) {
    sel.addEventListener("change", function () { if (sel.form) sel.form.submit(); });
  });
})();
