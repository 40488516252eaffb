/* The playground: each pane chats with one model through the gateway (/v1/chat/completions,
 * streamed), with the viewer's own playground key for that model's grant. Answers are Markdown,
 * rendered and then sanitised (DOMPurify) before they touch the page: a model's output is
 * untrusted input. With "compare" on, the same message goes to both panes at once. */
(function () {
  "use strict";
  const form = document.querySelector("[data-playground]");
  const purify = window.DOMPurify;

  /* Markdown → sanitised HTML in `el`. Everything a model says goes through here. */
  function render(el, markdown) {
    el.innerHTML = purify.sanitize(window.marked.parse(markdown), { USE_PROFILES: { html: true } });
  }
  window.fleetPlayground = { render: render };
  if (!form) return;

  const base = form.dataset.baseUrl;
  const choices = JSON.parse(document.getElementById("playground-choices").textContent);
  const keyOf = Object.fromEntries(choices.map(function (c) { return [c.name, c.key]; }));
  const byName = Object.fromEntries(choices.map(function (c) { return [c.name, c]; }));
  const panes = Array.from(form.querySelectorAll("[data-pane]")).map(function (section) {
    return { section: section, select: section.querySelector("select"), history: [], controller: null };
  });

  function active() { return form.elements.compare.checked ? panes : panes.slice(0, 1); }

  function settings() {
    const system = form.elements.system.value.trim();
    return {
      system: system,
      temperature: Number(form.elements.temperature.value || 0.7),
      max_tokens: Math.max(1, parseInt(form.elements.max_tokens.value || "256", 10)),
    };
  }

  function messagesFor(pane, prompt, s) {
    const head = s.system ? [{ role: "system", content: s.system }] : [];
    return head.concat(pane.history, prompt ? [{ role: "user", content: prompt }] : []);
  }

  function showCode(pane, prompt) {
    const s = settings();
    const messages = messagesFor(pane, prompt || "Say hello.", s);
    const body = { model: pane.select.value, messages: messages, temperature: s.temperature, max_tokens: s.max_tokens };
    const json = JSON.stringify(body);
    pane.section.querySelector('[data-code="curl"]').textContent =
      "curl " + base + "/chat/completions \\\n" +
      '  -H "Authorization: Bearer $FLEET_API_KEY" -H "Content-Type: application/json" \\\n' +
      "  -d '" + json.replace(/'/g, "'\\''") + "'";
    pane.section.querySelector('[data-code="python"]').textContent = [
      "import os",
      "from openai import OpenAI",
      "",
      'client = OpenAI(base_url="' + base + '", api_key=os.environ["FLEET_API_KEY"])',
      "stream = client.chat.completions.create(",
      "    model=" + JSON.stringify(body.model) + ",",
      "    messages=" + JSON.stringify(messages) + ",",
      "    temperature=" + s.temperature + ",",
      "    max_tokens=" + s.max_tokens + ",",
      "    stream=True,",
      ")",
      "for chunk in stream:",
      "    if chunk.choices:",
      '        print(chunk.choices[0].delta.content or "", end="", flush=True)',
      "print()",
    ].join("\n");
  }

  function bubble(pane, role, text) {
    const turn = document.createElement("div");
    turn.className = "turn " + role;
    const who = document.createElement("small");
    who.className = "muted";
    who.textContent = role === "user" ? "You" : pane.select.value;
    const content = document.createElement("div");
    content.className = "content";
    if (role === "user") content.textContent = text; else render(content, text);
    turn.append(who, content);
    pane.section.querySelector("[data-transcript]").append(turn);
    return content;
  }

  /* Server-sent events from a fetch body: calls onData with each `data:` payload. */
  async function readEvents(response, onData) {
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        for (const line of event.split("\n")) {
          if (line.startsWith("data:")) onData(line.slice(5).trim());
        }
      }
    }
  }

  async function ask(pane, prompt) {
    const s = settings();
    const model = pane.select.value;
    const messages = messagesFor(pane, prompt, s);
    const stats = pane.section.querySelector("[data-stats]");
    bubble(pane, "user", prompt);
    const answer = bubble(pane, "assistant", "");
    answer.setAttribute("data-testid", "answer");
    answer.classList.add("streaming");
    const asleep = byName[model] && byName[model].wakes && !byName[model].ready;
    // Scaled to zero: the gateway holds the call while an instance starts, then answers it.
    stats.textContent = asleep ? "Waking up: the model starts for this call and answers once it is ready…"
      : "Waiting for the first token…";
    stats.setAttribute("data-waking", asleep ? "true" : "false");
    pane.controller = new AbortController();
    const started = performance.now();
    let first = null;
    let text = "";
    let usage = null;
    try {
      const response = await fetch(base + "/chat/completions", {
        method: "POST",
        headers: { Authorization: "Bearer " + keyOf[model], "Content-Type": "application/json" },
        body: JSON.stringify({
          model: model, messages: messages, temperature: s.temperature, max_tokens: s.max_tokens,
          stream: true, stream_options: { include_usage: true },
        }),
        signal: pane.controller.signal,
      });
      if (!response.ok) {
        const body = await response.json().catch(function () { return {}; });
        const message = (body.error && body.error.message) || response.status + " " + response.statusText;
        const wait = response.headers.get("retry-after");
        throw new Error(message + (wait ? " Try again in " + wait + " s." : ""));
      }
      await readEvents(response, function (data) {
        if (data === "[DONE]") return;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message || "The model stopped with an error.");
        if (chunk.usage) usage = chunk.usage;
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) {
          if (first === null) first = performance.now();
          text += delta.content;
          render(answer, text);
        }
      });
      pane.history.push({ role: "user", content: prompt }, { role: "assistant", content: text });
      const latency = performance.now() - started;
      stats.textContent = [
        usage ? usage.completion_tokens + " tokens" : null,
        first !== null ? "TTFT " + Math.round(first - started) + " ms" : "no tokens",
        "latency " + Math.round(latency) + " ms",
        usage && latency > 0 ? (usage.completion_tokens / (latency / 1000)).toFixed(1) + " tokens/s" : null,
      ].filter(Boolean).join(" · ");
      pane.section.dataset.done = String(Number(pane.section.dataset.done || 0) + 1);
    } catch (err) {
      const stopped = err.name === "AbortError";
      const note = document.createElement("p");
      note.className = stopped ? "muted" : "error";
      if (!stopped) note.setAttribute("role", "alert");
      note.textContent = stopped ? "Stopped." : err.message;
      answer.after(note);
      stats.textContent = "";
    } finally {
      answer.classList.remove("streaming");
      pane.controller = null;
      showCode(pane, prompt);
    }
  }

  form.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    const prompt = form.elements.prompt.value.trim();
    if (!prompt) return;
    form.elements.prompt.value = "";
    const send = form.querySelector('[type="submit"]');
    const stop = form.querySelector("[data-stop]");
    send.disabled = true;
    stop.disabled = false;
    try {
      await Promise.all(active().map(function (pane) { return ask(pane, prompt); }));
    } finally {
      send.disabled = false;
      stop.disabled = true;
      form.elements.prompt.focus();
    }
  });
  form.elements.prompt.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) form.requestSubmit();
  });
  form.querySelector("[data-stop]").addEventListener("click", function () {
    panes.forEach(function (pane) { if (pane.controller) pane.controller.abort(); });
  });
  form.querySelector("[data-clear]").addEventListener("click", function () {
    panes.forEach(function (pane) {
      pane.history = [];
      pane.section.querySelector("[data-transcript]").replaceChildren();
      pane.section.querySelector("[data-stats]").textContent = "";
      showCode(pane);
    });
  });
  form.elements.compare.addEventListener("change", function () {
    panes[1].section.hidden = !form.elements.compare.checked;
  });
  form.addEventListener("change", function () { panes.forEach(function (pane) { showCode(pane); }); });
  panes.forEach(function (pane) { showCode(pane); });
})();
