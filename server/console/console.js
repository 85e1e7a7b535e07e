// The autoagent web console: a client of the documented WebSocket API, nothing more.
//
// Two connections to the page's own origin: `follow` subscribes to `$all` and remembers
// the last position it saw, so a reconnect resubscribes with `after` and misses nothing;
// `command` sends message/approve/cancel (the run events it receives only add to what
// `follow` shows). Every event is kept once, by position, and the views are folded from
// them: sessions and messages, runs with their steps, pending approvals, the log itself.

const TOKEN_KEY = "autoagent.token";
const MAX_ROWS = 1000; // event browser rows rendered at once (the newest matching ones)

// --- state folded from the log ------------------------------------------------------------

const log = { events: [], seen: new Set(), types: new Set(), streams: new Set() };
const sessions = new Map(); // session id -> {id, messages: [], runs: [], ts}
const runs = new Map(); // run id -> {id, session_id, goal, status, steps: Map, start, end, answer}
const ui = { view: "chat", session: null, run: null, event: null, notice: "" };

function ingest(frame) {
  if (log.seen.has(frame.position)) return; // the other connection brought it already
  log.seen.add(frame.position);
  insertSorted(log.events, frame);
  log.types.add(frame.event_type);
  log.streams.add(frame.stream);
  try {
    fold(frame);
  } catch (error) { // a record of an unexpected shape stays in the log view, unfolded
    console.warn("cannot fold event", frame.position, error);
  }
  scheduleRender();
}

function insertSorted(events, frame) {
  let i = events.length;
  while (i > 0 && events[i - 1].position > frame.position) i--;
  events.splice(i, 0, frame);
}

function session(id, ts) {
  if (!sessions.has(id)) sessions.set(id, { id, messages: [], runs: [], ts });
  return sessions.get(id);
}

function run(id, ts) {
  if (!runs.has(id)) {
    runs.set(id, { id, session_id: null, goal: "", status: "running", steps: new Map(),
      start: ts, end: null, answer: "", reason: "" });
  }
  return runs.get(id);
}

function step(r, id) {
  if (!r.steps.has(id)) {
    r.steps.set(id, { id, tool: "", parameters: null, status: "planned", start: null,
      end: null, verdict: null, approval: null, detail: "" });
  }
  return r.steps.get(id);
}

const ms = (ts) => ts / 1e6; // frames carry nanoseconds since the epoch

function fold({ event_type: type, data, ts, position }) {
  const t = ms(ts);
  const r = data.run_id ? run(data.run_id, t) : null;
  const s = data.step_id && r ? step(r, data.step_id) : null;
  switch (type) {
    case "SessionStarted": session(data.session_id, t); break;
    case "UserMessageReceived":
      session(data.session_id, t).messages.push({ role: "user", text: data.text, position });
      break;
    case "AssistantMessageSent":
      session(data.session_id, t).messages.push(
        { role: "assistant", text: data.text, run_id: data.run_id, position });
      break;
    case "RunRequested":
      Object.assign(r, { session_id: data.session_id, goal: data.goal, start: t });
      if (!session(data.session_id, t).runs.includes(r.id)) session(data.session_id, t).runs.push(r.id);
      break;
    case "PlanCreated":
      for (const p of data.steps || []) {
        const planned = step(r, p.id);
        planned.tool = p.agent && p.action ? `${p.agent}.${p.action}` : (p.tool || "");
        planned.parameters = p.parameters ?? null;
      }
      break;
    case "StepStarted": Object.assign(s, { status: "running", start: t, end: null }); break;
    case "StepCompleted":
      Object.assign(s, { status: "completed", end: t, detail: short(data.result) });
      break;
    case "StepReused": Object.assign(s, { status: "reused", detail: short(data.result) }); break;
    case "StepFailed":
      Object.assign(s, { status: "failed", end: t, detail: `${data.error_type}: ${data.message}` });
      break;
    case "StepSkipped": Object.assign(s, { status: "skipped", detail: data.reason }); break;
    case "VerificationCompleted":
      s.verdict = { passed: data.passed, confidence: data.confidence, notes: data.notes };
      break;
    case "ApprovalRequested":
      s.tool = s.tool || data.tool;
      s.approval = { state: "pending", tool: data.tool, parameters: data.parameters,
        reason: data.reason, position };
      if (s.status === "planned") s.status = "waiting";
      break;
    case "ApprovalGranted":
    case "ApprovalDenied":
      if (s.approval) s.approval.state = type === "ApprovalGranted" ? "approved" : "denied";
      if (s.status === "waiting") s.status = "planned";
      break;
    case "RunCompleted": Object.assign(r, { status: "completed", end: t, answer: data.answer }); break;
    case "RunFailed": Object.assign(r, { status: "failed", end: t, reason: data.reason }); break;
    case "RunCancelled": Object.assign(r, { status: "cancelled", end: t, reason: data.reason }); break;
    case "RunResumed": Object.assign(r, { status: "running", end: null }); break;
    default: break;
  }
}

function short(value) {
  const text = typeof value === "string" ? value : JSON.stringify(value);
  return text && text.length > 160 ? `${text.slice(0, 157)}...` : (text || "");
}

function pendingApprovals() {
  const pending = [];
  for (const r of runs.values()) {
    if (r.status !== "running") continue; // an ended run has nothing left to decide
    for (const s of r.steps.values()) {
      if (s.approval && s.approval.state === "pending") pending.push({ run: r, step: s });
    }
  }
  return pending;
}

// --- connections --------------------------------------------------------------------------

class Channel {
  constructor(name, onOpen, onEvent) {
    Object.assign(this, { name, onOpen, onEvent, ws: null, ready: false, nextId: 1,
      waiting: new Map(), backoff: 250, timer: null, refused: false });
  }

  connect() {
    clearTimeout(this.timer);
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const ws = new WebSocket(`${scheme}//${location.host}/`);
    this.ws = ws;
    this.refused = false;
    ws.onopen = () => this.opened(ws);
    ws.onmessage = (message) => this.received(JSON.parse(message.data));
    ws.onclose = (close) => this.closed(ws, close);
    setStatus();
  }

  async opened(ws) {
    this.backoff = 250;
    try {
      const token = sessionStorage.getItem(TOKEN_KEY);
      if (token) await this.request({ type: "hello", token, client: "autoagent-console" });
      if (ws !== this.ws) return;
      this.ready = true;
      setStatus();
      await this.onOpen(this);
    } catch (error) {
      notify(`${this.name}: ${error.message}`);
    }
  }

  received(frame) {
    if (frame.type === "event") { this.onEvent(frame); return; }
    const waiter = frame.id !== undefined ? this.waiting.get(frame.id) : undefined;
    if (waiter) {
      this.waiting.delete(frame.id);
      if (frame.type === "error") waiter.reject(Object.assign(new Error(frame.message), frame));
      else waiter.resolve(frame);
    } else if (frame.type === "error") {
      if (frame.code === "unauthorized") this.refused = true;
      notify(`${frame.code}: ${frame.message}`);
    }
  }

  closed(ws, close) {
    if (ws !== this.ws) return; // an old socket, already replaced
    this.ready = false;
    for (const waiter of this.waiting.values()) waiter.reject(new Error("connection closed"));
    this.waiting.clear();
    setStatus();
    if (close.code === 1008 && (this.refused || close.reason.includes("hello"))) {
      notify("the server wants a token: enter it above");
      return; // retrying without a new token would be refused again
    }
    this.timer = setTimeout(() => this.connect(), this.backoff);
    this.backoff = Math.min(this.backoff * 2, 4000);
  }

  request(frame) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN) {
      return Promise.reject(new Error("not connected; retrying"));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  restart() {
    const old = this.ws;
    this.ws = null;
    this.ready = false;
    if (old) old.close(1000, "new token");
    this.connect();
  }
}

let after = 0; // the last position `follow` saw: a reconnect resubscribes from there

const follow = new Channel("follow", async (channel) => {
  try {
    await channel.request({ type: "subscribe", stream: "$all", after });
  } catch (error) {
    notify(`cannot follow the event log (${error.message}); only runs started here are shown`);
  }
}, (frame) => {
  if (frame.position > after) after = frame.position;
  ingest(frame);
});

const command = new Channel("command", async () => {}, ingest);

async function act(frame) {
  try {
    return await command.request(frame);
  } catch (error) {
    notify(`${frame.type}: ${error.message}`);
    return null;
  }
}

// --- rendering ----------------------------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

let renderQueued = false;
function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => { renderQueued = false; render(); });
}

function render() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.classList.toggle("active", tab.dataset.view === ui.view);
  }
  for (const view of document.querySelectorAll(".view")) {
    view.hidden = view.id !== `view-${ui.view}`;
  }
  const pending = pendingApprovals();
  $("approval-count").textContent = pending.length ? String(pending.length) : "";
  setStatus();
  const notice = $("notice");
  notice.hidden = !ui.notice;
  notice.textContent = ui.notice;
  if (ui.view === "chat") renderChat();
  if (ui.view === "runs") renderRuns();
  if (ui.view === "approvals") renderApprovals(pending);
  if (ui.view === "events") renderEvents();
}

function setStatus() {
  const up = follow.ready && command.ready;
  const status = $("status");
  status.textContent = up ? `live at #${after}` : "reconnecting";
  status.className = `status ${up ? "up" : "down"}`;
}

function notify(text) {
  ui.notice = text;
  scheduleRender();
}

function renderChat() {
  const list = [...sessions.values()].sort((a, b) => b.ts - a.ts);
  $("sessions").replaceChildren(...list.map((s) => h("li", {
    class: s.id === ui.session ? "selected" : "",
    "data-session": s.id,
    onclick: () => { ui.session = s.id; scheduleRender(); },
  }, h("span", { class: "title" }, firstLine(s)), h("small", {}, s.id))));
  const current = sessions.get(ui.session);
  const messages = $("messages");
  if (!current) {
    messages.replaceChildren(h("p", { class: "empty" }, "A new chat: send a message to start it."));
    return;
  }
  messages.replaceChildren(...current.messages.map((m) => h("div", { class: `message ${m.role}` },
    h("div", { class: "text" }, m.text),
    m.run_id ? runLink(m.run_id) : null)), ...current.runs.filter(unanswered).map((id) =>
    h("div", { class: "message assistant pending" }, h("div", { class: "text" }, statusLine(runs.get(id))),
      runLink(id))));
}

const firstLine = (s) => (s.messages.find((m) => m.role === "user") || {}).text || "(new session)";
const unanswered = (id) => !sessions.get(runs.get(id).session_id)?.messages.some((m) => m.run_id === id);

function statusLine(r) {
  if (r.status === "running") {
    const waiting = [...r.steps.values()].filter((s) => s.approval?.state === "pending").length;
    return waiting ? `waiting for approval (${waiting} step${waiting > 1 ? "s" : ""})` : "working...";
  }
  return r.status === "completed" ? r.answer : `${r.status}: ${r.reason}`;
}

function runLink(id) {
  return h("a", { href: "#", class: "run-link", onclick: (e) => {
    e.preventDefault();
    ui.view = "runs";
    ui.run = id;
    scheduleRender();
  } }, `run ${id}`);
}

function renderRuns() {
  const list = [...runs.values()].sort((a, b) => b.start - a.start);
  $("runs").replaceChildren(...list.map((r) => h("li", {
    class: r.id === ui.run ? "selected" : "",
    "data-run": r.id,
    onclick: () => { ui.run = r.id; scheduleRender(); },
  }, h("span", { class: "title" }, r.goal || r.id), h("small", { class: `state ${r.status}` }, r.status))));
  const r = runs.get(ui.run);
  $("run-detail").replaceChildren(
    ...(r ? timeline(r).filter(Boolean) : [h("p", { class: "empty" }, "Select a run.")]));
}

function timeline(r) {
  const steps = [...r.steps.values()];
  const now = Date.now();
  const t0 = r.start ?? now;
  const t1 = Math.max(r.end ?? now, ...steps.map((s) => s.end ?? (s.start ? now : 0)), t0 + 1);
  const span = t1 - t0;
  const pct = (t) => `${(100 * (t - t0)) / span}%`;
  return [
    h("h2", {}, r.goal || r.id),
    h("p", { class: "meta" }, `run ${r.id} · session ${r.session_id ?? "?"} · `,
      h("span", { class: `state ${r.status}`, "data-testid": "run-status" }, r.status),
      ` · ${((t1 - t0) / 1000).toFixed(3)} s`,
      r.status === "running"
        ? h("button", { type: "button", class: "cancel",
          onclick: () => act({ type: "cancel", run_id: r.id }) }, "Cancel")
        : null),
    h("div", { class: "timeline" }, steps.map((s) => h("div", { class: `row ${s.status}`, "data-step": s.id },
      h("div", { class: "label" }, h("b", {}, s.id), " ", s.tool, verdict(s.verdict)),
      h("div", { class: "track" }, s.start !== null
        ? h("div", { class: `bar ${s.status}`, title: `${s.status} ${s.detail}`,
          style: `left:${pct(s.start)};width:max(3px,${pct(t0 + (s.end ?? now) - s.start)})` })
        : h("span", { class: "idle" }, s.status)),
      h("div", { class: "detail" }, stepDetail(s))))),
    r.answer ? h("div", { class: "answer", "data-testid": "answer" }, r.answer) : null,
    r.reason ? h("div", { class: "reason" }, r.reason) : null,
  ];
}

function verdict(v) {
  if (!v) return null;
  return h("span", { class: `verdict ${v.passed ? "pass" : "fail"}`, title: v.notes || "" },
    ` ${v.passed ? "✓ verified" : "✗ rejected"} (${Number(v.confidence).toFixed(2)})`);
}

function stepDetail(s) {
  if (s.approval?.state === "pending") return "waits for approval";
  const approval = s.approval ? `${s.approval.state} · ` : "";
  const timing = s.start !== null && s.end !== null ? ` · ${((s.end - s.start) / 1000).toFixed(3)} s` : "";
  return `${approval}${s.status}${timing}${s.detail ? ` · ${s.detail}` : ""}`;
}

function renderApprovals(pending) {
  $("approvals").replaceChildren(...(pending.length ? pending.map(({ run: r, step: s }) =>
    h("div", { class: "approval", "data-run": r.id, "data-step": s.id },
      h("h3", {}, `${s.approval.tool} in run ${r.id}, step ${s.id}`),
      h("p", {}, r.goal),
      s.approval.reason ? h("p", { class: "why" }, s.approval.reason) : null,
      h("pre", { class: "json" }, JSON.stringify(s.approval.parameters, null, 2)),
      h("button", { type: "button", class: "approve",
        onclick: () => decide(r.id, s.id, "approve") }, "Approve"),
      h("button", { type: "button", class: "deny",
        onclick: () => decide(r.id, s.id, "deny") }, "Deny"))) : [h("p", { class: "empty" }, "Nothing waits for approval.")]));
}

async function decide(runId, stepId, decision) {
  const reply = await act({ type: "approve", run_id: runId, step_id: stepId, decision });
  if (reply) notify(`step ${stepId} of run ${runId}: ${reply.decision}`);
}

function renderEvents() {
  fillSelect($("filter-stream"), log.streams, "all streams");
  fillSelect($("filter-type"), log.types, "all types");
  const stream = $("filter-stream").value;
  const type = $("filter-type").value;
  const shown = log.events.filter((e) => (!stream || e.stream === stream) && (!type || e.event_type === type));
  const list = $("event-list");
  list.replaceChildren(h("table", {}, h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "stream"),
    h("th", {}, "type"), h("th", {}, "time"))), h("tbody", {}, shown.slice(-MAX_ROWS).map((e) =>
    h("tr", { class: e.position === ui.event ? "selected" : "", "data-position": e.position,
      onclick: () => { ui.event = e.position; scheduleRender(); } },
    h("td", { class: "pos" }, e.position), h("td", {}, e.stream), h("td", {}, e.event_type),
    h("td", {}, new Date(ms(e.ts)).toISOString()))))));
  if ($("follow").checked) list.scrollTop = list.scrollHeight;
  const chosen = log.events.find((e) => e.position === ui.event);
  $("event-detail").textContent = chosen ? JSON.stringify({
    position: chosen.position, stream: chosen.stream, version: chosen.version,
    type: chosen.event_type, ts: new Date(ms(chosen.ts)).toISOString(), id: chosen.id,
    correlation: chosen.correlation, causation: chosen.causation,
    prev_hash: chosen.prev_hash, hash: chosen.hash, data: chosen.data }, null, 2)
    : "Click an event to see it.";
}

function fillSelect(select, values, label) {
  if (select.options.length - 1 === values.size) return;
  const current = select.value;
  select.replaceChildren(h("option", { value: "" }, label),
    ...[...values].sort().map((v) => h("option", { value: v }, v)));
  select.value = current;
}

// --- wiring -------------------------------------------------------------------------------

function wire() {
  for (const tab of document.querySelectorAll(".tab")) {
    tab.addEventListener("click", () => { ui.view = tab.dataset.view; scheduleRender(); });
  }
  $("new-session").addEventListener("click", () => { ui.session = null; scheduleRender(); $("goal").focus(); });
  $("compose").addEventListener("submit", async (e) => {
    e.preventDefault();
    const text = $("goal").value.trim();
    if (!text) return;
    const frame = { type: "message", text };
    if (ui.session) frame.session_id = ui.session;
    const reply = await act(frame);
    if (!reply) return;
    $("goal").value = "";
    ui.session = reply.session_id;
    session(reply.session_id, Date.now());
    run(reply.run_id, Date.now()).session_id = reply.session_id;
    if (!sessions.get(reply.session_id).runs.includes(reply.run_id)) {
      sessions.get(reply.session_id).runs.push(reply.run_id);
    }
    ui.run = reply.run_id;
    scheduleRender();
  });
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    else sessionStorage.removeItem(TOKEN_KEY);
    $("token").value = "";
    notify(token ? "token kept for this tab" : "token cleared");
    follow.restart();
    command.restart();
  });
  for (const id of ["filter-stream", "filter-type", "follow"]) $(id).addEventListener("change", scheduleRender);
  // A running run's bars grow with time, not only with events.
  setInterval(() => { if (ui.view === "runs" && runs.get(ui.run)?.status === "running") scheduleRender(); }, 500);
}

wire();
follow.connect();
command.connect();
render();
