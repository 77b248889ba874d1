// The page talks only to the JSON API of `seqtool serve`.
"use strict";
const $ = (id) => document.getElementById(id);
let models = [];

function headers() {
  const h = { "Content-Type": "application/json" };
  if ($("key").value) h.Authorization = "Bearer " + $("key").value;
  return h;
}

async function post(path, body) {
  $("error").textContent = "";
  const reply = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
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

function current() {
  return models.find((m) => m.name === $("model").value);
}

function show() {
  const model = current();
  $("task").textContent = model ? model.task : "";
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
  models = (await reply.json()).models;
  $("model").replaceChildren(...models.map((m) => new Option(`${m.name} (${m.task})`, m.name)));
  const wanted = new URLSearchParams(location.search).get("model");
  if (wanted) $("model").value = wanted;
  show();
}

// Server-sent events read from a fetch body: `data: {...}` lines, a blank line between.
async function generate() {
  const out = $("generated");
  out.textContent = "";
  const body = {
    model: current().name, prompt: $("prompt").value, stream: true,
    temperature: number("temperature"), length: number("length"),
    top_k: number("top_k"), top_p: number("top_p"), seed: number("seed"),
  };
  for (const key of ["temperature", "length"]) if (body[key] === null) delete body[key];
  const reader = (await post("/v1/generate", body)).body.pipeThrough(new TextDecoderStream()).getReader();
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

async function translate() {
  const body = { model: current().name, text: $("source").value, beam_size: number("beam_size") };
  body.attention = current().info.model_config.attention !== "none";
  const result = (await (await post("/v1/translate", body)).json()).translations[0];
  $("translation").textContent = result.translation;
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

async function classify() {
  const explain = current().info.model_config.pooling === "attention";
  const body = { model: current().name, text: $("text").value, explain };
  const reply = await (await post("/v1/classify", body)).json();
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

function guarded(action) {
  return () => action().catch((err) => { $("error").textContent = err.message; });
}

$("model").addEventListener("change", show);
$("key").addEventListener("change", guarded(loadModels));
$("generate").addEventListener("click", guarded(generate));
$("translate").addEventListener("click", guarded(translate));
$("classify").addEventListener("click", guarded(classify));
loadModels();
