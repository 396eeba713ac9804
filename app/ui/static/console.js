// The console's only script of its own: the overview's pausable refresh (through htmx, no page
// reload), "copy as curl", and a confirmation before a delete. Every page works without it.
(function () {
  "use strict";

  function refresh(control) {
    var target = document.querySelector(control.dataset.target);
    var every = parseInt(control.dataset.every, 10) || 5000;
    var busy = false;
    setInterval(function () {
      if (!control.checked || busy || document.hidden || !window.htmx) return;
      busy = true;
      window.htmx.ajax("GET", control.dataset.refresh, { target: target, swap: "innerHTML" })
        .finally(function () { busy = false; });
    }, every);
  }

  function copy(button) {
    var source = document.querySelector(button.dataset.copy);
    button.hidden = false;
    button.addEventListener("click", function () {
      navigator.clipboard.writeText(source.textContent).then(function () {
        button.textContent = "Copied";
        setTimeout(function () { button.textContent = "Copy as curl"; }, 2000);
      });
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-refresh]").forEach(refresh);
    document.querySelectorAll("[data-copy]").forEach(copy);
    document.querySelectorAll("button[data-confirm]").forEach(function (button) {
      if (!button.dataset.confirm) return;
      button.addEventListener("click", function (event) {
        if (!window.confirm(button.dataset.confirm)) event.preventDefault();
      });
    });
  });
})();
