/* FleetLive: one websocket per page to /ws/, reconnecting with capped exponential backoff.
 * FleetLive.subscribe(topic, fn) calls fn(data) for each message pushed on that topic; the
 * subscription is renewed after every reconnect. Any element with data-live-topic="audit"
 * that holds an events table gets new rows prepended (see bindAudit). */
(function () {
  "use strict";
  const handlers = new Map();
  // topic -> onJoined callbacks: called each time the topic is joined (again after a reconnect), so
  // a page can catch up on what changed before it was listening.
  const joined = new Map();
  let socket = null, attempt = 0, timer = null;

  function status(state) {
    document.querySelectorAll("[data-live-status]").forEach(function (el) {
      el.classList.toggle("up", state === "up");
      el.classList.toggle("down", state === "down");
      el.title = state === "up" ? "Live updates on" : "Live updates reconnecting…";
    });
  }

  function send(msg) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(msg));
  }

  function connect() {
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws/";
    socket = new WebSocket(url);
    socket.onopen = function () {
      attempt = 0;
      status("up");
      handlers.forEach(function (_fns, topic) { send({ action: "subscribe", topic: topic }); });
    };
    socket.onmessage = function (ev) {
      let msg;
      try { msg = JSON.parse(ev.data); } catch (e) { return; }
      // "batch": several messages of a high-rate topic in one frame (see console/fanout.py).
      const items = msg.type === "event" ? [msg.data] : msg.type === "batch" ? msg.data : null;
      if (items) (handlers.get(msg.topic) || []).forEach(function (fn) { items.forEach(function (d) { fn(d); }); });
      else if (msg.type === "subscribed") (joined.get(msg.topic) || []).forEach(function (fn) { fn(); });
      else if (msg.type === "error") console.warn("live:", msg.message);
    };
    socket.onclose = function (ev) {
      status("down");
      if (ev.code === 4401) return; // signed out: do not hammer the server
      const delay = Math.min(30000, 500 * Math.pow(2, attempt++)) * (0.5 + Math.random() / 2);
      clearTimeout(timer);
      timer = setTimeout(connect, delay);
    };
  }

  const FleetLive = {
    subscribe: function (topic, fn, onJoined) {
      if (!handlers.has(topic)) { handlers.set(topic, []); send({ action: "subscribe", topic: topic }); }
      handlers.get(topic).push(fn);
      if (onJoined) { if (!joined.has(topic)) joined.set(topic, []); joined.get(topic).push(onJoined); }
      if (!socket) connect();
    },
  };
  window.FleetLive = FleetLive;

  function cell(text) { const td = document.createElement("td"); td.textContent = text == null ? "" : String(text); return td; }

  function eventRow(e) {
    const tr = document.createElement("tr");
    tr.dataset.seq = e.seq;
    tr.className = "fresh";
    const when = new Date(e.created_at);
    const who = e.actor_name + (e.actor_role ? " (" + (e.actor_role_label || e.actor_role) + ")" : "");
    const action = document.createElement("td");
    const code = document.createElement("code"); code.textContent = e.action; action.appendChild(code);
    const seq = document.createElement("td");
    const link = document.createElement("a");
    link.href = "/audit/events/" + e.seq + "/";
    link.dataset.eventLink = "";
    link.textContent = e.seq;
    link.setAttribute("aria-label", "Event " + e.seq + ": details");
    seq.appendChild(link);
    tr.append(seq, cell(when.toISOString().replace("T", " ").slice(0, 19)), cell(who), action,
              cell(e.target_repr), cell(e.source_ip || e.channel));
    return tr;
  }

  // The trail's filters, applied to live events as the server applies them to history
  // (audit/filters.py): exact actor, department and object type; action exact or, ending in ".",
  // a prefix; text search in actor, action, object and request id; the "since" bound.
  function matches(f, e) {
    if (f.actor && e.actor_name !== f.actor) return false;
    if (f.department && e.actor_department !== f.department) return false;
    if (f.role && e.actor_role !== f.role) return false;
    if (f.target && e.target_type !== f.target) return false;
    if (f.action && (f.action.endsWith(".") ? !e.action.startsWith(f.action) : e.action !== f.action)) return false;
    if (f.since && e.created_at < f.since) return false;
    if (f.q) {
      const q = f.q.toLowerCase();
      const hay = [e.actor_name, e.action, e.target_repr].join(" ").toLowerCase();
      if (hay.indexOf(q) < 0 && e.request_id !== f.q) return false;
    }
    return true;
  }

  // Live audit rows: any [data-live-topic="audit"] box holding an events table (looked up per
  // event, so tables swapped in by HTMX filters are served too; filtered views omit the box).
  let auditBound = false;
  function bindAudit() {
    if (auditBound || !document.querySelector('[data-live-topic="audit"]')) return;
    auditBound = true;
    function add(e) {
      const box = document.querySelector('[data-live-topic="audit"]');
      const body = box && box.querySelector("[data-events-body]");
      if (!body || body.querySelector('tr[data-seq="' + e.seq + '"]') || !matches(box.dataset, e)) return;
      const empty = body.querySelector("tr.empty");
      if (empty) empty.remove();
      body.prepend(eventRow(e));
      while (body.rows.length > 200) body.deleteRow(-1);
    }
    // (Re)joined: events written before the page listened, or while its socket was down, are
    // fetched (the page's filters are the API's) and merged in, oldest first, by sequence number.
    function catchUp() {
      const body = document.querySelector('[data-live-topic="audit"] [data-events-body]');
      if (!body) return;
      const newest = Array.from(body.querySelectorAll("tr[data-seq]")).reduce(function (m, tr) { return Math.max(m, +tr.dataset.seq); }, 0);
      fetch("/api/audit/events/" + location.search, { credentials: "same-origin" })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (page) {
          if (page) page.results.filter(function (e) { return e.seq > newest; }).reverse().forEach(add);
        });
    }
    FleetLive.subscribe("audit", add, catchUp);
  }
  document.addEventListener("DOMContentLoaded", bindAudit);
  document.addEventListener("htmx:afterSettle", bindAudit);
})();
