/*
 * The job page keeps itself current by polling the JSON API (GET /api/v1/jobs/<id> about once a
 * second) until the job reaches a terminal state. No framework and no build step: the server renders
 * the first state, this script updates the same elements in place. Everything from the server goes in
 * through textContent/attributes, never innerHTML, so job data can never become markup.
 */
(function () {
  "use strict";

  var root = document.getElementById("job");
  if (!root) return;

  var TERMINAL = ["succeeded", "failed", "canceled"];
  var POLL_MS = 1000;
  var HIDDEN_POLL_MS = 5000;      // a background tab does not need one request a second
  var METRICS_EVERY_MS = 2000;
  var EVENTS_EVERY_MS = 2000;
  var WORKERS_EVERY_MS = 5000;
  var SVG_NS = "http://www.w3.org/2000/svg";

  var jobUrl = root.getAttribute("data-job-url");
  var workersUrl = root.getAttribute("data-workers-url");
  var job = JSON.parse(document.getElementById("job-data").textContent);
  var failures = 0;
  var lastMetricsAt = 0, lastMetricsKey = null;
  var lastEventsAt = 0, lastEventsKey = null;
  var lastWorkersAt = 0;
  var outputsKey = null;
  var hiddenSeries = {};
  var baseTitle = document.title;

  function $(id) { return document.getElementById(id); }
  function isTerminal(status) { return TERMINAL.indexOf(status) >= 0; }

  function getJSON(url) {
    return fetch(url, { headers: { Accept: "application/json" }, cache: "no-store", credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      });
  }

  // The API's times are ISO 8601 in UTC ending with "Z" (events included); microseconds are cut to
  // the milliseconds every browser parses.
  function parseTime(s) {
    if (!s) return null;
    var t = String(s).replace(/(\.\d{3})\d+/, "$1");
    var d = new Date(t);
    return isNaN(d.getTime()) ? null : d;
  }

  function fmtDuration(seconds) {
    var s = Math.max(0, Math.round(seconds));
    if (s < 60) return s + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }

  function fmtNumber(v) {
    if (typeof v !== "number") return String(v);
    if (v === 0) return "0";
    var a = Math.abs(v);
    if (a >= 1e5 || a < 1e-3) return v.toExponential(3);
    return String(Math.round(v * 1e4) / 1e4);
  }

  // Same wording as the server's progress_text filter (web/pages.py).
  function progressText(j) {
    var step = j.step || 0, total = j.total_steps || 0;
    var of = total ? "step " + step + " of " + total : "step " + step;
    switch (j.status) {
      case "queued":
        return total ? "Queued, waiting for a worker (" + total + " steps)" : "Queued, waiting for a worker";
      case "running": return step ? of : "Starting… (" + of + ")";
      case "succeeded": return "Done: " + of;
      case "canceled": return "Canceled at " + of;
      default: return "Failed at " + of;
    }
  }

  // -- rendering the job --------------------------------------------------------------------------
  function renderStatus(j) {
    var badge = $("job-status");
    badge.textContent = j.status;
    badge.className = "badge status-" + j.status;
    root.setAttribute("data-status", j.status);
  }

  function renderProgress(j) {
    var bar = $("job-progress");
    var p = Math.max(0, Math.min(1, j.progress || 0));
    bar.value = p;
    bar.textContent = Math.round(p * 100) + "%";
    $("job-percent").textContent = Math.round(p * 100) + "%";
    // The tab title tells how far along a job in a background tab is.
    document.title = (j.status === "running" ? Math.round(p * 100) + "%" : j.status) + " · " + baseTitle;
    var text = progressText(j);
    var el = $("job-progress-text");
    if (el.textContent !== text) el.textContent = text;

    var eta = "";
    var started = parseTime(j.started_at);
    if (j.status === "running" && started && p > 0.02) {
      var elapsed = (Date.now() - started.getTime()) / 1000;
      if (elapsed > 0) eta = "about " + fmtDuration(elapsed * (1 - p) / p) + " left";
    } else if (isTerminal(j.status) && started && j.finished_at) {
      var end = parseTime(j.finished_at);
      if (end) $("job-ran").textContent = "· ran for " + fmtDuration((end - started) / 1000);
    }
    $("job-eta").textContent = eta;
  }

  function renderCancel(j) {
    var form = $("job-cancel");
    form.hidden = isTerminal(j.status);
    var button = form.querySelector("button");
    if (j.cancel_requested && !isTerminal(j.status)) {
      button.disabled = true;
      button.textContent = "Stopping…";
    }
  }

  function renderNotices(j) {
    var box = $("job-notices");
    var notices = j.notices || [];
    var key = JSON.stringify(notices);
    if (box.getAttribute("data-key") === key) return;
    box.setAttribute("data-key", key);
    box.replaceChildren();
    notices.forEach(function (n) {
      var p = document.createElement("p");
      p.className = "notice";
      p.textContent = typeof n === "string" ? n : (n.message || JSON.stringify(n));
      box.appendChild(p);
    });
    box.hidden = notices.length === 0;
  }

  function renderError(j) {
    var box = $("job-error");
    box.hidden = !j.error;
    $("job-error-text").textContent = j.error || "";
  }

  function isImage(o) { return String(o.content_type || "").indexOf("image/") === 0; }

  function renderOutputs(j) {
    var outputs = j.outputs || [];
    var key = JSON.stringify(outputs.map(function (o) { return [o.name, o.size, o.sha256]; }));
    if (key === outputsKey) return;
    outputsKey = key;
    var box = $("job-outputs");
    box.replaceChildren();
    var files = document.createElement("ul");
    files.className = "files";
    outputs.forEach(function (o) {
      var download = o.url + (o.url.indexOf("?") >= 0 ? "&" : "?") + "download=1";
      if (isImage(o)) {
        var wrap = document.createElement("div");
        wrap.className = "output";
        var link = document.createElement("a");
        link.href = o.url;
        var img = document.createElement("img");
        img.className = "result-img";
        img.alt = "Result " + o.name;
        img.src = o.url + (o.sha256 ? (o.url.indexOf("?") >= 0 ? "&" : "?") + "v=" + o.sha256.slice(0, 12) : "");
        link.appendChild(img);
        var button = document.createElement("a");
        button.className = "button primary download";
        button.href = download;
        button.setAttribute("download", o.name);
        button.textContent = "Download " + o.name;
        wrap.appendChild(link);
        wrap.appendChild(button);
        box.appendChild(wrap);
      } else {
        var li = document.createElement("li");
        var a = document.createElement("a");
        a.href = download;
        a.setAttribute("download", o.name);
        a.textContent = o.name;
        li.appendChild(a);
        files.appendChild(li);
      }
    });
    if (files.children.length) box.appendChild(files);
    $("job-result").hidden = outputs.length === 0;
  }

  function renderPreview(j) {
    var hasImageOutput = (j.outputs || []).some(isImage);
    var fig = $("job-preview");
    var img = $("job-preview-img");
    if (!j.preview_url || hasImageOutput) {
      fig.hidden = true;
      return;
    }
    if (img.getAttribute("src") !== j.preview_url) {
      // Load off-screen first so the visible image never flashes empty between previews.
      var next = new Image();
      next.onload = function () {
        img.src = j.preview_url;
        fig.hidden = false;
        $("job-preview-caption").textContent = "Newest preview, step " + j.preview_step;
      };
      next.src = j.preview_url;
    } else {
      fig.hidden = false;
    }
  }

  function renderMetricsTable(latest) {
    var dl = $("job-metrics");
    dl.replaceChildren();
    Object.keys(latest || {}).forEach(function (name) {
      var v = latest[name];
      if (v !== null && typeof v === "object") return;
      var div = document.createElement("div");
      var dt = document.createElement("dt");
      dt.textContent = name;
      var dd = document.createElement("dd");
      dd.textContent = fmtNumber(v);
      div.appendChild(dt);
      div.appendChild(dd);
      dl.appendChild(div);
    });
  }

  function renderModel(j) {
    var urls = j.urls || {};
    $("job-model").hidden = !urls.translate;
    if (urls.translate) {
      $("job-model-translate").href = urls.translate;
      $("job-model-download").href = urls.model_download;
    }
  }

  function render(j) {
    job = j;
    renderStatus(j);
    renderProgress(j);
    renderCancel(j);
    renderNotices(j);
    renderError(j);
    renderOutputs(j);
    renderPreview(j);
    renderModel(j);
    if (j.status !== "queued") $("job-hint").hidden = true;
  }

  // -- the loss plot: inline SVG, one polyline per series, log-scale y -----------------------------
  function svg(tag, attrs, parent) {
    var el = document.createElementNS(SVG_NS, tag);
    Object.keys(attrs || {}).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(el);
    return el;
  }

  // Tick labels for k·10^e: plain numbers near 1, "2e-5" style beyond.
  function tickLabel(k, e) {
    if (e >= -2 && e <= 3) return String(+(k * Math.pow(10, e)).toPrecision(3));
    return k + "e" + e;
  }

  function drawPlot(series) {
    var box = $("loss-plot");
    var names = Object.keys(series || {}).filter(function (n) { return (series[n] || []).length > 0; });
    var W = 720, H = 280, L = 58, R = 16, T = 14, B = 34;
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    names.forEach(function (n) {
      if (hiddenSeries[n]) return;
      series[n].forEach(function (pt) {
        if (!(pt[1] > 0) || !isFinite(pt[1])) return;   // a log axis has no place for 0 or below
        xmin = Math.min(xmin, pt[0]); xmax = Math.max(xmax, pt[0]);
        ymin = Math.min(ymin, pt[1]); ymax = Math.max(ymax, pt[1]);
      });
    });
    renderLegend(names);
    if (!isFinite(xmin) || !isFinite(ymin)) {
      if (!names.length) {
        var p = document.createElement("p");
        p.className = "muted";
        p.textContent = "No measurements yet.";
        box.replaceChildren(p);
      }
      return;
    }
    if (xmax === xmin) xmax = xmin + 1;
    var lo = Math.floor(Math.log10(ymin)), hi = Math.ceil(Math.log10(ymax));
    if (hi === lo) hi = lo + 1;
    var x = function (v) { return L + (v - xmin) / (xmax - xmin) * (W - L - R); };
    var y = function (v) { return T + (hi - Math.log10(v)) / (hi - lo) * (H - T - B); };

    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "loss-svg", role: "img",
      "aria-label": "Loss curve (log scale) of " + names.join(", ") + " over steps " + xmin + " to " + xmax });
    var grid = svg("g", { class: "grid" }, chart);
    var stride = Math.max(1, Math.ceil((hi - lo) / 8));
    for (var e = lo; e <= hi; e += stride) {
      svg("line", { x1: L, x2: W - R, y1: y(Math.pow(10, e)), y2: y(Math.pow(10, e)) }, grid);
      var label = svg("text", { x: L - 6, y: y(Math.pow(10, e)) + 4, class: "tick", "text-anchor": "end" }, grid);
      label.textContent = tickLabel(1, e);
      // A curve within one or two decades needs a few more marks to be read.
      if (hi - lo <= 2 && e < hi) {
        [2, 5].forEach(function (k) {
          var v = k * Math.pow(10, e);
          svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "minor" }, grid);
          var minor = svg("text", { x: L - 6, y: y(v) + 4, class: "tick", "text-anchor": "end" }, grid);
          minor.textContent = tickLabel(k, e);
        });
      }
    }
    [xmin, Math.round((xmin + xmax) / 2), xmax].forEach(function (v, i) {
      var anchor = i === 0 ? "start" : i === 2 ? "end" : "middle";
      var t = svg("text", { x: x(v), y: H - 12, class: "tick", "text-anchor": anchor }, grid);
      t.textContent = String(v);
    });
    var xl = svg("text", { x: (L + W - R) / 2, y: H - 1, class: "axis-label", "text-anchor": "middle" }, grid);
    xl.textContent = "step";
    svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }, chart);

    names.forEach(function (n, i) {
      if (hiddenSeries[n]) return;
      var pts = [];
      series[n].forEach(function (pt) {
        if (pt[1] > 0 && isFinite(pt[1])) pts.push(x(pt[0]).toFixed(1) + "," + y(pt[1]).toFixed(1));
      });
      if (!pts.length) return;
      var line = svg("polyline", { points: pts.join(" "), class: "series s" + (i % 8), "data-series": n }, chart);
      var title = svg("title", {}, line);
      title.textContent = n;
    });
    box.replaceChildren(chart);
  }

  function renderLegend(names) {
    var ul = $("loss-legend");
    var key = names.join("\u0000") + "|" + Object.keys(hiddenSeries).join(",");
    if (ul.getAttribute("data-key") === key) return;
    ul.setAttribute("data-key", key);
    ul.replaceChildren();
    names.forEach(function (n, i) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "legend-item s" + (i % 8);
      b.setAttribute("aria-pressed", hiddenSeries[n] ? "false" : "true");
      var sw = document.createElement("span");
      sw.className = "swatch";
      b.appendChild(sw);
      b.appendChild(document.createTextNode(n));
      b.addEventListener("click", function () {
        if (hiddenSeries[n]) delete hiddenSeries[n]; else hiddenSeries[n] = true;
        refreshMetrics(true);
      });
      li.appendChild(b);
      ul.appendChild(li);
    });
  }

  var lastSeries = null;
  function refreshMetrics(redrawOnly) {
    if (redrawOnly && lastSeries) { drawPlot(lastSeries); return Promise.resolve(); }
    var url = $("loss-plot").getAttribute("data-metrics-url");
    return getJSON(url).then(function (m) {
      lastSeries = m.series || {};
      drawPlot(lastSeries);
      renderMetricsTable(m.latest || job.metrics);
    }).catch(function () { /* the next poll tries again */ });
  }

  // -- the event log ------------------------------------------------------------------------------
  function refreshEvents() {
    var ol = $("job-events");
    return getJSON(ol.getAttribute("data-events-url")).then(function (data) {
      var events = data.events || [];
      var key = events.length + ":" + (events.length ? events[events.length - 1].at : "");
      if (ol.getAttribute("data-key") === key) return;
      ol.setAttribute("data-key", key);
      // Follow new lines, unless the reader has scrolled up to look at older ones.
      var following = ol.scrollHeight - ol.scrollTop - ol.clientHeight < 24;
      ol.replaceChildren();
      if (!events.length) {
        var empty = document.createElement("li");
        empty.className = "muted empty";
        empty.textContent = "Nothing yet.";
        ol.appendChild(empty);
      }
      events.forEach(function (e) {
        var li = document.createElement("li");
        li.className = "level-" + String(e.level || "info").replace(/[^a-z]/gi, "");
        var t = document.createElement("time");
        var d = parseTime(e.at);
        t.textContent = d ? d.toLocaleTimeString() : String(e.at || "");
        if (d) t.setAttribute("datetime", d.toISOString());
        var span = document.createElement("span");
        span.textContent = e.message;
        li.appendChild(t);
        li.appendChild(document.createTextNode(" "));
        li.appendChild(span);
        ol.appendChild(li);
      });
      if (following) ol.scrollTop = ol.scrollHeight;
    }).catch(function () {});
  }

  // -- a queued job with nobody to run it says so -------------------------------------------------
  function checkWorkers() {
    if (!workersUrl) return;
    getJSON(workersUrl).then(function (data) {
      var live = (data.workers || []).filter(function (w) { return w.state === "online" || w.state === "busy"; });
      var hint = $("job-hint");
      if (job.status === "queued" && live.length === 0) {
        hint.textContent = "No worker is online, so this job waits in the queue. " +
          "Start one with “atelier worker”, or run “atelier up”.";
        hint.hidden = false;
      } else if (job.status === "queued" && live.length) {
        hint.textContent = live.length + " worker" + (live.length > 1 ? "s" : "") +
          " online; the job starts when one is free.";
        hint.hidden = false;
      } else {
        hint.hidden = true;
      }
    }).catch(function () {});
  }

  // -- polling ------------------------------------------------------------------------------------
  function sideFetches(force) {
    var now = Date.now();
    var key = job.status + ":" + job.step + ":" + job.updated_at;
    var jobs = [];
    if (force || (key !== lastMetricsKey && now - lastMetricsAt >= METRICS_EVERY_MS)) {
      lastMetricsKey = key; lastMetricsAt = now;
      jobs.push(refreshMetrics(false));
    }
    if (force || (key !== lastEventsKey && now - lastEventsAt >= EVENTS_EVERY_MS)) {
      lastEventsKey = key; lastEventsAt = now;
      jobs.push(refreshEvents());
    }
    if (job.status === "queued" && now - lastWorkersAt >= WORKERS_EVERY_MS) {
      lastWorkersAt = now;
      checkWorkers();
    }
    return Promise.all(jobs);
  }

  function schedule() {
    var base = document.hidden ? HIDDEN_POLL_MS : POLL_MS;
    var delay = Math.min(15000, base * Math.pow(2, Math.min(failures, 4)));
    window.setTimeout(tick, delay);
  }

  function tick() {
    getJSON(jobUrl).then(function (j) {
      failures = 0;
      var wasTerminal = isTerminal(job.status);
      render(j);
      if (isTerminal(j.status)) {
        if (!wasTerminal) root.setAttribute("data-finished", "1");
        sideFetches(true);   // the final curve and log, then stop
        return;
      }
      sideFetches(false);
      schedule();
    }).catch(function () {
      failures += 1;
      schedule();
    });
  }

  // Cancel through the API and stay on the page; without JavaScript the form posts to the page route.
  $("job-cancel").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var form = ev.currentTarget;
    var button = form.querySelector("button");
    button.disabled = true;
    button.textContent = "Stopping…";
    var options = { method: "POST", headers: { Accept: "application/json" }, credentials: "same-origin" };
    fetch(form.getAttribute("data-api"), options)
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (j) { if (j) render(j); })
      .catch(function () { button.disabled = false; button.textContent = "Cancel job"; });
  });

  render(job);
  sideFetches(true);
  if (job.status === "queued") { lastWorkersAt = Date.now(); checkWorkers(); }
  if (!isTerminal(job.status)) schedule();
})();
