// webhook-fanout dashboard: a client of the admin API (/v1). Every value
// from the API is rendered with textContent, never as HTML.
"use strict";

const LIMIT = 10;
const PAGE = 20;
const state = { token: null, app: null, role: null, hooks: [], types: [], editing: null, cursor: null, current: null, pages: [], deadSeq: 0, filter: {}, detail: null, health: null, range: "24h" };

const $ = (id) => document.getElementById(id);

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) if (c != null) node.append(c);
  return node;
}

function show(id, visible) { $(id).hidden = !visible; }

function status(text, bad) {
  const s = $("status");
  s.textContent = text || "";
  s.classList.toggle("bad", !!bad);
}

class ApiError extends Error {
  constructor(status, body) {
    const e = (body && body.error) || {};
    super(e.message || `HTTP ${status}`);
    this.status = status;
    this.code = e.code || "http_" + status;
    this.field = e.field || null;
  }
}

async function api(method, path, body) {
  const init = { method, headers: { Authorization: "Bearer " + state.token } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, { error: { code: "network", message: "The service did not answer: " + e.message } });
  }
  if (res.status === 204) return null;
  const data = await res.json().catch(() => null);
  if (res.status === 401 && state.role) {
    // Revoked or wrong token while signed in: back to the sign-in form.
    signOut("Your session ended (the token is no longer valid). Sign in again.");
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

const appPath = () => "/v1/applications/" + encodeURIComponent(state.app) + "/webhooks";

// ---- sign-in ----

async function signIn(token, app) {
  state.token = token;
  const me = await api("GET", "/v1/me");
  state.role = me.role;
  state.app = me.application_id || app || null;
  sessionStorage.setItem("wf.token", token);
  if (state.app) sessionStorage.setItem("wf.app", state.app);
  else sessionStorage.removeItem("wf.app");
}

// Reloading drops every trace of the session from the page (a secret still
// in its box, forms, dead letters); the message survives in the tab.
function signOut(message) {
  sessionStorage.removeItem("wf.token");
  sessionStorage.removeItem("wf.app");
  if (typeof message === "string") sessionStorage.setItem("wf.flash", message);
  location.hash = "";
  location.reload();
}

async function onSignIn(ev) {
  ev.preventDefault();
  const token = $("signin-token").value.trim();
  const app = $("signin-app").value.trim();
  $("signin-error").textContent = "";
  if (!token) { $("signin-error").textContent = "Paste an API token."; return; }
  try {
    await signIn(token, app);
    $("signin-token").value = "";
    route();
  } catch (e) {
    state.token = null;
    $("signin-error").textContent = e.status === 401 ? "This token is not valid." : e.message;
  }
}

// ---- layout ----

function route() {
  status("");
  hideViews();
  show("nav", !!state.token);
  if (!state.token) { show("view-signin", true); $("signin-token").focus(); return; }
  $("who").textContent = state.role + (state.app ? " · " + state.app : "");
  show("nav-webhooks", !!state.app);
  show("nav-dead", state.role === "operator");
  if (location.hash === "#dead-letters" && state.role === "operator") return openDead();
  if (state.app) return openWebhooks();
  if (state.role === "operator") return openDead();
}

// ---- webhooks ----

const canWrite = () => state.role === "admin" || state.role === "operator";

async function openWebhooks() {
  location.hash = "#webhooks";
  show("view-webhooks", true);
  $("app-name").textContent = state.app;
  status("Loading webhooks…");
  try {
    if (!state.types.length) state.types = await api("GET", "/v1/event-types");
    state.hooks = await api("GET", appPath());
    status("");
  } catch (e) {
    status("Could not load the webhooks: " + e.message, true);
    for (const id of ["webhooks-empty", "webhooks-table", "create-open", "limit-reached"]) show(id, false);
    $("limit").textContent = "";
    return;
  }
  renderWebhooks();
}

function renderWebhooks() {
  const n = state.hooks.length;
  const full = n >= LIMIT;
  $("limit").textContent = `${n} of ${LIMIT} webhooks`;
  show("create-open", canWrite());
  $("create-open").disabled = full;
  show("limit-reached", canWrite() && full);
  $("limit-reached").textContent = `This application has ${LIMIT} webhooks, the most allowed. Delete one to create another.`;
  const empty = $("webhooks-empty");
  empty.textContent = canWrite() ? "No webhooks yet: create one." : "No webhooks yet.";
  show("webhooks-empty", n === 0);
  show("webhooks-table", n > 0);
  const rows = $("webhooks-rows");
  rows.replaceChildren(...state.hooks.map(hookRow));
}

const DISABLED_WHY = {
  gone: "the receiver answered 410 Gone",
  receiver_requested: "the receiver asked to disable it",
  failing: "every delivery kept failing",
  admin: "disabled by an admin",
};

// Whether the webhook's client certificate expires within 30 days (or has).
const CERT_WARNING_MS = 30 * 24 * 3600 * 1000;
const certExpiresSoon = (h) => !!h.tls_client && new Date(h.tls_client.not_after) - Date.now() <= CERT_WARNING_MS;

function certFlag(h, cell) {
  if (!certExpiresSoon(h)) return;
  const at = new Date(h.tls_client.not_after);
  const text = at <= Date.now() ? "certificate expired" : "certificate expires soon";
  cell.append(el("span", { class: "flag warn", text, title: `The client certificate (${h.tls_client.subject}) expires ${at.toLocaleString()}: renew it, or its receiver will refuse the deliveries` }));
}

// "yes", "yes · failing", or "no: why, since when".
function stateCell(h) {
  const cell = el("td", { "data-label": "Enabled", class: "state" });
  certFlag(h, cell);
  if (h.enabled) {
    cell.append(el("span", { text: "yes" }));
    if (h.failing) cell.append(el("span", { class: "flag bad", text: "failing", title: "Its recent deliveries all failed" }));
    healthBadge(h, cell);
    return cell;
  }
  const why = DISABLED_WHY[h.disabled_reason] || h.disabled_reason || "disabled";
  const since = h.disabled_at ? " since " + new Date(h.disabled_at).toLocaleString() : "";
  cell.append(el("span", { class: "flag bad", text: "disabled" }));
  healthBadge(h, cell);
  cell.append(el("span", { class: "why", text: `${why}${since}` }));
  return cell;
}

function hookRow(h) {
  const actions = el("td");
  if (canWrite()) {
    const result = el("div", { class: "result", "aria-live": "polite" });
    const buttons = [el("button", { type: "button", text: "Send a test", onclick: () => sendTest(h, result) }),
      el("button", { type: "button", text: "Edit", onclick: () => openForm(h) })];
    if (h.enabled) {
      buttons.push(el("button", { type: "button", text: "Disable", onclick: () => toggle(h) }));
    } else {
      buttons.push(el("button", { type: "button", text: "Re-enable", onclick: () => toggle(h) }));
      const catchUp = el("button", { type: "button", class: "catch-up", text: "Re-enable and replay the missed events", onclick: () => enableAndReplay(h, catchUp, result) });
      buttons.push(catchUp);
      countMissed(h, catchUp);
    }
    buttons.push(el("button", { type: "button", text: "History", onclick: () => openHook(h) }),
      el("button", { type: "button", text: "Rotate secret", onclick: () => rotate(h) }),
      el("button", { type: "button", class: "danger", text: "Delete", onclick: () => remove(h) }));
    actions.append(el("div", { class: "actions" }, ...buttons), result);
  }
  if (!canWrite()) actions.append(el("button", { type: "button", text: "History", onclick: () => openHook(h) }));
  return el("tr", { "data-id": h.id },
    el("td", { "data-label": "Name", text: h.name || "(no name)" }),
    el("td", { "data-label": "URL", class: "url", text: h.url }),
    el("td", { "data-label": "Events", text: h.events.join(", ") }),
    stateCell(h),
    el("td", { "data-label": "Created", text: new Date(h.created_at).toLocaleString() }),
    actions);
}

const hookPath = (h) => appPath() + "/" + encodeURIComponent(h.id);

// A coloured dot and the last 24 h success ratio, filled in when the
// health answers.
function healthBadge(h, cell) {
  const badge = el("span", { class: "health unknown", text: "…", title: "Health of the last 24 hours" });
  cell.append(badge);
  api("GET", hookPath(h) + "/health").then((x) => {
    const [cls, text] = healthLook(x);
    badge.className = "health " + cls;
    badge.textContent = text;
  }, () => { badge.textContent = ""; });
}

function healthLook(x) {
  if (x.breaker !== "closed") return ["bad", "circuit " + x.breaker.replace("_", "-")];
  if (!x.requests_24h) return ["unknown", "no requests in 24 h"];
  const pct = (100 * x.success_ratio_24h).toFixed(1) + "% ok (24 h)";
  if (x.success_ratio_24h >= 0.99) return ["ok", pct];
  if (x.success_ratio_24h >= 0.9) return ["warn", pct];
  return ["bad", pct];
}

// ---- one webhook: health, chart, attempts ----

async function openHook(h) {
  state.hook = h;
  state.attemptCursor = null;
  hideViews();
  show("view-hook", true);
  $("hook-title").textContent = h.name || "(no name)";
  $("hook-url").textContent = h.url;
  $("a-status").value = "";
  $("a-event").value = "";
  try {
    const x = await api("GET", hookPath(h) + "/health");
    const when = (t) => (t ? new Date(t).toLocaleString() : "never");
    const pct = (r) => (r == null ? "no requests" : (100 * r).toFixed(1) + "%");
    const facts = [["State", healthLook(x)[1]], ["Success, last hour", `${pct(x.success_ratio_1h)} of ${x.requests_1h}`],
      ["Success, last 24 h", `${pct(x.success_ratio_24h)} of ${x.requests_24h}`],
      ["Duration, last hour", x.duration_p50_ms_1h == null ? "no requests" : `p50 ${x.duration_p50_ms_1h} ms, p99 ${x.duration_p99_ms_1h} ms`],
      ["Last success", when(x.last_success_at)], ["Last failure", when(x.last_failure_at) + (x.last_error ? " · " + x.last_error : "")],
      ["Circuit breaker", x.breaker.replace("_", "-")], ["Waiting in retry tiers", String(x.waiting_in_retry)],
      ["Backlog", `${x.backlog} job${x.backlog === 1 ? "" : "s"} waiting`],
      ["Rate limit", h.rate_limit ? `${h.rate_limit.requests} per ${h.rate_limit.per}` : "none"],
      ["Filter", h.filter || "none: every event of its types"],
      ["Extra headers", Object.keys(h.headers || {}).join(", ") || "none"],
      ["Receiver authentication", h.auth ? `OAuth2 client ${h.auth.client_id} at ${h.auth.token_url}` : "none"],
      ["Client certificate", h.tls_client ? `${h.tls_client.subject}, expires ${new Date(h.tls_client.not_after).toLocaleString()}`
        + (certExpiresSoon(h) ? " (within 30 days: renew it)" : "") : "none"]];
    $("hook-health").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
    state.health = x;
    drawChart();
  } catch (e) { status("Could not load the health: " + e.message, true); }
  await loadAttempts(false);
}

// The chart's ranges: the buckets each draws from, their width and count,
// and the ticks under it.
const RANGES = {
  "1h": { field: "buckets", slot: 300000, slots: 12, title: "Last hour", per: "5 minutes",
    ticks: ["1 h ago", "30 min ago"] },
  "24h": { field: "buckets", slot: 300000, slots: 288, title: "Last 24 hours", per: "5 minutes",
    ticks: ["24 h ago", "12 h ago"] },
  "7d": { field: "buckets_7d", slot: 3600000, slots: 168, title: "Last 7 days", per: "hour",
    ticks: ["7 days ago", "3½ days ago"] },
};

function setRange(range) {
  state.range = range;
  for (const b of document.querySelectorAll(".range button")) b.setAttribute("aria-pressed", String(b.dataset.range === range));
  if (state.health) drawChart();
}

// Successes stacked under failures, one bar per bucket of the chosen range
// (1 h and 24 h: 5 minutes; 7 d: an hour), drawn as SVG by the page itself.
function drawChart() {
  const r = RANGES[state.range || "24h"];
  const buckets = state.health[r.field] || [];
  const NS = "http://www.w3.org/2000/svg";
  const svg = (tag, attrs) => { const n = document.createElementNS(NS, tag); for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v)); return n; };
  const width = 576, height = 120, slot = r.slot, slots = r.slots;
  const end = Math.floor(Date.now() / slot) * slot + slot;
  const start = end - slots * slot;
  const shown = buckets.filter((b) => { const i = Math.floor((Date.parse(b.at) - start) / slot); return i >= 0 && i < slots; });
  const top = Math.max(1, ...shown.map((b) => b.successes + b.failures));
  const chart = svg("svg", { viewBox: `0 0 ${width} ${height + 16}`, width: "100%", class: "bars" });
  chart.append(svg("line", { x1: 0, y1: height, x2: width, y2: height, class: "axis" }));
  for (const b of shown) {
    const i = Math.floor((Date.parse(b.at) - start) / slot);
    const x = (i * width) / slots, w = Math.max(1, width / slots - 0.5);
    const hs = (b.successes / top) * height, hf = (b.failures / top) * height;
    const ok = svg("rect", { x, y: height - hs, width: w, height: hs, class: "ok" });
    const bad = svg("rect", { x, y: height - hs - hf, width: w, height: hf, class: "bad" });
    const title = svg("title", {});
    title.textContent = `${new Date(b.at).toLocaleString()}: ${b.successes} ok, ${b.failures} failed`;
    bad.append(title);
    chart.append(ok, bad);
  }
  for (const [x, label] of [[0, r.ticks[0]], [width / 2, r.ticks[1]], [width - 30, "now"]]) {
    const t = svg("text", { x, y: height + 13, class: "tick" });
    t.textContent = label;
    chart.append(t);
  }
  $("chart-title").textContent = r.title;
  $("hook-chart").setAttribute("aria-label", `Successful and failed requests per ${r.per} over the ${r.title.toLowerCase()}`);
  $("hook-chart").replaceChildren(chart);
  $("hook-chart").dataset.bars = String(shown.length);
}

async function loadAttempts(more) {
  const h = state.hook;
  const q = new URLSearchParams({ limit: String(PAGE) });
  if ($("a-status").value) q.set("status", $("a-status").value);
  if ($("a-event").value.trim()) q.set("event_id", $("a-event").value.trim());
  if (more && state.attemptCursor) q.set("cursor", state.attemptCursor);
  try {
    const page = await api("GET", hookPath(h) + "/attempts?" + q);
    const rows = page.items.map(attemptRow);
    if (more) $("attempt-rows").append(...rows);
    else $("attempt-rows").replaceChildren(...rows);
    state.attemptCursor = page.next_cursor;
    const any = $("attempt-rows").children.length > 0;
    show("attempts-table", any);
    show("attempts-empty", !any);
    show("attempts-more", !!page.next_cursor);
  } catch (e) { status("Could not load the attempts: " + e.message, true); }
}

function attemptRow(a) {
  const ok = a.sent && !a.error_class;
  const summary = !a.sent ? "not sent" : a.status != null ? "HTTP " + a.status : a.error_class;
  const result = el("details", {}, el("summary", { class: ok ? "ok" : "bad", text: summary }),
    el("dl", { class: "facts" },
      el("dt", { text: "Error" }), el("dd", { text: a.error || "none" }),
      el("dt", { text: "Class" }), el("dd", { text: a.error_class || "success" }),
      el("dt", { text: "Type" }), el("dd", { text: a.type }),
      el("dt", { text: "Request sent" }), el("dd", { text: a.sent ? "yes" : "no" })));
  return el("tr", { "data-event": a.event_id },
    el("td", { "data-label": "At", text: new Date(a.at).toLocaleString() }),
    el("td", { "data-label": "Event", class: "mono", text: a.event_id }),
    el("td", { "data-label": "Attempt", text: String(a.attempt) }),
    el("td", { "data-label": "Result" }, result),
    el("td", { "data-label": "Duration", text: a.duration_ms + " ms" }),
    el("td", { "data-label": "Kind", text: a.kind }));
}
const events = (n) => `${n} event${n === 1 ? "" : "s"}`;

// How many dead letters a catch-up would replay, without replaying.
async function missed(h) {
  const r = await api("POST", hookPath(h) + "/replay", { dry_run: true });
  return r.total;
}

async function countMissed(h, button) {
  try {
    const n = await missed(h);
    button.dataset.count = String(n);
    button.textContent = `Re-enable and replay the ${events(n)} it missed`;
  } catch (e) { button.title = "Could not count the missed events: " + e.message; }
}

async function enableAndReplay(h, button, out) {
  out.className = "result";
  try {
    const n = await missed(h);
    if (!confirm(`Re-enable "${h.name || h.url}" and replay the ${events(n)} it missed, oldest first?`)) return;
    button.disabled = true;
    await api("PATCH", hookPath(h), { enabled: true });
    const started = await api("POST", hookPath(h) + "/replay", {});
    out.textContent = `Re-enabled. Replaying ${events(started.total)}…`;
    await followReplay(h, out);
  } catch (e) {
    out.textContent = e.message;
    out.classList.add("bad");
    button.disabled = false;
  }
}

// Polls the catch-up until it is done, then reloads the list.
async function followReplay(h, out) {
  for (;;) {
    const p = await api("GET", hookPath(h) + "/replay");
    out.textContent = p.state === "running" ? `Replaying: ${p.replayed} of ${p.total}…` : `Re-enabled; replayed ${p.replayed} of ${events(p.total)}.`;
    if (p.state !== "running") break;
    await new Promise((r) => setTimeout(r, 1000));
  }
  const message = out.textContent;
  await reloadHooks();
  status(message);
}

function groupedTypes() {
  const groups = new Map();
  for (const t of state.types.filter((t) => t.subscribable !== false)) {
    const area = t.area || "Other";
    if (!groups.has(area)) groups.set(area, []);
    groups.get(area).push(t);
  }
  return groups;
}

function openForm(hook) {
  state.editing = hook || null;
  clearErrors();
  $("form-title").textContent = hook ? "Edit webhook" : "Create webhook";
  $("form-submit").textContent = hook ? "Save" : "Create";
  $("wh-url").value = hook ? hook.url : "";
  $("wh-name").value = hook ? hook.name || "" : "";
  $("wh-enabled").checked = hook ? hook.enabled : true;
  $("wh-ordered").checked = hook ? hook.ordering === "per_key" : false;
  $("wh-rate").value = hook && hook.rate_limit ? String(hook.rate_limit.requests) : "";
  $("wh-rate-per").value = hook && hook.rate_limit ? hook.rate_limit.per : "1m";
  $("wh-filter").value = hook && hook.filter ? hook.filter : "";
  $("wh-headers").value = hook ? Object.entries(hook.headers || {}).map(([k, v]) => `${k}: ${v}`).join("\n") : "";
  $("wh-cert").value = "";
  $("wh-key").value = "";
  $("wh-cert-remove").checked = false;
  $("wh-cert-now").textContent = hook && hook.tls_client
    ? `Now: ${hook.tls_client.subject}, expires ${new Date(hook.tls_client.not_after).toLocaleString()}. Leave both empty to keep it.` : "";
  show("wh-cert-remove-row", !!(hook && hook.tls_client));
  $("filter-try-result").textContent = "";
  if (!$("wh-filter-event").value) {
    const type = hook && hook.events.length ? hook.events[0] : "payment.transaction.updated";
    $("wh-filter-event").value = JSON.stringify({ type, content: { status: "ACSC" } }, null, 2);
  }
  const chosen = new Set(hook ? hook.events : []);
  const groups = [];
  for (const [area, types] of groupedTypes()) {
    const box = el("div", { class: "group" }, el("h4", { text: area }));
    for (const t of types) {
      const input = el("input", { type: "checkbox", name: "events", value: t.type });
      input.checked = chosen.has(t.type);
      box.append(el("label", {}, input, el("span", { text: t.type }), el("span", { class: "hint", text: t.description || "" })));
    }
    groups.push(box);
  }
  $("event-groups").replaceChildren(...groups);
  show("webhook-form", true);
  $("wh-url").focus();
}

function closeForm() { show("webhook-form", false); state.editing = null; }

function clearErrors() {
  for (const f of ["url", "name", "events", "rate", "filter", "headers", "cert", "form"]) $("err-" + f).textContent = "";
  for (const id of ["wh-url", "wh-name", "wh-events", "wh-rate", "wh-filter", "wh-headers", "wh-cert"]) $(id).removeAttribute("aria-invalid");
}

function fieldError(e) {
  const known = { url: "url", name: "name", events: "events", rate_limit: "rate", filter: "filter", headers: "headers", tls_client: "cert" };
  const key = e.field && known[e.field.split(/[.[]/)[0]];
  $("err-" + (key || "form")).textContent = e.message;
  if (key) $("wh-" + key).setAttribute("aria-invalid", "true");
  if (["url", "name", "rate", "filter", "headers", "cert"].includes(key)) $("wh-" + key).focus();
}

// "Name: value" lines as a headers object (a line without a colon is
// sent as a name with an empty value, for the service to refuse by name).
function parseHeaders(text) {
  const headers = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf(":");
    headers[(at < 0 ? line : line.slice(0, at)).trim()] = at < 0 ? "" : line.slice(at + 1).trim();
  }
  return headers;
}

// Tries the form's filter on the example event (filter-check); saves nothing.
async function tryFilter() {
  const out = $("filter-try-result");
  $("err-filter").textContent = "";
  $("wh-filter").removeAttribute("aria-invalid");
  const filter = $("wh-filter").value.trim();
  if (!filter) { out.textContent = "No filter: every event of the chosen types is sent."; return; }
  let event;
  try { event = JSON.parse($("wh-filter-event").value); }
  catch (e) { out.textContent = "The example event is not JSON: " + e.message; return; }
  try {
    const r = await api("POST", appPath() + "/filter-check", { filter, event });
    out.textContent = r.matches ? "Matches: this event would be sent."
      : "No match: this event would not be sent (a field the filter reads that is missing counts as no match).";
  } catch (e) {
    out.textContent = "";
    fieldError(e);
  }
}

async function onSubmitForm(ev) {
  ev.preventDefault();
  clearErrors();
  const body = {
    url: $("wh-url").value.trim(),
    name: $("wh-name").value.trim() || null,
    events: [...document.querySelectorAll("#event-groups input:checked")].map((i) => i.value),
    enabled: $("wh-enabled").checked,
    ordering: $("wh-ordered").checked ? "per_key" : "none",
    rate_limit: $("wh-rate").value.trim() === "" ? null
      : { requests: Number($("wh-rate").value), per: $("wh-rate-per").value },
    filter: $("wh-filter").value.trim() || null,
    headers: parseHeaders($("wh-headers").value),
  };
  // The client certificate: both texts replace it, "remove" clears it, and
  // neither keeps what is there (its key is never shown again).
  const cert = $("wh-cert").value.trim(), key = $("wh-key").value.trim();
  if (cert || key) body.tls_client = { cert_pem: cert, key_pem: key };
  else if ($("wh-cert-remove").checked) body.tls_client = null;
  if (body.name === null && !state.editing) delete body.name;
  const submit = $("form-submit");
  submit.disabled = true;
  try {
    if (state.editing) {
      await api("PATCH", appPath() + "/" + encodeURIComponent(state.editing.id), body);
    } else {
      const created = await api("POST", appPath(), body);
      showSecret(created.secret, false);
    }
    const saved = state.editing ? "Webhook saved." : "Webhook created.";
    closeForm();
    await reloadHooks();
    status(saved);
  } catch (e) {
    if (e.code === "webhook_limit_reached") $("err-form").textContent = e.message;
    else fieldError(e);
  } finally {
    submit.disabled = false;
  }
}

async function reloadHooks() {
  try { state.hooks = await api("GET", appPath()); } catch (e) { status("Could not reload: " + e.message, true); }
  renderWebhooks();
}

function showSecret(secret, rotated) {
  $("secret-title").textContent = rotated ? "New signing secret" : "Signing secret";
  $("secret-value").value = secret;
  show("secret-warning", rotated);
  show("secret-box", true);
  $("secret-value").focus();
  $("secret-value").select();
}

async function copySecret() {
  const v = $("secret-value").value;
  try { await navigator.clipboard.writeText(v); status("Secret copied."); }
  catch { $("secret-value").select(); status("Select the secret and copy it (Ctrl+C)."); }
}

async function toggle(h) {
  try {
    await api("PATCH", appPath() + "/" + encodeURIComponent(h.id), { enabled: !h.enabled });
    status(h.enabled ? "Webhook disabled." : "Webhook re-enabled.");
    await reloadHooks();
  } catch (e) { status(e.message, true); }
}

async function rotate(h) {
  if (!confirm(`Rotate the secret of "${h.name || h.url}"? The current one stays valid for 24 hours.`)) return;
  try {
    const r = await api("POST", appPath() + "/" + encodeURIComponent(h.id) + "/rotate-secret");
    showSecret(r.secret, true);
    status("Secret rotated.");
  } catch (e) { status(e.message, true); }
}

async function remove(h) {
  if (!confirm(`Delete the webhook "${h.name || h.url}"? Its pending deliveries are dropped.`)) return;
  try {
    await api("DELETE", appPath() + "/" + encodeURIComponent(h.id));
    status("Webhook deleted.");
    await reloadHooks();
  } catch (e) { status(e.message, true); }
}

async function sendTest(h, out) {
  out.className = "result";
  out.textContent = "Sending the test event…";
  try {
    const r = await api("POST", appPath() + "/" + encodeURIComponent(h.id) + "/test");
    const parts = [r.delivered ? "Delivered" : "Not delivered"];
    if (r.status != null) parts.push("HTTP " + r.status);
    parts.push(r.duration_ms + " ms");
    if (r.error) parts.push(r.error);
    out.textContent = parts.join(" · ");
    out.classList.add(r.delivered ? "ok" : "bad");
  } catch (e) {
    out.textContent = "Test failed: " + e.message;
    out.classList.add("bad");
  }
}

// ---- dead letters (operator) ----

function filterQuery(extra) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(state.filter)) if (v) q.set(k, v);
  for (const [k, v] of Object.entries(extra || {})) if (v != null) q.set(k, v);
  return q.toString();
}

async function openDead() {
  location.hash = "#dead-letters";
  show("view-dead", true);
  if (!$("f-app").value && state.app && !state.filter.application_id) $("f-app").value = state.app;
  readFilter();
  await firstPage();
}

function readFilter() {
  state.filter = { application_id: $("f-app").value.trim(), webhook_id: $("f-webhook").value.trim(), type: $("f-type").value.trim() };
}

// `state.pages` holds the cursors of the pages before this one (`null` for
// the first page). Replies to superseded requests are dropped.
async function loadDead(cursor) {
  const seq = ++state.deadSeq;
  status("Loading dead letters…");
  try {
    const page = await api("GET", "/v1/dead-letters?" + filterQuery({ limit: PAGE, cursor }));
    if (seq !== state.deadSeq) return;
    status("");
    state.current = cursor;
    state.cursor = page.next_cursor;
    show("dead-next", !!page.next_cursor);
    show("dead-prev", state.pages.length > 0);
    show("dead-empty", page.items.length === 0);
    show("dead-table", page.items.length > 0);
    $("dead-rows").replaceChildren(...page.items.map(deadRow));
  } catch (e) {
    if (seq !== state.deadSeq) return;
    for (const id of ["dead-table", "dead-next", "dead-prev", "dead-empty"]) show(id, false);
    status("Could not load dead letters: " + e.message, true);
  }
}

function firstPage() { state.pages = []; return loadDead(null); }
function nextPage() { state.pages.push(state.current); loadDead(state.cursor); }
function prevPage() { loadDead(state.pages.pop() ?? null); }

function deadRow(d) {
  return el("tr", { "data-id": d.id },
    el("td", { "data-label": "Dead-lettered", text: new Date(d.dead_lettered_at).toLocaleString() }),
    el("td", { "data-label": "Application", text: d.application_id }),
    el("td", { "data-label": "Webhook", class: "mono", text: d.webhook_id }),
    el("td", { "data-label": "Type", text: d.type }),
    el("td", { "data-label": "Attempts", text: String(d.attempts) }),
    el("td", { "data-label": "Last error", text: d.last_error || d.reason || "" }),
    el("td", {}, el("button", { type: "button", text: "Open", onclick: () => openDetail(d.id) })));
}

async function openDetail(id) {
  try {
    const d = await api("GET", "/v1/dead-letters/" + encodeURIComponent(id));
    state.detail = d;
    $("dl-id").textContent = d.id;
    const facts = [["Event", d.event_id], ["Application", d.application_id], ["Webhook", d.webhook_id], ["Type", d.type],
      ["Reason", d.reason], ["Attempts", String(d.attempts)], ["Last status", d.last_status == null ? "none" : String(d.last_status)],
      ["Last error", d.last_error || "none"], ["Received", d.received_at], ["Dead-lettered", d.dead_lettered_at]];
    $("dl-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v == null ? "" : String(v) })]));
    $("dl-history").replaceChildren(...(d.history || []).map((a) => el("tr", {},
      el("td", { text: a.at }), el("td", { text: a.status == null ? "none" : String(a.status) }),
      el("td", { text: a.duration_ms + " ms" }), el("td", { text: a.error || "" }))));
    $("dl-body").textContent = JSON.stringify(d.body, null, 2);
    show("dead-detail", true);
    $("dl-replay").focus();
  } catch (e) { status(e.message, true); }
}

async function resolveOne(action) {
  const d = state.detail;
  if (!d) return;
  const verb = action === "replay" ? "Replay" : "Discard";
  if (!confirm(`${verb} this dead letter (event ${d.event_id})?`)) return;
  try {
    if (action === "replay") await api("POST", "/v1/dead-letters/" + encodeURIComponent(d.id) + "/replay");
    else await api("DELETE", "/v1/dead-letters/" + encodeURIComponent(d.id));
    show("dead-detail", false);
    state.detail = null;
    await firstPage();
    status(action === "replay" ? "Replayed: the delivery is queued again." : "Discarded.");
  } catch (e) { status(e.message, true); }
}

async function matchingIds() {
  const ids = [];
  let cursor = null;
  do {
    const page = await api("GET", "/v1/dead-letters?" + filterQuery({ limit: 100, cursor }));
    ids.push(...page.items.map((d) => d.id));
    cursor = page.next_cursor;
  } while (cursor);
  return ids;
}

function describeFilter(f) {
  const parts = [["application", f.application_id], ["webhook", f.webhook_id], ["type", f.type]].filter(([, v]) => v).map(([k, v]) => `${k} ${v}`);
  return parts.length ? "matching " + parts.join(", ") : "(ALL dead letters: no filter is set)";
}

async function resolveAll(action) {
  // The filter as shown in the form, applied to the listing too.
  readFilter();
  const filter = { ...state.filter };
  const buttons = [$("replay-all"), $("discard-all")];
  buttons.forEach((b) => { b.disabled = true; });
  status("Counting matching dead letters…");
  try {
    const ids = await matchingIds();
    status("");
    if (!ids.length) { status("No dead letters match."); await firstPage(); return; }
    const verb = action === "replay" ? "Replay" : "Discard";
    if (!confirm(`${verb} ${ids.length} dead letter${ids.length === 1 ? "" : "s"} ${describeFilter(filter)}?`)) { await firstPage(); return; }
    let message;
    if (action === "replay") {
      const body = {};
      for (const [k, v] of Object.entries(filter)) if (v) body[k] = v;
      const r = await api("POST", "/v1/dead-letters/replay", body);
      message = `Replayed ${r.replayed}.`;
      if (r.skipped_webhook_deleted) message += ` ${r.skipped_webhook_deleted} skipped: their webhook was deleted.`;
    } else {
      let done = 0;
      for (const id of ids) {
        try { await api("DELETE", "/v1/dead-letters/" + encodeURIComponent(id)); done++; }
        catch (e) { if (e.status !== 404) throw e; done++; }
      }
      message = `Discarded ${done} of ${ids.length}.`;
    }
    await firstPage();
    status(message);
  } catch (e) {
    status(e.message, true);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// ---- wiring ----

function init() {
  $("signin-form").addEventListener("submit", onSignIn);
  $("sign-out").addEventListener("click", signOut);
  $("nav-webhooks").addEventListener("click", openWebhooksView);
  for (const b of document.querySelectorAll(".range button")) b.addEventListener("click", () => setRange(b.dataset.range));
  $("nav-dead").addEventListener("click", () => { hideViews(); openDead(); });
  $("create-open").addEventListener("click", () => openForm(null));
  $("form-cancel").addEventListener("click", closeForm);
  $("webhook-form").addEventListener("submit", onSubmitForm);
  $("filter-try-run").addEventListener("click", tryFilter);
  $("secret-copy").addEventListener("click", copySecret);
  $("secret-done").addEventListener("click", () => { show("secret-box", false); $("secret-value").value = ""; });
  $("dead-filters").addEventListener("submit", (ev) => { ev.preventDefault(); readFilter(); show("dead-detail", false); firstPage(); });
  $("dead-next").addEventListener("click", nextPage);
  $("dead-prev").addEventListener("click", prevPage);
  $("replay-all").addEventListener("click", () => resolveAll("replay"));
  $("discard-all").addEventListener("click", () => resolveAll("discard"));
  $("dl-replay").addEventListener("click", () => resolveOne("replay"));
  $("dl-discard").addEventListener("click", () => resolveOne("discard"));
  $("dl-close").addEventListener("click", () => show("dead-detail", false));
  $("hook-back").addEventListener("click", openWebhooksView);
  $("attempt-filters").addEventListener("submit", (ev) => { ev.preventDefault(); loadAttempts(false); });
  $("attempts-more").addEventListener("click", () => loadAttempts(true));
  const flash = sessionStorage.getItem("wf.flash");
  sessionStorage.removeItem("wf.flash");
  const token = sessionStorage.getItem("wf.token");
  if (token) {
    signIn(token, sessionStorage.getItem("wf.app")).then(route, (e) => {
      state.token = null;
      route();
      $("signin-error").textContent = e.status === 401 ? "Your session ended. Sign in again." : "Could not reach the service: " + e.message;
    });
  } else {
    route();
    if (flash) $("signin-error").textContent = flash;
  }
}

function hideViews() { for (const v of ["view-signin", "view-webhooks", "view-dead", "view-hook"]) show(v, false); }
function openWebhooksView() { hideViews(); openWebhooks(); }

document.addEventListener("DOMContentLoaded", init);
