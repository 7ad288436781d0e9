// smartcard-broker admin console: small progressive enhancements. Every read-only page works
// without this file; it only adds copy buttons, confirmations, live lists and policy notes.
// Licence: Apache-2.0, as the rest of smartcard-broker.
"use strict";

function copyButtons(root) {
  root.querySelectorAll("button.copy[data-copy]").forEach(function (b) {
    b.addEventListener("click", function () {
      navigator.clipboard.writeText(b.dataset.copy).then(function () {
        b.textContent = "Copied";
        setTimeout(function () { b.textContent = "Copy"; }, 1500);
      });
    });
  });
}

function confirmations(root) {
  root.querySelectorAll("form[data-confirm]").forEach(function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.dataset.confirm)) { e.preventDefault(); }
    });
  });
}

// What the region's policy says next to each smart-card toggle, updated as the region changes.
function policyNotes(root) {
  root.querySelectorAll("form[data-notes]").forEach(function (f) {
    var notes = JSON.parse(f.dataset.notes || "{}");
    var region = f.querySelector("[name=region]");
    function update() {
      var forRegion = notes[region ? region.value.trim() : ""] || null;
      f.querySelectorAll("[data-note-for]").forEach(function (el) {
        var n = forRegion && forRegion[el.dataset.noteFor];
        el.classList.remove("yes", "no");
        if (!n) { el.textContent = region && region.value ? "unknown region " + region.value : ""; return; }
        el.classList.add(n.ok);
        el.textContent = n.ok === "no" ? n.message + ": " + n.code : n.message;
      });
    }
    if (region) { region.addEventListener("input", update); region.addEventListener("change", update); }
    update();
  });
}

// Lists whose rows change on their own (sessions, WorkSpace states) refresh every few seconds.
function liveLists() {
  var main = document.getElementById("main");
  var every = main && parseInt(main.dataset.live || "0", 10);
  if (!every) { return; }
  setInterval(function () {
    if (document.hidden || document.activeElement && document.activeElement.closest("form:not(.inline)")) { return; }
    fetch(location.href, {credentials: "same-origin"}).then(function (r) {
      return r.ok ? r.text() : null;
    }).then(function (html) {
      if (!html) { return; }
      var doc = new DOMParser().parseFromString(html, "text/html");
      document.querySelectorAll("[data-live-region]").forEach(function (old) {
        var fresh = doc.querySelector('[data-live-region="' + old.dataset.liveRegion + '"]');
        if (fresh) { old.replaceWith(fresh); copyButtons(fresh); confirmations(fresh); }
      });
    });
  }, every * 1000);
}

document.addEventListener("DOMContentLoaded", function () {
  copyButtons(document);
  confirmations(document);
  policyNotes(document);
  liveLists();
});
