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

  // Coming back with the Back button restores a page whose button was disabled.
  window.addEventListener("pageshow", function () {
    var button = document.getElementById("submit-job");
    if (button) button.disabled = false;
    var note = document.getElementById("submit-note");
    if (note) note.textContent = "";
  });
})();
