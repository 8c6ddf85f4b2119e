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

    // The ETA is the server's: the rate over recent steps, warm-up excluded and smoothed
    // (core.estimates.RateMeter), so it does not start at several times the truth. A queued job shows its
    // place in the queue and when it should start.
    var eta = "";
    var started = parseTime(j.started_at);
    if (j.status === "running" && typeof j.eta_seconds === "number") {
      eta = "about " + fmtDuration(Math.max(1, j.eta_seconds)) + " left";
    } else if (j.status === "queued" && j.queue_position) {
      eta = "· number " + j.queue_position + " in the queue";
      var start = parseTime(j.estimated_start_at);
      if (start) {
        var wait = (start.getTime() - Date.now()) / 1000;
        eta += wait > 30 ? ", starts in about " + fmtDuration(wait) : ", starts soon";
      }
    } else if (isTerminal(j.status) && started && j.finished_at) {
      var end = parseTime(j.finished_at);
      if (end) $("job-ran").textContent = "· ran for " + fmtDuration((end - started) / 1000);
    }
    $("job-eta").textContent = eta;
  }

  function renderCancel(j) {
    var form = $("job-cancel");
    form.hidden = isTerminal(j.status);
    // Run again / Retry / Delete appear as soon as the job ends (Retry for failed or canceled jobs).
    var actions = $("job-actions"), retry = $("job-retry");
    if (actions) actions.hidden = !isTerminal(j.status);
    if (retry) retry.hidden = !(j.status === "failed" || j.status === "canceled") || !!j.artifacts_removed_at;
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
    var all = $("job-download-all");
    if (all) all.parentNode.hidden = outputs.length < 2;
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

  // Latest values under their labels (web/labels.py); the model is a link by name, which only the server
  // knows, so once the server has rendered the model row it is kept as it is.
  function renderMetricsTable(latest) {
    var dl = $("job-metrics");
    if (!dl || dl.querySelector("a")) return;
    var units = LABELS.units || {};
    var rows = [];
    Object.keys(latest || {}).forEach(function (name) {
      var v = latest[name];
      if (v === null || v === "" || (typeof v === "object" && !Array.isArray(v))) return;
      if (name === "model_id" || (name.indexOf("final_") === 0 && latest[name.slice(6)] !== undefined)) return;
      var text = typeof v === "number" ? fmtNumber(v) + (units[name] ? " " + units[name] : "")
        : Array.isArray(v) ? (v.length === 2 && typeof v[0] === "number" ? v[0] + "×" + v[1] : v.join(", "))
        : typeof v === "boolean" ? (v ? "yes" : "no") : String(v);
      if (name === "weights" && typeof v === "string") text = v.toLowerCase() === "imagenet" ? "ImageNet" : v;
      var div = document.createElement("div");
      var dt = document.createElement("dt");
      dt.textContent = seriesLabel(name);
      var dd = document.createElement("dd");
      dd.textContent = text;
      div.appendChild(dt);
      div.appendChild(dd);
      rows.push(div);
    });
    if (!rows.length) return;
    dl.replaceChildren.apply(dl, rows);
    $("metrics-panel").hidden = false;
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
    renderCompare(j);
    if (j.status !== "queued") $("job-hint").hidden = true;
  }

  // -- before/after: side by side, or a slider that uncovers the result over its input -------------
  // The range input is the control (arrow keys, Home/End work as on any slider); the result image is
  // clipped to the share it sets. Pairs the server rendered are enhanced; a job that finishes while the
  // page is open gets its pair built here from the job's JSON.
  function enhanceCompare(fig) {
    if (fig.getAttribute("data-ready")) return;
    fig.setAttribute("data-ready", "1");
    var modes = fig.querySelector(".compare-modes");
    var side = fig.querySelector(".compare-side");
    var slider = fig.querySelector(".compare-slider");
    var range = slider.querySelector("input[type=range]");
    var after = slider.querySelector(".compare-after");
    var line = slider.querySelector(".compare-line");
    function apply() {
      var v = Math.max(0, Math.min(100, parseFloat(range.value) || 0));
      after.style.clipPath = "inset(0 0 0 " + v + "%)";   // the input left of the divider, the result right of it
      line.style.left = v + "%";
      range.setAttribute("aria-valuetext", "divider at " + Math.round(v) + "%: " + Math.round(100 - v) + "% of the result shown");
    }
    range.addEventListener("input", apply);
    modes.hidden = false;
    modes.querySelectorAll("button").forEach(function (b) {
      b.addEventListener("click", function () {
        var mode = b.getAttribute("data-mode");
        side.hidden = mode !== "side";
        slider.hidden = mode !== "slider";
        modes.querySelectorAll("button").forEach(function (o) {
          o.setAttribute("aria-pressed", o === b ? "true" : "false");
        });
        if (mode === "slider") apply();
      });
    });
    apply();
  }

  function el(tag, attrs, parent) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k]; else e.setAttribute(k, attrs[k]);
    });
    if (parent) parent.appendChild(e);
    return e;
  }

  function buildCompare(before, after, title) {
    var fig = el("figure", { class: "figure result compare", "data-compare": "" });
    var modes = el("div", { class: "compare-modes", role: "group", "aria-label": "How to compare " + title }, fig);
    modes.hidden = true;
    el("button", { type: "button", class: "button small", "data-mode": "side", "aria-pressed": "true", text: "Side by side" }, modes);
    el("button", { type: "button", class: "button small", "data-mode": "slider", "aria-pressed": "false", text: "Slider" }, modes);
    var side = el("div", { class: "compare-side" }, fig);
    [[before, "Before"], [after, "After"]].forEach(function (p) {
      var half = el("figure", { class: "compare-half" }, side);
      el("img", { src: p[0].url, alt: p[1] + ": " + p[0].name }, half);
      el("figcaption", { text: p[1] }, half);
    });
    var slider = el("div", { class: "compare-slider" }, fig);
    slider.hidden = true;
    var stage = el("div", { class: "compare-stage" }, slider);
    el("img", { class: "compare-before", src: before.url, alt: "Before: " + before.name }, stage);
    el("img", { class: "compare-after", src: after.url, alt: "After: " + after.name }, stage);
    el("span", { class: "compare-line", "aria-hidden": "true" }, stage);
    el("span", { class: "compare-tag before-tag", "aria-hidden": "true", text: "Before" }, stage);
    el("span", { class: "compare-tag after-tag", "aria-hidden": "true", text: "After" }, stage);
    var label = el("label", { class: "compare-range" }, slider);
    el("span", { text: "Divider" }, label);
    el("input", { type: "range", min: "0", max: "100", value: "50", step: "1",
                  "aria-label": "Divider between before (left) and after (right): " + title }, label);
    el("figcaption", { text: title + ": before and after" }, fig);
    return fig;
  }

  function renderCompare(j) {
    if (j.status !== "succeeded" || document.querySelector("[data-compare]")) return;
    var images = (j.outputs || []).filter(isImage);
    var inputs = j.inputs || [];
    var pairs = [];
    if (j.kind === "style_transfer") {
      var content = inputs.filter(function (i) { return i.role === "content"; })[0];
      var result = images.filter(function (o) { return o.name === "result.png"; })[0] || images[0];
      if (content && result) pairs.push([content, result, "Result"]);
    } else if (j.kind === "translate") {
      var sources = inputs.filter(function (i) { return i.role === "images"; });
      sources.forEach(function (s, k) { if (images[k]) pairs.push([s, images[k], images[k].name]); });
    }
    var at = $("job-result");
    pairs.forEach(function (p) {
      var fig = buildCompare(p[0], p[1], p[2]);
      at.parentNode.insertBefore(fig, at);
      enhanceCompare(fig);
    });
  }

  document.querySelectorAll("[data-compare]").forEach(enhanceCompare);

  // -- the loss plots: inline SVG, one small plot per group of terms, EMA smoothing, log-scale y ------
  // Labels and groups come from the server (web/labels.py) so the page and the plots use one wording.
  var LABELS = (function () {
    var el = $("job-labels");
    try { return el ? JSON.parse(el.textContent) : {}; } catch (e) { return {}; }
  })();
  var TABLE_ROWS = 40;           // the table view shows about this many steps, evenly spread
  var smoothing = 0.6;

  function seriesLabel(n) {
    var known = (LABELS.labels || {})[n];
    if (known) return known;
    var words = n.replace(/_/g, " ");
    return words.charAt(0).toUpperCase() + words.slice(1);
  }
  function seriesGroup(n) { return (LABELS.groups || {})[n] || "Other"; }

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

  // Exponential moving average with TensorBoard's debiasing, so the first points are not pulled to 0.
  function smooth(points, alpha) {
    if (!(alpha > 0)) return points;
    var out = [], last = 0, n = 0;
    points.forEach(function (pt) {
      if (!isFinite(pt[1])) return;
      n += 1;
      last = last * alpha + (1 - alpha) * pt[1];
      out.push([pt[0], last / (1 - Math.pow(alpha, n))]);
    });
    return out;
  }

  function groupsOf(series, names) {
    var groups = [], byName = {}, order = LABELS.order || [];
    names.forEach(function (n) {
      var g = seriesGroup(n);
      if (!byName[g]) { byName[g] = { title: g, names: [] }; groups.push(byName[g]); }
      byName[g].names.push(n);
    });
    function rank(g) { var i = order.indexOf(g.title); return i < 0 ? order.length : i; }
    return groups.sort(function (a, b) { return rank(a) - rank(b); });
  }

  function drawGroup(group, series, colourOf) {
    var W = 360, H = 200, L = 46, R = 10, T = 10, B = 28;
    var xmin = Infinity, xmax = -Infinity, ymin = Infinity, ymax = -Infinity;
    var shown = {};
    group.names.forEach(function (n) {
      if (hiddenSeries[n]) return;
      shown[n] = smooth(series[n], smoothing).filter(function (pt) { return pt[1] > 0 && isFinite(pt[1]); });
      shown[n].forEach(function (pt) {
        xmin = Math.min(xmin, pt[0]); xmax = Math.max(xmax, pt[0]);
        ymin = Math.min(ymin, pt[1]); ymax = Math.max(ymax, pt[1]);
      });
    });
    var fig = document.createElement("figure");
    fig.className = "plot";
    var cap = document.createElement("figcaption");
    cap.className = "plot-title";
    cap.textContent = group.title;
    fig.appendChild(cap);
    var legend = document.createElement("ul");
    legend.className = "legend";
    legend.setAttribute("aria-label", group.title + ": series (select to hide or show)");
    group.names.forEach(function (n) {
      var li = document.createElement("li");
      var b = document.createElement("button");
      b.type = "button";
      b.className = "legend-item s" + colourOf[n];
      b.setAttribute("aria-pressed", hiddenSeries[n] ? "false" : "true");
      b.setAttribute("data-series", n);
      var sw = document.createElement("span");
      sw.className = "swatch";
      b.appendChild(sw);
      var last = series[n].length ? series[n][series[n].length - 1][1] : null;
      b.appendChild(document.createTextNode(seriesLabel(n) + (last === null ? "" : " " + fmtNumber(last))));
      b.addEventListener("click", function () {
        if (hiddenSeries[n]) delete hiddenSeries[n]; else hiddenSeries[n] = true;
        refreshMetrics(true);
        var again = document.querySelector('.legend-item[data-series="' + n + '"]');
        if (again) again.focus();
      });
      li.appendChild(b);
      legend.appendChild(li);
    });
    if (!isFinite(xmin) || !isFinite(ymin)) {
      var p = document.createElement("p");
      p.className = "muted small";
      p.textContent = "Nothing to show on a log scale yet.";
      fig.appendChild(p);
      fig.appendChild(legend);
      return fig;
    }
    if (xmax === xmin) xmax = xmin + 1;
    var lo = Math.floor(Math.log10(ymin)), hi = Math.ceil(Math.log10(ymax));
    if (hi === lo) hi = lo + 1;
    var x = function (v) { return L + (v - xmin) / (xmax - xmin) * (W - L - R); };
    var y = function (v) { return T + (hi - Math.log10(v)) / (hi - lo) * (H - T - B); };
    var names = Object.keys(shown);
    var chart = svg("svg", { viewBox: "0 0 " + W + " " + H, class: "loss-svg", role: "img",
      "aria-label": group.title + " (log scale): " + names.map(seriesLabel).join(", ") + " over steps " + xmin + " to " + xmax });
    var grid = svg("g", { class: "grid" }, chart);
    var stride = Math.max(1, Math.ceil((hi - lo) / 4));
    for (var e = lo; e <= hi; e += stride) {
      svg("line", { x1: L, x2: W - R, y1: y(Math.pow(10, e)), y2: y(Math.pow(10, e)) }, grid);
      var label = svg("text", { x: L - 5, y: y(Math.pow(10, e)) + 4, class: "tick", "text-anchor": "end" }, grid);
      label.textContent = tickLabel(1, e);
      if (hi - lo <= 1 && e < hi) {   // within one decade a few more marks help reading
        [2, 5].forEach(function (k) {
          var v = k * Math.pow(10, e);
          svg("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), class: "minor" }, grid);
          var minor = svg("text", { x: L - 5, y: y(v) + 4, class: "tick", "text-anchor": "end" }, grid);
          minor.textContent = tickLabel(k, e);
        });
      }
    }
    [xmin, xmax].forEach(function (v, i) {
      var t = svg("text", { x: x(v), y: H - 10, class: "tick", "text-anchor": i === 0 ? "start" : "end" }, grid);
      t.textContent = String(v);
    });
    var xl = svg("text", { x: (L + W - R) / 2, y: H - 10, class: "axis-label", "text-anchor": "middle" }, grid);
    xl.textContent = "step";
    svg("rect", { x: L, y: T, width: W - L - R, height: H - T - B, class: "frame" }, chart);
    names.forEach(function (n) {
      var pts = shown[n].map(function (pt) { return x(pt[0]).toFixed(1) + "," + y(pt[1]).toFixed(1); });
      if (!pts.length) return;
      var line = svg("polyline", { points: pts.join(" "), class: "series s" + colourOf[n], "data-series": n }, chart);
      svg("title", {}, line).textContent = seriesLabel(n);
    });
    fig.insertBefore(chart, cap.nextSibling);
    fig.appendChild(legend);
    return fig;
  }

  function drawPlot(series) {
    var box = $("loss-plot");
    if (!box) return;
    var names = Object.keys(series || {}).filter(function (n) { return (series[n] || []).length > 0; });
    if (!names.length) {
      var p = document.createElement("p");
      p.className = "muted";
      p.textContent = isTerminal(job.status) ? "This job recorded no losses." : "No measurements yet.";
      box.replaceChildren(p);
      renderLossTable({}, []);
      return;
    }
    var colourOf = {};
    names.forEach(function (n, i) { colourOf[n] = i % 8; });
    var figs = groupsOf(series, names).map(function (g) { return drawGroup(g, series, colourOf); });
    box.replaceChildren.apply(box, figs);
    renderLossTable(series, names);
  }

  // The accessible alternative: the raw values at about TABLE_ROWS evenly spread steps.
  function renderLossTable(series, names) {
    var table = $("loss-table");
    if (!table) return;
    var caption = table.querySelector("caption");
    table.replaceChildren();
    if (caption) table.appendChild(caption);
    if (!names.length) return;
    var steps = {};
    names.forEach(function (n) { series[n].forEach(function (pt) { steps[pt[0]] = true; }); });
    var all = Object.keys(steps).map(Number).sort(function (a, b) { return a - b; });
    var every = Math.max(1, Math.ceil(all.length / TABLE_ROWS));
    var picked = all.filter(function (s, i) { return i % every === 0 || i === all.length - 1; });
    var values = {};
    names.forEach(function (n) {
      values[n] = {};
      series[n].forEach(function (pt) { values[n][pt[0]] = pt[1]; });
    });
    var thead = document.createElement("thead");
    var hr = document.createElement("tr");
    ["Step"].concat(names.map(seriesLabel)).forEach(function (h) {
      var th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      hr.appendChild(th);
    });
    thead.appendChild(hr);
    var tbody = document.createElement("tbody");
    picked.forEach(function (s) {
      var tr = document.createElement("tr");
      var th = document.createElement("th");
      th.scope = "row";
      th.textContent = String(s);
      tr.appendChild(th);
      names.forEach(function (n) {
        var td = document.createElement("td");
        td.textContent = values[n][s] === undefined ? "" : fmtNumber(values[n][s]);
        tr.appendChild(td);
      });
      tbody.appendChild(tr);
    });
    table.appendChild(thead);
    table.appendChild(tbody);
  }

  var lastSeries = null;
  function refreshMetrics(redrawOnly) {
    var box = $("loss-plot");
    if (redrawOnly && lastSeries) { drawPlot(lastSeries); return Promise.resolve(); }
    var url = box ? box.getAttribute("data-metrics-url") : root.getAttribute("data-job-url") + "/metrics";
    return getJSON(url).then(function (m) {
      lastSeries = m.series || {};
      drawPlot(lastSeries);
      renderMetricsTable(m.latest || job.metrics);
    }).catch(function () { /* the next poll tries again */ });
  }

  (function () {
    var slider = $("loss-smoothing");
    if (!slider) return;
    smoothing = parseFloat(slider.value) || 0;
    slider.addEventListener("input", function () {
      smoothing = Math.min(0.99, Math.max(0, parseFloat(slider.value) || 0));
      $("loss-smoothing-value").textContent = smoothing.toFixed(2);
      if (lastSeries) drawPlot(lastSeries);
    });
  })();

  // -- the event log ------------------------------------------------------------------------------
  // It follows the newest line unless the reader has scrolled up; then it stays put and offers a
  // "Jump to newest" button until the reader is back at the bottom.
  var eventsFollowing = true;

  function atBottom(el) { return el.scrollHeight - el.scrollTop - el.clientHeight < 24; }

  function toNewest() {
    var ol = $("job-events");
    ol.scrollTop = ol.scrollHeight;
    eventsFollowing = true;
    $("events-newest").hidden = true;
  }

  (function () {
    var ol = $("job-events");
    if (!ol) return;
    ol.addEventListener("scroll", function () {
      eventsFollowing = atBottom(ol);
      if (eventsFollowing) $("events-newest").hidden = true;
    }, { passive: true });
    $("events-newest").addEventListener("click", function () { toNewest(); ol.focus(); });
  })();

  function refreshEvents() {
    var ol = $("job-events");
    return getJSON(ol.getAttribute("data-events-url")).then(function (data) {
      var events = data.events || [];
      var key = events.length + ":" + (events.length ? events[events.length - 1].at : "");
      if (ol.getAttribute("data-key") === key) return;
      var grew = ol.hasAttribute("data-key");
      ol.setAttribute("data-key", key);
      var following = eventsFollowing || atBottom(ol);
      var keep = ol.scrollTop;
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
      if (following) {
        ol.scrollTop = ol.scrollHeight;
      } else {
        ol.scrollTop = keep;
        if (grew) $("events-newest").hidden = false;
      }
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

  // -- the event stream: GET <job>/stream replaces polling where EventSource works ------------------
  // status: the job is fetched once (outputs, times) and rendered; progress and preview update it in
  // place; metrics and log fetch the curve and the log (at most every 2 s); completed renders the
  // finished job and closes the stream. If the stream cannot be opened (no EventSource, 503 when the
  // server holds too many streams, a proxy that breaks it), the page polls as before. ?poll=1 forces it.
  var stream = null;

  function startStream() {
    if (!window.EventSource || /[?&]poll=1(&|$)/.test(window.location.search)) return false;
    var es;
    try { es = new EventSource(jobUrl + "/stream"); } catch (e) { return false; }
    stream = es;
    var opened = false, errors = 0, polling = false;
    var metricsDue = null, eventsDue = null;

    function later(fn, timer) {
      if (timer) return timer;
      return window.setTimeout(function () { fn(); }, 2000);
    }
    function data(ev) { try { return JSON.parse(ev.data); } catch (e) { return null; } }
    function merged(extra) {
      var j = {};
      Object.keys(job).forEach(function (k) { j[k] = job[k]; });
      Object.keys(extra || {}).forEach(function (k) { j[k] = extra[k]; });
      return j;
    }
    function fallBack() {
      es.close();
      stream = null;
      if (!polling && !isTerminal(job.status)) { polling = true; root.setAttribute("data-live", "poll"); schedule(); }
    }

    es.addEventListener("open", function () { opened = true; errors = 0; root.setAttribute("data-live", "stream"); });
    es.addEventListener("status", function (ev) {
      var d = data(ev);
      if (!d) return;
      render(merged(d));
      if (d.status === "queued") { lastWorkersAt = Date.now(); checkWorkers(); }
      getJSON(jobUrl).then(function (j) { if (!isTerminal(job.status)) render(j); }).catch(function () {});
      refreshDeliveries();
    });
    es.addEventListener("progress", function (ev) {
      var d = data(ev);
      if (d) render(merged(d));
    });
    es.addEventListener("preview", function (ev) {
      var d = data(ev);
      if (d) render(merged({ preview_url: d.url, preview_step: d.step }));
    });
    es.addEventListener("metrics", function () {
      metricsDue = later(function () { metricsDue = null; refreshMetrics(false); }, metricsDue);
    });
    es.addEventListener("log", function () {
      eventsDue = later(function () { eventsDue = null; refreshEvents(); }, eventsDue);
    });
    es.addEventListener("completed", function (ev) {
      es.close();
      stream = null;
      var j = data(ev);
      var wasTerminal = isTerminal(job.status);
      if (j) render(j);
      if (!wasTerminal) root.setAttribute("data-finished", "1");
      sideFetches(true);
      refreshDeliveries();
      window.setTimeout(refreshDeliveries, 3000);   // a retried delivery shows its outcome
    });
    es.addEventListener("error", function () {
      // CLOSED: refused (503, 404) or not an event stream; CONNECTING: EventSource retries on its own
      // (a stream that reached its time limit resumes with Last-Event-ID) unless it keeps failing.
      errors += 1;
      if (es.readyState === 2 || !opened || errors > 3) fallBack();
    });
    return true;
  }

  function refreshDeliveries() {
    var box = $("job-webhooks");
    if (!box) return;
    getJSON(box.getAttribute("data-webhooks-url")).then(function (data) {
      var tbody = $("job-deliveries");
      tbody.replaceChildren();
      (data.deliveries || []).forEach(function (d) {
        var tr = document.createElement("tr");
        var answer = (d.response_code || "") + (d.error && d.status !== "delivered" ? " " + d.error : "");
        [d.event, d.status, String(d.attempts), answer, d.created_at].forEach(function (text, i) {
          var td = document.createElement("td");
          td.textContent = text || "";
          if (i === 1) td.className = "delivery-" + String(d.status).replace(/[^a-z]/g, "");
          if (i >= 3) td.className = "mono";
          tr.appendChild(td);
        });
        tbody.appendChild(tr);
      });
    }).catch(function () {});
  }

  // -- copy buttons of the snippets -----------------------------------------------------------------
  Array.prototype.forEach.call(document.querySelectorAll("[data-copy]"), function (button) {
    button.addEventListener("click", function () {
      var source = $(button.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent;
      var done = function () {
        button.textContent = "Copied";
        window.setTimeout(function () { button.textContent = "Copy"; }, 1500);
      };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () { selectText(source); });
      } else {
        selectText(source);
      }
    });
  });

  function selectText(el) {
    var range = document.createRange();
    range.selectNodeContents(el);
    var sel = window.getSelection();
    sel.removeAllRanges();
    sel.addRange(range);
  }

  render(job);
  toNewest();   // the server rendered the log oldest first; a reader wants the newest line
  sideFetches(true);
  if (job.status === "queued") { lastWorkersAt = Date.now(); checkWorkers(); }
  if (!isTerminal(job.status) && !startStream()) schedule();
})();
