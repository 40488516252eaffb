"""A live page never stays wrong: a change pushed while its socket was down shows once the page
has reconnected (it takes a fresh snapshot each time it joins its topic), without a reload."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from access.grants import services as grants
from access.grants.models import AccessRequest
from fleet.catalog.models import ModelArtifact
from tests.e2e.conftest import sign_in

pytestmark = [pytest.mark.browser, pytest.mark.e2e]

# The page's WebSocket, wrapped so the test can drop it and keep it down: while __hold is set every
# reconnection goes to a path nothing serves, so the page's own backoff keeps retrying.
HOLDABLE_SOCKET = """
(() => {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__hold = false;
  function Holdable(url, protocols) {
    const socket = new Native(window.__hold ? url.replace("/ws/", "/ws-held/") : url, protocols);
    window.__sockets.push(socket);
    return socket;
  }
  Holdable.prototype = Native.prototype;
  ["CONNECTING", "OPEN", "CLOSING", "CLOSED"].forEach((k) => { Holdable[k] = Native[k]; });
  window.WebSocket = Holdable;
})();
"""


def in_thread(fn: Callable[[], object]) -> None:
    """Run a database write outside this thread, which hosts Playwright's event loop."""
    worker = threading.Thread(target=fn)
    worker.start()
    worker.join()


def test_a_decision_made_while_the_socket_was_down_shows_after_it_reconnects(personas, browser, live_server_url):
    model = ModelArtifact.objects.create(name="llama-a", path="/models/llama-a")
    request = grants.request_access(
        personas["dept_user"], models=[model], justification="Drafting discharge letters", duration_days=30
    )
    page = sign_in(browser, live_server_url, "dept_user")
    page.context.add_init_script(HOLDABLE_SOCKET)
    page.goto(live_server_url + "/access/")
    live = "document.querySelector('[data-live-status]').classList.contains('up')"
    page.wait_for_function(live, timeout=10_000)
    page.evaluate("window.__marker = 'same page'")  # survives only if the page is not reloaded
    assert "Pending" in page.get_by_test_id("request-state").inner_text()

    page.evaluate("window.__hold = true; window.__sockets.forEach((s) => s.close())")
    page.wait_for_function(f"!({live})", timeout=5_000)
    in_thread(lambda: grants.approve(personas["admin"], AccessRequest.objects.get(pk=request.pk), reason="Fine"))
    page.wait_for_timeout(1_000)  # the decision was pushed while nobody listened
    assert "Pending" in page.get_by_test_id("request-state").inner_text()

    page.evaluate("window.__hold = false")
    page.wait_for_selector('[data-testid="request-state"]:has-text("Approved")', timeout=15_000)
    page.wait_for_selector('[data-testid="key-form"]', timeout=5_000)  # "You need an active grant first" is gone
    assert page.evaluate("window.__marker") == "same page"
    page.context.close()
