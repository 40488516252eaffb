/* Model access pages, live: a department user's page follows "user.<id>" (their requests'
 * decisions), the admins' queue follows "access" (new and decided requests). Either way the
 * section is fetched again and swapped in, so the server renders one truth. */
(function () {
  "use strict";
  function refresh(selector) {
    if (window.htmx) htmx.ajax("GET", location.pathname + location.search, { target: selector, select: selector, swap: "outerHTML" });
  }
  document.addEventListener("DOMContentLoaded", function () {
    if (!window.FleetLive) return;
    const mine = document.querySelector("[data-live-user]");
    if (mine) FleetLive.subscribe("user." + mine.dataset.liveUser, function (m) { if (m.kind === "access_request") refresh("#mine"); });
    if (document.querySelector("#queue")) FleetLive.subscribe("access", function () { refresh("#queue"); });
  });
})();
