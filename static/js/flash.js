/* A flash that announced a state ("… is being deployed", "… queued") goes once the page, updated
 * live, shows that state is over: its data-clear-when names what the page then shows. */
(function () {
  "use strict";
  function sweep() {
    document.querySelectorAll(".flash[data-clear-when]").forEach(function (flash) {
      try {
        if (document.querySelector(flash.dataset.clearWhen)) flash.remove();
      } catch (e) { flash.removeAttribute("data-clear-when"); }  // not a selector: keep it shown
    });
    if (!document.querySelector(".flash[data-clear-when]")) observer.disconnect();
  }
  const observer = new MutationObserver(sweep);
  if (document.querySelector(".flash[data-clear-when]")) {
    observer.observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ["data-state"] });
    sweep();
  }
})();
