/* On a narrow screen the sidebar folds away behind the Menu button; Escape folds it again. */
(function () {
  "use strict";
  const button = document.querySelector("[data-menu-toggle]");
  if (!button) return;
  function set(open) {
    document.body.classList.toggle("nav-open", open);
    button.setAttribute("aria-expanded", String(open));
  }
  button.addEventListener("click", function () { set(!document.body.classList.contains("nav-open")); });
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape" && document.body.classList.contains("nav-open")) { set(false); button.focus(); }
  });
})();
