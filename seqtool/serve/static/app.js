// The page talks only to the JSON API of `seqtool serve`.
"use strict";
const $ = (id) => document.getElementById(id);
let models = [];
let running = null; // the AbortController of the request in flight: one at a time

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h.Authorization = "Bearer " + $("key").value;
  return h;
}

async function post(path, body, signal) {
  const reply = await fetch(path, {
    method: "POST", headers: headers(), body: JSON.stringify(body), signal,
  });
  if (!reply.ok) {
    const error = (await reply.json().catch(() => ({}))).error || reply.statusText;
    throw new Error(error);
  }
  return reply;
}

function number(id) {
  const value = $(id).value;
  return value === "" ? null : Number(value);
}

// The fields the user filled in; empty ones are left to the server's defaults.
function filled(body) {
  return Object.fromEntries(Object.entries(body).filter(([, v]) => v !== null));
}

function current() {
  return models.find((m) => m.id === $("model").value);
}

function describe(model) {
  const info = model.info;
  const parts = [`${info.parameters.toLocaleString()} parameters`, `${info.steps} steps`];
  for (const [key, value] of Object.entries(info.metrics || {})) {
    if (typeof value === "number" && key !== "tokens") parts.push(`${key} ${+value.toFixed(3)}`);
  }
  return `${model.task}: ${parts.join(", ")}`;
}

function show() {
  const model = current();
  $("task").textContent = model ? model.task : "";
  $("info").textContent = model ? describe(model) : "";
  for (const task of ["generator", "translator", "classifier"]) {
    $(task).hidden = !model || model.task !== task;
  }
}

async function loadModels() {
  const reply = await fetch("/v1/models", { headers: headers() });
  if (!reply.ok) {
    $("error").textContent = (await reply.json()).error;
    return;
  }
  $("error").textContent = "";
  models = (await reply.json()).data;
  $("model").replaceChildren(...models.map((m) => new Option(`${m.id} (${m.task})`, m.id)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted) $("model").value = wanted;
  show();
}

// Server-sent events read from a fetch body: `data: {...}` lines, a blank line between.
async function generate(signal) {
  const out = $("generated");
  out.textContent = "";
  const body = filled({
    model: current().id, prompt: $("prompt").value, stream: true,
    temperature: number("temperature"), length: number("length"),
    top_k: number("top_k"), top_p: number("top_p"), seed: number("seed"),
  });
  const reply = await post("/v1/generate", body, signal);
  const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    const events = buffer.split("\n\n");
    buffer = events.pop();
    for (const event of events) {
      const data = JSON.parse(event.replace(/^data: /, ""));
      if (data.error) throw new Error(data.error);
      if (data.text) out.textContent += data.text;
    }
  }
}

async function translate(signal) {
  const body = filled({
    model: current().id, text: $("source").value, beam_size: number("beam_size"),
    n_best: number("n_best"), length_penalty: number("length_penalty"),
    attention: current().info.model_config.attention !== "none",
  });
  const result = (await (await post("/v1/translate", body, signal)).json()).translations[0];
  $("translation").textContent = result.translation;
  $("nbest").replaceChildren(...(result.n_best || []).slice(1).map((other) => {
    const item = document.createElement("li");
    item.textContent = `${other.translation} (${other.score.toFixed(3)})`;
    return item;
  }));
  const table = $("heatmap");
  table.replaceChildren();
  if (!result.attention) return;
  const head = table.createTHead().insertRow();
  head.appendChild(document.createElement("th"));
  for (const piece of result.source_tokens) {
    head.appendChild(document.createElement("th")).textContent = piece;
  }
  const rows = table.createTBody();
  const labels = result.tokens.concat(["</s>"]);
  result.attention.forEach((weights, i) => {
    const row = rows.insertRow();
    row.appendChild(document.createElement("th")).textContent = labels[i] || "</s>";
    for (const w of weights) {
      const cell = row.insertCell();
      cell.style.background = `rgba(60, 120, 216, ${w})`;
      cell.title = w.toFixed(3);
    }
  });
}

async function classify(signal) {
  const explain = current().info.model_config.pooling === "attention";
  const body = filled({
    model: current().id, text: $("text").value, explain, top_k: number("labels"),
  });
  const reply = await (await post("/v1/classify", body, signal)).json();
  $("bars").replaceChildren(...reply.results[0].top.map(([label, p]) => {
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.innerHTML = '<span class="name"></span><span class="fill"></span><span class="p"></span>';
    bar.querySelector(".name").textContent = label;
    bar.querySelector(".fill").style.width = `${Math.round(p * 300)}px`;
    bar.querySelector(".p").textContent = p.toFixed(3);
    return bar;
  }));
  const words = $("explained");
  words.replaceChildren();
  if (!reply.explanation) return;
  const top = Math.max(...reply.explanation.weights);
  reply.explanation.pieces.forEach((piece, i) => {
    const span = words.appendChild(document.createElement("span"));
    span.textContent = piece.replace(/^\u2581/, " ");
    span.style.background = `rgba(255, 170, 0, ${reply.explanation.weights[i] / top})`;
    span.title = reply.explanation.weights[i].toFixed(3);
  });
}

// A form runs its action once at a time: while it runs the form is busy (its submit
// button disabled, aria-busy set) and its Stop button aborts the request, so that a
// second click never starts a second stream writing into the same place.
function busy(form, on) {
  form.setAttribute("aria-busy", on ? "true" : "false");
  form.querySelector("button[type=submit]").disabled = on;
  form.querySelector("button.stop").disabled = !on;
}

async function run(form, action) {
  if (running) return;
  const controller = new AbortController();
  running = controller;
  busy(form, true);
  $("error").textContent = "";
  try {
    await action(controller.signal);
  } catch (err) {
    if (err.name !== "AbortError") $("error").textContent = err.message;
  } finally {
    running = null;
    busy(form, false);
  }
}

for (const [id, action] of [["generator", generate], ["translator", translate], ["classifier", classify]]) {
  const form = $(id);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    run(form, action);
  });
  form.querySelector("button.stop").addEventListener("click", () => running && running.abort());
  // Enter submits from the text box too; Shift+Enter is a new line
  form.querySelector("textarea").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });
}
$("model").addEventListener("change", show);
$("key").addEventListener("change", loadModels);
loadModels();
