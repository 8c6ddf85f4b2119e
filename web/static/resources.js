/*
 * Models and datasets pages: upload/import forms post to the JSON API and show its answer in the page,
 * and the demo button registers the built-in dataset and starts a training job on it in one click.
 * The API may answer {"error", "field"}; anything else unexpected is reported in plain words.
 */
(function () {
  "use strict";

  function status(id, text, kind) {
    var el = document.getElementById(id);
    if (!el) return;
    el.textContent = text;
    el.className = "form-status " + (kind || "");
    el.hidden = !text;
  }

  function explain(resp, body) {
    // A routing 404/405 (no field named) means this server has no such endpoint yet.
    var missing = resp.status === 405 || (resp.status === 404 && !(body && body.field));
    if (missing) return "This server cannot do that yet (the API answered " + resp.status + ").";
    if (body && body.error) return body.error;
    if (resp.status === 413) return "The upload is too large.";
    return "The server answered " + resp.status + ".";
  }

  function send(url, options) {
    options.headers = Object.assign({ Accept: "application/json" }, options.headers || {});
    options.credentials = "same-origin";
    return fetch(url, options).then(function (resp) {
      return resp.text().then(function (text) {
        var body = null;
        try { body = text ? JSON.parse(text) : null; } catch (e) { body = null; }
        if (!resp.ok) throw new Error(explain(resp, body));
        return body || {};
      });
    });
  }

  // The multipart body the API expects. File inputs left empty are dropped (browsers send them as
  // nameless empty files). With data-options-json="NAME", every other field is packed into one JSON
  // object under NAME, empty ones left out so the server infers or defaults them.
  function formBody(form) {
    var data = new FormData();
    var packed = form.getAttribute("data-options-json");
    var options = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled || el.type === "submit" || el.type === "button") return;
      if (el.type === "file") {
        Array.prototype.forEach.call(el.files || [], function (f) {
          data.append(el.name, f, f.webkitRelativePath || f.name);
        });
        return;
      }
      if (/__present$/.test(el.name)) return;
      if (el.type === "checkbox") {
        if (packed) options[el.name] = el.checked;
        else if (el.checked) data.append(el.name, el.value);
        return;
      }
      if (el.type === "radio" && !el.checked) return;
      if (packed) {
        if (String(el.value).trim() !== "") options[el.name] = el.value;
      } else {
        data.append(el.name, el.value);
      }
    });
    if (packed) data.append(packed, JSON.stringify(options));
    return data;
  }

  Array.prototype.forEach.call(document.querySelectorAll("form[data-api-form]"), function (form) {
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var statusId = form.getAttribute("data-status");
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      status(statusId, "Uploading…", "pending");
      send(form.action, { method: "POST", body: formBody(form) })
        .then(function (body) {
          var name = body.name || (body.dataset && body.dataset.name) || (body.model && body.model.name) || "it";
          status(statusId, "Added " + name + ".", "ok");
          window.setTimeout(function () { window.location.reload(); }, 700);
        })
        .catch(function (err) {
          status(statusId, err.message, "error");
          button.disabled = false;
        });
    });
  });

  var demo = document.getElementById("demo-train");
  if (demo) {
    demo.addEventListener("click", function () {
      var statusId = demo.getAttribute("data-status");
      demo.disabled = true;
      status(statusId, "Preparing the demo dataset…", "pending");
      send(demo.getAttribute("data-demo-url"), { method: "POST" })
        .then(function (body) {
          var ds = body.dataset || body;
          if (!ds.id) throw new Error("The server did not say which dataset it made.");
          status(statusId, "Starting the training job…", "pending");
          // Small settings from the page, then any the server suggests for its demo, then the dataset.
          var params = JSON.parse(demo.getAttribute("data-params") || "{}");
          var suggested = body.suggested_params || {};
          Object.keys(suggested).forEach(function (k) { params[k] = suggested[k]; });
          params[demo.getAttribute("data-param")] = ds.id;
          return send(demo.getAttribute("data-jobs-url"), {
            method: "POST",
            headers: { "Content-Type": "application/json" },
            body: JSON.stringify({ kind: demo.getAttribute("data-kind"), params: params })
          });
        })
        .then(function (job) {
          window.location.assign((job.urls && job.urls.page) || ("/jobs/" + encodeURIComponent(job.id)));
        })
        .catch(function (err) {
          status(statusId, err.message, "error");
          demo.disabled = false;
        });
    });
  }
})();
