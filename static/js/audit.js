/* An event's number opens its details in a panel over the trail, without leaving the page (the
 * link still works as a page of its own: new tab, no script). Escape or Close returns focus. */
(function () {
  "use strict";
  const panel = document.getElementById("event-panel");
  if (!panel) return;
  const body = document.getElementById("event-panel-body");
  let opener = null;

  async function open(href) {
    const response = await fetch(href, { headers: { "HX-Request": "true" }, credentials: "same-origin" });
    body.innerHTML = response.ok ? await response.text() : "<p class='error' role='alert'>This event cannot be shown (" + response.status + ").</p>";
    if (window.htmx) window.htmx.process(body);
    if (!panel.open) panel.showModal();
    panel.querySelector("[data-close-panel]").focus();
  }

  document.addEventListener("click", function (ev) {
    const link = ev.target.closest("a[data-event-link]");
    if (!link || ev.ctrlKey || ev.metaKey || ev.shiftKey || ev.button !== 0) return;
    ev.preventDefault();
    if (!panel.open) opener = link;
    open(link.href);
  });
  panel.addEventListener("click", function (ev) {
    if (ev.target.closest("[data-close-panel]") || ev.target === panel) panel.close();
  });
  panel.addEventListener("close", function () { if (opener) opener.focus(); opener = null; });
})();
