"""`seqtool serve` under concurrent load, beside the command line on the same files.

A live server on 127.0.0.1 and 32 client threads in this process, each sending one
sentence (or one stream) per request: translate (test2016, beam 5), classify (SST-2
test) and generate (300-character streams, fp32 and `--quantize int8`), with batching on
and off (`--max-batch 1`), and the server's resident memory over many requests.
"""

from __future__ import annotations

import http.client
import json
import socket
import statistics
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import (
    MULTI30K,
    PYTHON,
    SEQTOOL,
    SST2,
    TRAIN,
    Section,
    Sizes,
    log,
    run,
    train_models,
)

from sections.classifier import test_texts

TITLE = "Serving: batching across requests"
CLIENTS = 32
STREAM_CHARS = 300


class Server:
    """`seqtool serve NAME=RUN ...` on a free port of 127.0.0.1, stopped with SIGTERM."""

    def __init__(self, models: dict[str, Path], *options) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        args = [f"{name}={path}" for name, path in models.items()]
        self.argv = [*SEQTOOL, "serve", *args, "--port", self.port, *options]
        self.argv = [str(a) for a in self.argv]
        log("  $ " + " ".join(self.argv))
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                self.post("/health", None, method="GET")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("seqtool serve did not answer /health within 120 s")

    def post(self, path: str, body: dict | None, method: str = "POST") -> dict:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        data = None if body is None else json.dumps(body)
        conn.request(method, path, data, {"Content-Type": "application/json"})
        reply = conn.getresponse()
        payload = json.loads(reply.read())
        conn.close()
        if reply.status != 200:
            raise RuntimeError(f"{path}: {reply.status} {payload}")
        return payload

    def first_and_total(self, body: dict) -> tuple[float, float, int]:
        """One streamed generation: seconds to the first text event, seconds in all, and
        the characters received."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        start = time.perf_counter()
        conn.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
        reply, first, chars = conn.getresponse(), None, 0
        for line in reply:
            if line.startswith(b"data:"):
                event = json.loads(line[5:])
                if "text" in event:
                    first = first or time.perf_counter() - start
                    chars += len(event["text"])
        conn.close()
        return first or 0.0, time.perf_counter() - start, chars

    def rss_mb(self) -> float:
        """The server's resident memory now (VmRSS of its process)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def load(server: Server, requests: list[tuple[str, dict]]) -> tuple[float, list[float], list]:
    """Send the requests from CLIENTS threads: wall seconds, each request's latency, and
    the replies in request order."""

    def one(request):
        began = time.perf_counter()
        reply = server.post(*request)
        return time.perf_counter() - began, reply

    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        done = list(pool.map(one, requests))
    return time.perf_counter() - start, [d[0] for d in done], [d[1] for d in done]


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else values[0]


def models(sec: Section, sizes: Sizes, out: Path) -> dict[str, Path]:
    """A translator, a classifier and the 2x512 generator; their speed, not their
    quality, matters here."""
    work = out / "serve"
    data = {
        "de-en": ["translator", "--train", MULTI30K / "train", "--src-lang", "de",
                  "--tgt-lang", "en", "--max-time", sizes.serve_train_time],
        "sst2": ["classifier", "--train", SST2 / "train.tsv", "--max-steps", 50],
        "shakes": ["generator", "--train", TRAIN, "--max-steps", 20],
    }  # fmt: skip
    return train_models(sec, work, data, sizes.serve_extra)


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    runs = models(sec, sizes, out)
    german = (MULTI30K / "test2016.de").read_text(encoding="utf-8").splitlines()
    german = german[: sizes.serve_sentences]
    source = out / "serve" / "test2016.de"
    source.write_text("\n".join(german) + "\n", encoding="utf-8")
    english = test_texts()[: sizes.serve_sentences]
    texts = out / "serve" / "sst2_test.txt"
    texts.write_text("\n".join(english) + "\n")

    # the command line on the same files, whole process
    cli = run([*SEQTOOL, "translate", runs["de-en"], source, "--beam-size", 5])
    sec.commands["cli_translate"] = cli.command
    cli_translate = len(german) / cli.wall
    cli = run([*SEQTOOL, "classify", runs["sst2"], texts])
    sec.commands["cli_classify"] = cli.command
    cli_classify = len(english) / cli.wall

    translate = [("/v1/translate", {"model": "de-en", "text": s, "beam_size": 5}) for s in german]
    classify = [("/v1/classify", {"model": "sst2", "text": s}) for s in english]
    rates, latencies = {}, {}
    for batching, options in (("on", []), ("off", ["--max-batch", 1])):
        server = Server(runs, *options)
        sec.commands[f"serve_{batching}"] = " ".join(server.argv)
        try:
            load(server, translate[:CLIENTS])  # warm-up
            wall, latency, replies = load(server, translate)
            rates[f"translate_{batching}"] = len(german) / wall
            latencies[f"translate_{batching}"] = latency
            if batching == "on":
                wall, latency, _ = load(server, classify)
                rates["classify"], latencies["classify"] = len(english) / wall, latency
                streams(sec, server, "serve_on")
                memory(sec, sizes, server, english)
        finally:
            server.stop()
    server = Server({"shakes": runs["shakes"]}, "--quantize", "int8")
    sec.commands["serve_int8"] = " ".join(server.argv)
    try:
        streams(sec, server, "serve_int8")
    finally:
        server.stop()
    ceilings(sec, runs, source)
    n = len(german)
    name = f"translate {n:,} test2016 sentences, one per request, {CLIENTS} clients, beam 5"
    sec.add(f"{name} (ref: `seqtool translate` on the file)", "sentences/s",
            rates["translate_on"], cli_translate, "ratio >= 0.7",
            ["serve_on", "cli_translate"])  # fmt: skip
    sec.add(f"{name} (ref: the same load with --max-batch 1)", "sentences/s",
            rates["translate_on"], rates["translate_off"], "ratio >= 5",
            ["serve_on", "serve_off"])  # fmt: skip
    name = f"classify {len(english):,} SST-2 test sentences, one per request, {CLIENTS} clients"
    sec.add(f"{name} (ref: `seqtool classify` on the file)", "sentences/s", rates["classify"],
            cli_classify, "", ["serve_on", "cli_classify"])  # fmt: skip
    for key in ("translate_on", "translate_off", "classify"):
        sec.notes.append(
            f"{key.replace('_', ' batching ')} latency: p50 {percentile(latencies[key], 50):.3f} s,"
            f" p99 {percentile(latencies[key], 99):.3f} s"
        )


def streams(sec: Section, server: Server, command: str) -> None:
    """32 concurrent 300-character streams against one stream alone (continuous batching)."""

    def body(seed: int) -> dict:
        return {"model": "shakes", "prompt": "ROMEO:", "length": STREAM_CHARS, "seed": seed,
                "stream": True}  # fmt: skip

    server.first_and_total(body(0))  # warm-up
    alone = [server.first_and_total(body(s)) for s in range(3)]
    alone_rate = statistics.median(chars / total for _, total, chars in alone)
    start = time.perf_counter()
    with ThreadPoolExecutor(CLIENTS) as pool:
        together = list(pool.map(server.first_and_total, [body(s) for s in range(CLIENTS)]))
    wall = time.perf_counter() - start
    rate = sum(chars for _, _, chars in together) / wall
    weights = "int8" if command == "serve_int8" else "fp32"
    sec.add(f"generate ({weights}): {CLIENTS} concurrent streams of {STREAM_CHARS} characters, "
            "all streams together (ref: one stream alone)", "chars/s", rate, alone_rate,
            "ratio >= 8", [command])  # fmt: skip
    first, alone_first = [f for f, _, _ in together], statistics.median(f for f, _, _ in alone)
    sec.notes.append(
        f"generate ({weights}) time to the first character: alone {alone_first:.3f} s; with "
        f"{CLIENTS} streams p50 {percentile(first, 50):.3f} s, p99 {percentile(first, 99):.3f} s"
    )


def memory(sec: Section, sizes: Sizes, server: Server, english: list[str]) -> None:
    """The server's RSS while it answers many classify requests: the last quarter's peak
    against the first quarter's."""
    requests = [("/v1/classify", {"model": "sst2", "text": english[i % len(english)]})
                for i in range(sizes.serve_requests)]  # fmt: skip
    quarter = len(requests) // 4
    peaks = []
    for start in range(0, len(requests), quarter):
        load(server, requests[start : start + quarter])
        peaks.append(server.rss_mb())
    sec.add(f"server RSS after the last quarter of {len(requests):,} classify requests "
            "(ref: after the first quarter)", "MiB", peaks[-1], peaks[0], "ratio <= 1.05",
            ["serve_on"])  # fmt: skip


def ceilings(sec: Section, runs: dict[str, Path], source: Path) -> None:
    """What the model calls allow before any HTTP: a generation step over 32 rows against
    one (fp32 and int8), and translating in batches of 32 against one sentence at a time
    (what 32 clients with batching on and off can at best give)."""
    for quantize in ("none", "int8"):
        child = run([PYTHON, "bench/run.py", "probe-rows", runs["shakes"], quantize])
        sec.commands[f"rows_{quantize}"] = child.command
        rate = json.loads(child.stdout)
        weights = "int8" if quantize == "int8" else "fp32"
        sec.add(f"in-process ceiling, generate ({weights}): {CLIENTS} rows stepped together "
                "(ref: one row)", "chars/s", rate[str(CLIENTS)], rate["1"], "",
                [f"rows_{quantize}"])  # fmt: skip
    child = run([PYTHON, "bench/run.py", "probe-batches", runs["de-en"], source])
    sec.commands["batches"] = child.command
    rate = json.loads(child.stdout)
    sec.add(f"in-process ceiling, translate beam 5: batches of {CLIENTS} in file order "
            "(ref: one sentence at a time)", "sentences/s", rate[str(CLIENTS)], rate["1"], "",
            ["batches"])  # fmt: skip


def probe_rows(run_dir: str, quantize: str) -> None:
    """Prints {rows: chars/s} of the server's running batch (serve.rows.Rows.step:
    decode_step and each row's own sampling) with 1 and CLIENTS rows, 300 steps each."""
    import torch

    import seqtool
    from seqtool.serve.rows import Row, Rows

    generator = seqtool.load(run_dir, device="cpu", quantize=quantize)
    prompt = generator.tokenizer.encode("ROMEO:")
    rates = {}
    with torch.inference_mode():
        for count in (1, CLIENTS):
            rows = Rows(generator.model)
            for seed in range(count):
                noise = torch.Generator().manual_seed(seed)
                rows.join(Row((1.0, None, None), noise, 10**6), prompt)
            for _ in range(20):  # warm-up
                rows.step()
            start = time.perf_counter()
            for _ in range(STREAM_CHARS):
                rows.step()
            rates[count] = count * STREAM_CHARS / (time.perf_counter() - start)
    print(json.dumps(rates))


def probe_batches(run_dir: str, source: str) -> None:
    """Prints {batch size: sentences/s} of Translator.translate at beam 5 called on
    consecutive groups of the file's lines (the first 200 alone, every line by CLIENTS),
    as the server calls it: no sorting across groups."""
    import seqtool

    translator = seqtool.load(run_dir, device="cpu")
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    translator.translate(lines[:CLIENTS], beam_size=5)  # warm-up
    rates = {}
    for size, subset in ((1, lines[:200]), (CLIENTS, lines)):
        start = time.perf_counter()
        for i in range(0, len(subset), size):
            translator.translate(subset[i : i + size], beam_size=5, batch_size=size)
        rates[size] = len(subset) / (time.perf_counter() - start)
    print(json.dumps(rates))
