/* Model access pages, live: a department user's page follows "user.<id>" (their requests'
 * decisions), the admins' queue follows "access" (new and decided requests). Either way the
 * section is fetched again and swapped in, so the server renders one truth; it is fetched again
 * each time the topic is (re)joined too, so a decision pushed while the socket was down shows. */
(function () {
  "use strict";
  function refresh(selector) {
    if (window.htmx && document.querySelector(selector)) {
      htmx.ajax("GET", location.pathname + location.search, { target: selector, select: selector, swap: "outerHTML" });
    }
  }
  function refreshMine() {
    refresh("#mine");
    // The key form only while it says there is no grant: a form being filled in is left alone.
    if (document.querySelector("#key-section .empty")) refresh("#key-section");
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.FleetLive) return;
    const mine = document.querySelector("[data-live-user]");
    if (mine) {
      FleetLive.subscribe("user." + mine.dataset.liveUser, function (m) { if (m.kind === "access_request") refreshMine(); }, refreshMine);
    }
    if (document.querySelector("#queue")) FleetLive.subscribe("access", function () { refresh("#queue"); }, function () { refresh("#queue"); });
  });
})();
