/*
 * Forms that destroy something ask first: a form with data-confirm="Question?" is submitted only when
 * the person confirms. Without JavaScript the form still posts (the server-side route does the work).
 * Kept in a file because the pages' Content-Security-Policy runs no inline script.
 */
(function () {
  "use strict";
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form || !form.getAttribute) return;
    var question = form.getAttribute("data-confirm");
    if (question && !window.confirm(question)) ev.preventDefault();
  }, true);
})();
