/*
 * Small comforts on the job form: a preview of the chosen images, a summary of which style images
 * will be used, and a submit button that cannot be pressed twice while a large upload is on its way.
 * The form works the same without this script.
 */
(function () {
  "use strict";

  var form = document.getElementById("job-form");
  if (!form) return;

  function showPreview(input) {
    var box = document.getElementById(input.getAttribute("data-preview"));
    if (!box) return;
    Array.prototype.forEach.call(box.querySelectorAll("img"), function (img) { URL.revokeObjectURL(img.src); });
    box.replaceChildren();
    var files = Array.prototype.slice.call(input.files || []).filter(function (f) { return /^image\//.test(f.type); });
    files.slice(0, 8).forEach(function (f) {
      var img = document.createElement("img");
      img.alt = f.name;
      img.src = URL.createObjectURL(f);
      box.appendChild(img);
    });
    box.hidden = files.length === 0;
  }

  Array.prototype.forEach.call(form.querySelectorAll("input[type=file][data-preview]"), function (input) {
    input.addEventListener("change", function () { showPreview(input); });
  });

  form.addEventListener("submit", function () {
    var button = document.getElementById("submit-job");
    var note = document.getElementById("submit-note");
    // Disable after the browser has collected the form data, or the button's own value would be lost.
    window.setTimeout(function () {
      button.disabled = true;
      if (note) note.textContent = "Uploading…";
    }, 0);
  });

  // After a refused submission, the summary of every mistake gets the focus (screen readers read it;
  // keyboard users start from it), and its links move the focus to the field itself.
  var summary = document.getElementById("form-error");
  if (summary) {
    summary.focus();
    Array.prototype.forEach.call(summary.querySelectorAll("a[href^='#field-']"), function (a) {
      a.addEventListener("click", function () {
        var box = document.getElementById(a.getAttribute("href").slice(1));
        var control = box && box.querySelector("input:not([type=hidden]), select, textarea");
        if (control) window.setTimeout(function () { control.focus(); }, 0);
      });
    });
  }

  // A slot that starts on a bundled example (the style painting) switches to "only my upload" when the
  // person chooses their own file, unless they picked an example themselves.
  Array.prototype.forEach.call(form.querySelectorAll("fieldset.file-field"), function (box) {
    var input = box.querySelector("input[type=file]");
    var radios = box.querySelectorAll("input[type=radio]");
    if (!input || !radios.length) return;
    var touched = false;
    Array.prototype.forEach.call(radios, function (r) { r.addEventListener("change", function () { touched = true; }); });
    input.addEventListener("change", function () {
      if (touched || !(input.files && input.files.length)) return;
      var none = box.querySelector("input[type=radio][value='']");
      if (none) none.checked = true;
    });
  });

  // "About 3 min on cpu": the server's estimate (POST /api/v1/estimate) for the values on the form,
  // refreshed as they change. Fields the estimate cannot use yet (a half-typed number) show nothing.
  var estimate = document.getElementById("job-estimate");
  var estimateTimer = null;
  var estimateSeq = 0;
  function formParams() {
    var params = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.disabled || el.type === "file" || el.type === "submit") return;
      if ((el.type === "checkbox" || el.type === "radio") && !el.checked) return;
      params[el.name] = el.value;
    });
    return params;
  }
  function refreshEstimate() {
    if (!estimate) return;
    var seq = ++estimateSeq;
    fetch(estimate.getAttribute("data-url"), {
      method: "POST", credentials: "same-origin", cache: "no-store",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ kind: estimate.getAttribute("data-kind"), params: formParams(), form: true })
    }).then(function (r) { return r.ok ? r.json() : null; }).then(function (e) {
      if (seq !== estimateSeq) return;   // an older answer after a newer question
      if (!e || e.seconds === null || e.seconds === undefined) {
        estimate.hidden = true;
        return;
      }
      estimate.textContent = "Estimated time: " + e.text + ".";
      estimate.hidden = false;
    }).catch(function () { estimate.hidden = true; });
  }
  function scheduleEstimate() {
    window.clearTimeout(estimateTimer);
    estimateTimer = window.setTimeout(refreshEstimate, 300);
  }
  if (estimate) {
    form.addEventListener("input", scheduleEstimate);
    form.addEventListener("change", scheduleEstimate);
    refreshEstimate();
  }

  // Coming back with the Back button restores a page whose button was disabled.
  window.addEventListener("pageshow", function () {
    var button = document.getElementById("submit-job");
    if (button) button.disabled = false;
    var note = document.getElementById("submit-note");
    if (note) note.textContent = "";
  });
})();
