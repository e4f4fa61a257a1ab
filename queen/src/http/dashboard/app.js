// The rbee dashboard. Everything live comes over server-sent events read with fetch()
// (not EventSource, which cannot send the Authorization header): the cluster from
// /v1/cluster/stream, a job's events from /v1/jobs/{id}/stream, chat replies from
// /v1/chat/completions. Nothing polls. Text from the cluster is only ever set as
// textContent, never parsed as HTML.
"use strict";

const TOKEN_KEY = "rbee.apiToken";

const $ = (id) => document.getElementById(id);

/// An element with attributes and children (strings become text nodes).
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "style") node.style.cssText = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// ---- API token ------------------------------------------------------------------

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function headers(extra) {
  const out = Object.assign({}, extra);
  const t = token();
  if (t) out.Authorization = "Bearer " + t;
  return out;
}

class Unauthorized extends Error {}

/// Shows the token form; `refused` says the stored token was wrong.
function askForToken(refused) {
  const hadToken = token() !== "";
  sessionStorage.removeItem(TOKEN_KEY);
  $("forget-token").hidden = true;
  $("token-error").hidden = !(refused && hadToken);
  $("token-error").textContent = "The queen refused that token.";
  $("token-panel").hidden = false;
  document.querySelector("main").hidden = true;
  setConnection("locked", "token needed");
  $("token-input").focus();
}

function tokenEntered(event) {
  event.preventDefault();
  const value = $("token-input").value.trim();
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  $("token-input").value = "";
  $("token-panel").hidden = true;
  document.querySelector("main").hidden = false;
  $("forget-token").hidden = false;
  followCluster();
}

function forgetToken() {
  cluster.abort();
  askForToken(false);
}

// ---- Server-sent events over fetch ------------------------------------------------

/// The error an API answered with, as one line ("message (hint: …)").
async function errorText(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    const detail = body.error || {};
    const message = detail.message || text;
    return detail.hint ? `${message} (hint: ${detail.hint})` : message;
  } catch (_) {
    return `${response.status} ${response.statusText}: ${text}`.trim();
  }
}

/// Fetches an SSE resource and yields its events ({event, data, id}) as they arrive.
async function* sse(url, init) {
  const response = await fetch(url, init);
  if (response.status === 401) throw new Unauthorized(await errorText(response));
  if (!response.ok) throw new Error(await errorText(response));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let frame = { event: "message", data: [], id: null };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.indexOf("\n")) >= 0) {
      const line = buffer.slice(0, end).replace(/\r$/, "");
      buffer = buffer.slice(end + 1);
      if (line === "") {
        if (frame.data.length > 0) {
          yield { event: frame.event, data: frame.data.join("\n"), id: frame.id };
        }
        frame = { event: "message", data: [], id: null };
        continue;
      }
      if (line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let text = colon < 0 ? "" : line.slice(colon + 1);
      if (text.startsWith(" ")) text = text.slice(1);
      if (field === "event") frame.event = text;
      else if (field === "data") frame.data.push(text);
      else if (field === "id") frame.id = text;
    }
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// ---- Formatting -------------------------------------------------------------------

function bytes(n) {
  if (!Number.isFinite(n) || n <= 0) return "0 B";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${units[i]}`;
}

function ago(unixMs) {
  const s = Math.max(0, Math.round((Date.now() - unixMs) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

function pill(state, text) {
  return el("span", { class: "pill", "data-state": state }, text || state);
}

/// A labelled bar: `used` of `total`.
function meter(label, used, total) {
  const share = total > 0 ? Math.min(100, Math.max(0, (used / total) * 100)) : 0;
  return el(
    "div",
    { class: "meter" },
    el("div", { class: "label" }, el("span", {}, label), el("span", { class: "mono" }, `${bytes(used)} / ${bytes(total)}`)),
    el(
      "div",
      { class: "bar", role: "meter", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": share.toFixed(0), "aria-label": label },
      el("div", { class: "fill", style: `width: ${share.toFixed(1)}%` }),
    ),
  );
}

function field(key, value) {
  return el("div", { class: "field" }, el("span", { class: "key" }, key), el("span", {}, value));
}

// ---- The cluster ----------------------------------------------------------------

function setConnection(state, text) {
  const node = $("connection");
  node.dataset.state = state;
  node.textContent = text || state;
}

function showBanner(text) {
  $("banner").hidden = !text;
  $("banner").textContent = text || "";
}

function renderHive(hive) {
  const caps = hive.capabilities;
  const card = el(
    "article",
    { class: "card", "data-hive": hive.alias, "data-status": hive.status },
    el("header", {}, el("span", { class: "name" }, hive.alias), pill(hive.status)),
    el(
      "div",
      { class: "facts" },
      [hive.host, caps ? `${caps.hostname} · ${caps.os}/${caps.arch}, ${describeLibc(caps.libc)}` : null, hive.agent_version ? `agent ${hive.agent_version}` : null]
        .filter(Boolean)
        .join(" · "),
    ),
  );
  // The queen → hive direction: SSH, judged over several commands (the other
  // direction is each worker's heartbeats).
  const ssh = hive.ssh || {};
  if (ssh.healthy != null || ssh.consecutive_failures > 0) {
    const state = ssh.healthy === false ? "down" : ssh.consecutive_failures > 0 ? "failing" : "ok";
    const parts = [`SSH ${state}`];
    if (ssh.last_success_unix_s) parts.push(`last success ${new Date(ssh.last_success_unix_s * 1000).toLocaleTimeString()}`);
    if (ssh.consecutive_failures > 0) parts.push(`${ssh.consecutive_failures} failure(s) in a row, the last: ${ssh.last_error || "-"}`);
    card.append(el("p", { class: "muted", "data-ssh": state }, parts.join(" · ")));
  }
  if (!caps) {
    card.append(el("p", { class: "muted" }, "Not started yet: `rbee-keeper hive start " + hive.alias + "`."));
    return card;
  }
  card.append(meter("RAM", caps.ram_total - caps.ram_available, caps.ram_total));
  for (const device of caps.devices) {
    if (device.kind === "cpu") {
      const cores = device.cores ? `, ${device.cores} cores` : "";
      card.append(el("div", { class: "meter", "data-device": device.id }, `${device.id}: ${device.name}${cores}`));
    } else {
      const meterNode = meter(`${device.id}: ${device.name}`, device.memory_total - device.memory_free, device.memory_total);
      meterNode.dataset.device = device.id;
      card.append(meterNode);
    }
  }
  card.append(el("div", { class: "meter muted" }, `Disk free for models: ${bytes(caps.disk_free)}`));
  return card;
}

function renderWorker(worker) {
  const rate = worker.last_tokens_per_s == null ? "–" : `${worker.last_tokens_per_s.toFixed(1)} tok/s`;
  return el(
    "article",
    { class: "row", "data-worker": worker.worker_id, "data-status": worker.status },
    el("div", { class: "field" }, el("span", { class: "key" }, worker.worker_id), el("span", { class: "mono" }, worker.model)),
    field("hive · device", `${worker.hive_id} · ${worker.device}`),
    el(
      "div",
      { class: "field" },
      el("span", { class: "key" }, "state"),
      el("span", {}, pill(worker.status), worker.load_percent == null ? "" : ` ${worker.load_percent}%`),
    ),
    field("last request", rate),
    field("slots busy · in flight · tokens", `${worker.slots_busy}/${worker.slots_total} · ${worker.in_flight} · ${worker.tokens_generated}`),
  );
}

let followedJob = null;

function renderJob(job) {
  const button = el(
    "button",
    { type: "button", "aria-pressed": followedJob && followedJob.id === job.job_id ? "true" : "false" },
    el("span", { class: "op" }, job.operation),
    pill(job.state),
    el("span", { class: "when" }, `${ago(job.created_at_unix_ms)} · ${job.events} events`),
    el("span", { class: "id mono" }, job.job_id),
  );
  return el("li", { "data-job": job.job_id, "data-operation": job.operation }, button);
}

/// Puts `fresh` (elements keyed by `data-<key>`) into `container`, keeping the element
/// already there for each key and changing only what differs, so a snapshot neither
/// flickers nor pulls an element from under the pointer.
function reconcile(container, fresh, key) {
  const existing = new Map();
  for (const child of container.children) {
    if (child.dataset[key] !== undefined) existing.set(child.dataset[key], child);
  }
  const nodes = fresh.map((node) => {
    const old = node.dataset[key] === undefined ? undefined : existing.get(node.dataset[key]);
    if (!old) return node;
    if (!old.isEqualNode(node)) {
      for (const attr of [...old.attributes]) {
        if (!node.hasAttribute(attr.name)) old.removeAttribute(attr.name);
      }
      for (const attr of [...node.attributes]) old.setAttribute(attr.name, attr.value);
      old.replaceChildren(...node.childNodes);
    }
    return old;
  });
  container.replaceChildren(...nodes);
}

function render(snapshot) {
  $("queen-version").textContent = `queen ${snapshot.queen.version} · ${snapshot.queen.jobs_running} jobs running`;

  const online = snapshot.hives.filter((h) => h.status === "online").length;
  $("hive-count").textContent = `${online}/${snapshot.hives.length} online`;
  reconcile(
    $("hives"),
    snapshot.hives.length ? snapshot.hives.map(renderHive) : [el("p", { class: "muted" }, "The inventory names no hives.")],
    "hive",
  );

  $("worker-count").textContent = String(snapshot.workers.length);
  reconcile(
    $("workers"),
    snapshot.workers.length
      ? snapshot.workers.map(renderWorker)
      : [el("p", { class: "muted" }, "No workers. Spawn one: `rbee-keeper worker spawn --hive H --model M`.")],
    "worker",
  );

  reconcile($("jobs"), snapshot.jobs.length ? snapshot.jobs.map(renderJob) : [el("li", { class: "muted" }, "No jobs yet.")], "job");

  // The chat offers what ready workers serve, and starts with the first of them.
  const models = [...new Set(snapshot.workers.filter((w) => w.status === "ready" || w.status === "busy").map((w) => w.model))];
  $("models").replaceChildren(...models.map((m) => el("option", { value: m })));
  if (!$("chat-model").value && models.length) $("chat-model").value = models[0];
}

const cluster = {
  controller: null,
  abort() {
    if (this.controller) this.controller.abort();
    this.controller = null;
  },
};

/// Follows /v1/cluster/stream, reconnecting with a growing pause when it drops.
async function followCluster() {
  cluster.abort();
  const controller = new AbortController();
  cluster.controller = controller;
  let pause = 500;
  while (!controller.signal.aborted) {
    setConnection("connecting");
    try {
      for await (const event of sse("/v1/cluster/stream", { headers: headers(), signal: controller.signal })) {
        if (event.event !== "snapshot") continue;
        setConnection("live");
        showBanner("");
        pause = 500;
        render(JSON.parse(event.data));
      }
      showBanner("The queen closed the stream (shutting down?); reconnecting.");
    } catch (error) {
      if (controller.signal.aborted) return;
      if (error instanceof Unauthorized) {
        askForToken(true);
        return;
      }
      showBanner(`Cannot reach the queen: ${error.message}`);
    }
    setConnection("offline");
    await sleep(pause);
    pause = Math.min(pause * 2, 10000);
  }
}

// ---- A job's event stream ---------------------------------------------------------

const job = { controller: null };

function describe(kind, data) {
  if (kind === "done") return "done";
  let value;
  try {
    value = JSON.parse(data);
  } catch (_) {
    return data;
  }
  const hive = value.hive ? `${value.hive}: ` : "";
  switch (kind) {
    case "narration":
      return `${hive}${value.human}`;
    case "progress": {
      const total = value.total ? ` / ${value.total}` : "";
      return `${hive}${value.label} ${value.current}${total} ${value.unit}`;
    }
    case "result":
      return hive + describeResult(value.kind, value.value);
    case "error":
      return value.hint ? `${value.code}: ${value.message} (hint: ${value.hint})` : `${value.code}: ${value.message}`;
    case "cancelled":
      return value.reason || "cancelled";
    default:
      return data;
  }
}

// A hive's C library as the keeper prints it: `glibc 2.36`, `musl 1.2.4`, `libc unknown`.
function describeLibc(libc) {
  if (!libc || libc.kind === "unknown") return "libc unknown";
  return libc.version ? `${libc.kind} ${libc.version}` : libc.kind;
}

// A result by its kind, as a line; a kind this page does not know shows its name.
function describeResult(kind, v) {
  const count = (list, what) => `${list.length} ${what}`;
  switch (kind) {
    case "recap":
      return v.map((r) => `${r.hive} ${r.status}: ${r.message}`).join("; ");
    case "inference":
      return `${v.tokens} tokens, ${v.tokens_per_s.toFixed(1)} tok/s, first token ${Math.round(v.ttft_ms)} ms, stop: ${v.stop_reason}, worker ${v.worker_id} on ${v.hive_id}`;
    case "playbook_task":
      return `${v.status}: ${v.task}: ${v.message}`;
    case "playbook_recap":
      return v.play_recap.map((r) => `${r.hive} ok=${r.ok} changed=${r.changed} unreachable=${r.unreachable} failed=${r.failed} skipped=${r.skipped}`).join("; ");
    case "agent_version":
      return `agent ${v.version} on ${v.os}/${v.arch}`;
    case "capabilities":
      return `${v.hostname}: ${v.devices.map((d) => d.id).join(", ")}`;
    case "agent_status":
      return `agent ${v.version.version} in ${v.install_dir}, ${count(v.workers, "worker(s)")}`;
    case "spawned_worker":
      return `worker ${v.worker_id} started for ${v.model} on ${v.device} at ${v.url}`;
    case "worker_stopped":
      return `worker ${v.worker_id}: ${v.outcome.replace("_", " ")}`;
    case "worker":
      return `worker ${v.worker_id} (${v.status}) on ${v.hive_id}, ${v.model}`;
    case "workers":
    case "hive_workers":
      return count(v, "worker(s)");
    case "platform":
      return `${v.os}/${v.arch}, ${describeLibc(v.libc)}`;
    case "models":
      return v.length ? v.map((m) => m.id).join(", ") : "no models";
    case "model":
      return `${v.id} at ${v.path}`;
    case "model_transfer":
      return `${v.model.id}${v.changed ? "" : " (already present)"}`;
    case "inventory":
      return count(v, "hive(s)");
    case "hive_probe":
      return `${v.user}@${v.host}:${v.port}, ${v.os}/${v.arch}, host key ${v.fingerprint}; ${v.install_dir} ${v.writable ? "writable" : "NOT writable"}`;
    case "inventory_change":
      return `${v.path}: added ${v.added.join(", ") || "none"}; removed ${v.removed.join(", ") || "none"}; changed ${v.changed.join(", ") || "none"}`;
    default:
      return kind || "result";
  }
}

async function followJob(id, operation) {
  if (job.controller) job.controller.abort();
  const controller = new AbortController();
  job.controller = controller;
  followedJob = { id };
  for (const button of document.querySelectorAll("#jobs button")) {
    button.setAttribute("aria-pressed", button.closest("li").dataset.job === id ? "true" : "false");
  }
  $("job-detail").hidden = false;
  $("job-title").textContent = `${operation} ${id}`;
  const list = $("job-events");
  list.replaceChildren();
  // Tokens of an inference job gather on one line rather than one line each.
  let tokens = null;
  const add = (kind, text) => {
    const item = el("li", { "data-kind": kind }, el("span", { class: "kind" }, kind), text);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
  };
  try {
    for await (const event of sse(`/v1/jobs/${encodeURIComponent(id)}/stream`, { headers: headers(), signal: controller.signal })) {
      if (event.event === "token") {
        const value = JSON.parse(event.data);
        if (!tokens) tokens = add("tokens", "");
        tokens.append(value.t);
        list.scrollTop = list.scrollHeight;
        continue;
      }
      tokens = null;
      add(event.event, describe(event.event, event.data));
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    if (error instanceof Unauthorized) return askForToken(true);
    add("error", error.message);
  }
}

function closeJob() {
  if (job.controller) job.controller.abort();
  job.controller = null;
  followedJob = null;
  $("job-detail").hidden = true;
  for (const button of document.querySelectorAll("#jobs button")) button.setAttribute("aria-pressed", "false");
}

// ---- Chat -------------------------------------------------------------------------

const chat = { history: [], controller: null };

function addMessage(role, text) {
  const node = el("div", { class: `message ${role}` }, el("span", { class: "who" }, role), el("span", { class: "text" }, text));
  const messages = $("messages");
  messages.querySelector(":scope > p.muted")?.remove();
  messages.append(node);
  messages.scrollTop = messages.scrollHeight;
  return node;
}

function chatBusy(busy) {
  $("chat-send").disabled = busy;
  $("chat-stop").hidden = !busy;
}

async function send(event) {
  event.preventDefault();
  if (chat.controller) return;
  const content = $("chat-input").value.trim();
  const model = $("chat-model").value.trim();
  if (!content || !model) return;
  $("chat-input").value = "";
  addMessage("user", content);
  chat.history.push({ role: "user", content });

  const messages = [];
  const system = $("chat-system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...chat.history);
  const body = { model, messages, stream: true, stream_options: { include_usage: true } };
  const temperature = parseFloat($("chat-temperature").value);
  if (Number.isFinite(temperature)) body.temperature = temperature;
  const maxTokens = parseInt($("chat-max-tokens").value, 10);
  if (Number.isFinite(maxTokens)) body.max_tokens = maxTokens;

  const reply = addMessage("assistant", "");
  reply.dataset.state = "streaming";
  reply.dataset.chunks = "0";
  const text = reply.querySelector(".text");
  const controller = new AbortController();
  chat.controller = controller;
  chatBusy(true);
  const started = performance.now();
  let firstToken = null;
  let usage = null;
  let finish = null;
  try {
    const init = {
      method: "POST",
      headers: headers({ "Content-Type": "application/json" }),
      body: JSON.stringify(body),
      signal: controller.signal,
    };
    for await (const frame of sse("/v1/chat/completions", init)) {
      if (frame.data === "[DONE]") break;
      const chunk = JSON.parse(frame.data);
      if (chunk.usage) usage = chunk.usage;
      for (const choice of chunk.choices || []) {
        if (choice.finish_reason) finish = choice.finish_reason;
        const delta = choice.delta && choice.delta.content;
        if (!delta) continue;
        if (firstToken === null) firstToken = performance.now();
        text.append(delta);
        reply.dataset.chunks = String(Number(reply.dataset.chunks) + 1);
        $("messages").scrollTop = $("messages").scrollHeight;
      }
    }
    chat.history.push({ role: "assistant", content: text.textContent });
    const parts = [];
    if (firstToken !== null) parts.push(`first token ${Math.round(firstToken - started)} ms`);
    if (usage) parts.push(`${usage.completion_tokens} tokens`);
    if (usage && firstToken !== null) {
      const seconds = (performance.now() - firstToken) / 1000;
      if (seconds > 0 && usage.completion_tokens > 1) parts.push(`${((usage.completion_tokens - 1) / seconds).toFixed(1)} tok/s`);
    }
    if (finish) parts.push(`stop: ${finish}`);
    reply.append(el("span", { class: "stats" }, parts.join(" · ")));
    reply.dataset.state = "done";
  } catch (error) {
    reply.dataset.state = controller.signal.aborted ? "stopped" : "error";
    if (controller.signal.aborted) {
      chat.history.push({ role: "assistant", content: text.textContent });
      reply.append(el("span", { class: "stats" }, "stopped"));
    } else {
      chat.history.pop();
      reply.classList.add("error");
      text.textContent = error.message;
      if (error instanceof Unauthorized) askForToken(true);
    }
  } finally {
    chat.controller = null;
    chatBusy(false);
  }
}

function stopChat() {
  if (chat.controller) chat.controller.abort();
}

function clearChat() {
  stopChat();
  chat.history = [];
  $("messages").replaceChildren();
}

// ---- Start ------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("token-form").addEventListener("submit", tokenEntered);
  $("forget-token").addEventListener("click", forgetToken);
  $("job-close").addEventListener("click", closeJob);
  $("jobs").addEventListener("click", (event) => {
    const item = event.target.closest("li[data-job]");
    if (item) followJob(item.dataset.job, item.dataset.operation);
  });
  $("chat-form").addEventListener("submit", send);
  $("chat-stop").addEventListener("click", stopChat);
  $("chat-clear").addEventListener("click", clearChat);
  $("chat-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("chat-form").requestSubmit();
    }
  });
  $("forget-token").hidden = token() === "";
  followCluster();
});
