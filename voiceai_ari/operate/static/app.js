// The voiceai-ari dashboard: plain ES module, no framework, no build step.
// Data comes from the control API (same origin). The bearer token, when the API needs one, is pasted by the
// user, kept in sessionStorage (this tab only) and sent as an Authorization header; the server never puts it
// in the page. Live updates are Server-Sent Events read with fetch(), so that header can be sent.

const $ = (sel) => document.querySelector(sel);
const TOKEN_KEY = "voiceai-control-token";
const state = { info: null, calls: new Map(), view: null, stream: null, callStream: null };

// --- talking to the API ---------------------------------------------------------------------------------
function headers(extra = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

class Unauthorized extends Error {}

async function api(path, { method = "GET", body } = {}) {
  const opts = { method, headers: headers(body === undefined ? {} : { "Content-Type": "application/json" }) };
  if (body !== undefined) opts.body = JSON.stringify(body);
  const r = await fetch(path, opts);
  if (r.status === 401) throw new Unauthorized("token required");
  const data = r.headers.get("Content-Type")?.includes("json") ? await r.json() : await r.text();
  if (!r.ok) throw new Error(`${r.status}: ${data.error ?? data}`);
  return data;
}

// Reads a text/event-stream with fetch; calls onEvent(type, data) per event until the stream ends or the
// AbortController fires. Resolves when the stream ends.
async function sse(path, onEvent, abort) {
  const r = await fetch(path, { headers: headers({ Accept: "text/event-stream" }), signal: abort.signal });
  if (r.status === 401) throw new Unauthorized("token required");
  if (!r.ok) throw new Error(`${r.status}`);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf("\n\n")) >= 0) {
      const block = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      let type = "message", data = "";
      for (const line of block.split("\n")) {
        if (line.startsWith("event: ")) type = line.slice(7);
        else if (line.startsWith("data: ")) data += line.slice(6);
      }
      if (data) onEvent(type, JSON.parse(data));
    }
  }
}

// --- small helpers -----------------------------------------------------------------------------------------
function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("data-")) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}
const asText = (v) => (typeof v === "string" ? v : JSON.stringify(v));   // tool arguments and results
const money = (usd) => `$${(usd ?? 0).toFixed(4)}`;
function duration(s) {
  s = Math.max(0, Math.round(s ?? 0));
  const m = Math.floor(s / 60);
  return `${m}:${String(s % 60).padStart(2, "0")}`;
}
function meter(dbfs, label) {
  const pct = Math.max(0, Math.min(100, ((dbfs ?? -90) + 60) / 60 * 100));  // -60..0 dBFS
  const bar = el("span");
  bar.style.width = `${pct}%`;   // CSSOM, not a style attribute: allowed by the page's CSP
  return el("span", { class: "meter", title: `${label} ${dbfs} dBFS`, "data-dbfs": String(dbfs) }, bar);
}
function show(id) {
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.id !== id;
  $("#nav-live").classList.toggle("on", id === "live" || id === "call");
  $("#nav-history").classList.toggle("on", id === "history" || id === "past-call");
}
function setConn(text, ok) {
  $("#conn").textContent = text;
  $("#conn").classList.toggle("ok", ok);
}

// --- sign-in -------------------------------------------------------------------------------------------------
function showLogin(message = "") {
  stopStreams();
  state.info = null;
  show("login");
  $("#login-error").textContent = message;
  $("#forget").hidden = true;
  setConn("no token", false);
}

$("#login-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
  $("#token").value = "";
  start();
});
$("#forget").addEventListener("click", () => { sessionStorage.removeItem(TOKEN_KEY); showLogin(); });

// --- live calls ------------------------------------------------------------------------------------------------
function stopStreams() {
  state.stream?.abort();
  state.callStream?.abort();
  state.stream = state.callStream = null;
}

async function watchCalls() {
  for (let delay = 500; state.info; delay = Math.min(delay * 2, 5000)) {
    const abort = (state.stream = new AbortController());
    try {
      setConn("live", true);
      await sse("/dashboard/api/events", onCallsEvent, abort);
      delay = 500;
    } catch (e) {
      if (e instanceof Unauthorized) return showLogin("The token was refused.");
      if (abort.signal.aborted) return;
    }
    setConn("reconnecting", false);
    await new Promise((r) => setTimeout(r, delay));
  }
}

function onCallsEvent(type, data) {
  if (type === "snapshot") {
    state.calls = new Map(data.calls.map((c) => [c.id, c]));
    renderCalls();
  }
}

function renderCalls() {
  const body = $("#calls tbody");
  const rows = [...state.calls.values()];
  $("#count").textContent = rows.length ? `(${rows.length})` : "";
  $("#no-calls").hidden = rows.length > 0;
  body.replaceChildren(...rows.map((c) => el("tr", { "data-call": c.id, onclick: () => (location.hash = `#/call/${encodeURIComponent(c.id)}`) },
    el("td", { "data-label": "Caller" }, el("a", { href: `#/call/${encodeURIComponent(c.id)}` }, c.caller?.number || c.caller?.name || "unknown"),
      c.caller?.name && c.caller?.number && c.caller.name !== c.caller.number ? el("span", { class: "muted" }, ` ${c.caller.name}`) : null),
    el("td", { "data-label": "Duration", class: "duration" }, duration(c.duration_s)),
    el("td", { "data-label": "State" }, el("span", { class: `state ${c.state}` }, c.state)),
    el("td", { "data-label": "Model" }, `${c.provider} · ${c.model}`),
    el("td", { "data-label": "Transport" }, c.transport ?? ""),
    el("td", { "data-label": "Agent" }, c.agent ?? "—"),
    el("td", { "data-label": "Levels" }, meter(c.level_in_dbfs, "caller"), meter(c.level_out_dbfs, "bot")),
    el("td", { "data-label": "Cost", class: "cost" }, money(c.cost_usd)))));
  if (state.view?.kind === "call") renderCallFacts();
}

// --- one live call -------------------------------------------------------------------------------------------
function renderCallFacts() {
  const c = state.calls.get(state.view.id);
  if (!c) return;
  $("#call-title").textContent = c.id.startsWith("voiceai-out-") ? "Outbound call"
    : `Call from ${c.caller?.number || c.caller?.name || "unknown"}`;
  const facts = [["State", c.state], ["Duration", duration(c.duration_s)], ["Model", `${c.provider} · ${c.model}`],
    ["Transport", c.transport], ["Cost so far", money(c.cost_usd)], ["Started", c.started]];
  if (c.agent) facts.push(["Agent", c.agent]);
  $("#call-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "")]),
    el("dt", {}, "Levels"), el("dd", {}, meter(c.level_in_dbfs, "caller"), meter(c.level_out_dbfs, "bot")));
}

function recordItem(r) {
  const t = r.t !== undefined ? el("span", { class: "t" }, `${r.t.toFixed(1)}s`) : null;
  const li = (cls, ...parts) => el("li", { class: cls, "data-event": r.event }, t, ...parts);
  switch (r.event) {
    case "caller": return li("caller", el("b", {}, "Caller "), r.text);
    case "bot": return li("bot", el("b", {}, "Bot "), r.text);
    case "tool_call": return li(`tool ${r.ok ? "" : "failed"}`, el("b", {}, `Tool ${r.name} `),
      el("code", {}, asText(r.arguments)), " → ", el("code", {}, asText(r.result)));
    case "dtmf": return li("dtmf", el("b", {}, "Keypad "), r.digit);
    case "barge_in": return li("barge", el("b", {}, "Barge-in "), `bot cut after ${r.played_ms} ms`);
    case "error": return li("error", el("b", {}, "Error "), `${r.code}: ${r.message}`);
    case "response_failed": return li("error", el("b", {}, "Response failed "), `${r.code} (${r.action})`);
    case "fallback": return li("error", el("b", {}, "Fallback "), `${r.action}: ${r.reason}`);
    case "transfer": return li(`transfer ${r.ok ? "" : "failed"}`, el("b", {}, "Transfer "),
      `to ${r.target}: ${r.ok ? "the caller left the bot" : `failed (${r.reason})`} after ${r.ms} ms`);
    case "call_start": return li("meta", `Call started: ${r.caller_number || ""} ${r.caller_name || ""}`);
    case "call_end": return li("meta", `Call ended: ${r.reason} · ${money(r.cost_usd)}`);
    default: {
      const { ts, t: _t, event, ...rest } = r;
      return li("meta", el("b", {}, `${event} `), el("code", {}, JSON.stringify(rest)));
    }
  }
}

async function openCall(id) {
  state.view = { kind: "call", id };
  show("call");
  $("#timeline").replaceChildren();
  $("#action-result").textContent = "";
  $("#call-title").textContent = "Call";
  renderCallFacts();
  const targets = state.info?.transfer_targets ?? [];
  $("#transfer-target").replaceChildren(...targets.map((n) => el("option", { value: n }, n)));
  $("#act-transfer").hidden = targets.length === 0;
  state.callStream?.abort();
  const abort = (state.callStream = new AbortController());
  try {
    await sse(`/dashboard/api/calls/${encodeURIComponent(id)}/events`, (type, r) => {
      if (type !== "record" || r.event === "meta") {
        if (r.stem) state.view.stem = r.stem;
        return;
      }
      $("#timeline").append(recordItem(r));
      if (r.event === "call_end") callEnded();
    }, abort);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    if (!abort.signal.aborted) $("#action-result").textContent = "This call is not live (any more): see History.";
  }
}

function callEnded() {
  const c = state.calls.get(state.view?.id);
  if (c) {   // the last snapshot had it live: show it ended, meters at rest
    Object.assign(c, { state: "ended", level_in_dbfs: -90, level_out_dbfs: -90 });
    renderCallFacts();
    state.calls.delete(c.id);
  }
  $("#actions").classList.add("ended");
  for (const b of document.querySelectorAll("#actions button")) b.disabled = true;
  if (state.view?.stem) {
    $("#action-result").replaceChildren("The call has ended. ",
      el("a", { href: `#/history/${encodeURIComponent(state.view.stem)}` }, "Open it in history"));
  }
}

async function act(path, body, what) {
  const out = $("#action-result");
  out.textContent = `${what}…`;
  try {
    const r = await api(`/calls/${encodeURIComponent(state.view.id)}/${path}`, { method: "POST", body });
    out.textContent = `${what}: ${r.status}`;
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    out.textContent = `${what} failed: ${e.message}`;
  }
}

$("#act-hangup").addEventListener("click", () => act("hangup", {}, "Hang up"));
$("#act-transfer").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act("transfer", { target: $("#transfer-target").value }, "Transfer");
});
$("#act-say").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act("say", { text: $("#say-text").value }, "Say");
  $("#say-text").value = "";
});
$("#act-instructions").addEventListener("submit", (ev) => {
  ev.preventDefault();
  act("instructions", { text: $("#instr-text").value }, "Instructions");
});
$("#originate").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  try {
    const r = await api("/calls", { method: "POST", body: { target: $("#originate-target").value } });
    $("#originate-result").textContent = `dialling ${r.target}…`;
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    $("#originate-result").textContent = `call failed: ${e.message}`;
  }
});

// --- history ---------------------------------------------------------------------------------------------------
async function openHistory() {
  state.view = { kind: "history" };
  show("history");
  const q = $("#q").value.trim();
  let data;
  try {
    data = await api(`/dashboard/api/history?q=${encodeURIComponent(q)}`);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    throw e;
  }
  $("#days tbody").replaceChildren(...data.days.map((d) => el("tr", {},
    el("td", { "data-label": "Day" }, d.day), el("td", { "data-label": "Calls" }, String(d.calls)),
    el("td", { "data-label": "Minutes" }, (d.duration_s / 60).toFixed(1)),
    el("td", { "data-label": "Cost" }, money(d.cost_usd)))));
  $("#no-history").hidden = data.calls.length > 0;
  $("#past tbody").replaceChildren(...data.calls.map((c) => el("tr", { "data-name": c.name, onclick: () => (location.hash = `#/history/${encodeURIComponent(c.name)}`) },
    el("td", { "data-label": "Started" }, c.started.replace("T", " ").slice(0, 19)),
    el("td", { "data-label": "Caller" }, el("a", { href: `#/history/${encodeURIComponent(c.name)}` }, c.caller_number || c.caller_name || "unknown")),
    el("td", { "data-label": "Duration" }, duration(c.duration_s)),
    el("td", { "data-label": "Ended" }, c.reason),
    el("td", { "data-label": "Tools" }, String(c.tools)),
    el("td", { "data-label": "Cost", class: "cost" }, money(c.cost_usd)))));
}

$("#search").addEventListener("submit", (ev) => { ev.preventDefault(); openHistory(); });

async function openPastCall(name) {
  state.view = { kind: "past", name };
  show("past-call");
  $("#past-timeline").replaceChildren();
  $("#player").hidden = true;
  let d;
  try {
    d = await api(`/dashboard/api/history/${encodeURIComponent(name)}`);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The token was refused.");
    $("#past-title").textContent = `Not found: ${e.message}`;
    return;
  }
  $("#past-title").textContent = `Call from ${d.caller_number || d.caller_name || "unknown"}`;
  const usage = Object.entries(d.usage ?? {}).map(([k, v]) => `${k} ${v}`).join(", ") || "none";
  const facts = [["Started", d.started], ["Duration", duration(d.duration_s)], ["Ended because", d.reason],
    ["Cost", money(d.cost_usd)], ["Usage (tokens)", usage], ["Tools", String(d.tools)], ["Errors", String(d.errors)]];
  if (d.agent) facts.push(["Agent", d.agent]);
  $("#past-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", {}, k), el("dd", {}, v ?? "")]));
  $("#past-timeline").replaceChildren(...d.records.map(recordItem));
  if (d.recording) {   // fetched with the token, played from a blob: an <audio src> cannot send the header
    const r = await fetch(`/dashboard/api/history/${encodeURIComponent(name)}/recording`, { headers: headers() });
    if (r.ok) {
      $("#player").src = URL.createObjectURL(await r.blob());
      $("#player").hidden = false;
    }
  }
}

// --- routing -----------------------------------------------------------------------------------------------------
function route() {
  if (!state.info) return;
  state.callStream?.abort();
  $("#actions").classList.remove("ended");
  for (const b of document.querySelectorAll("#actions button")) b.disabled = false;
  const h = location.hash.replace(/^#\/?/, "");
  if (h.startsWith("call/")) return openCall(decodeURIComponent(h.slice(5)));
  if (h.startsWith("history/")) return openPastCall(decodeURIComponent(h.slice(8)));
  if (h === "history") return openHistory();
  state.view = { kind: "live" };
  show("live");
  renderCalls();
}
window.addEventListener("hashchange", route);

async function start() {
  try {
    state.info = await api("/dashboard/api/info");
  } catch (e) {
    if (e instanceof Unauthorized) {
      return showLogin(sessionStorage.getItem(TOKEN_KEY) ? "The token was refused." : "");
    }
    $("#login-error").textContent = e.message;
    return;
  }
  $("#forget").hidden = !state.info.token_required;
  const targets = state.info.originate_targets;
  $("#originate").hidden = targets.length === 0;
  $("#originate-target").replaceChildren(...targets.map((n) => el("option", { value: n }, n)));
  document.body.dataset.ready = "1";
  route();
  watchCalls();
}

start();
