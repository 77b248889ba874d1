"""`seqtool serve` under concurrent load, beside the command line on the same files.

A live server on 127.0.0.1 and 32 client threads in this process, each sending one
sentence (or one stream) per request: translate (test2016, beam 5), classify (SST-2
test) and generate (300-character streams); translate and generate in fp32 and with
`--quantize int8`; with batching on and off (`--max-batch 1`), each speed-up beside
the in-process ceiling of its model calls; the server's resident memory over many
requests; the largest request the default limits allow, per task (peak memory and
time); and a soak: 64 clients of mixed traffic (valid, invalid, leaving early,
streaming) for ten minutes.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import socket
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import (
    CHILD_TIMEOUT,
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
SOAK_CLIENTS = 64
SOAK_SECONDS = 600  # --quick: 20


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
        quiet = {**os.environ, "SEQTOOL_LOG_LEVEL": "warning"}  # no line per request
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.DEVNULL, env=quiet)
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                self.post("/health", None, method="GET")
                return
            except OSError:
                time.sleep(0.2)
        raise RuntimeError("seqtool serve did not answer /health within 120 s")

    def ask(self, path: str, body, method: str = "POST", timeout: float = 600) -> tuple:
        """(status, the reply's bytes); `body` a dict, or bytes sent as they are."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        data = body if body is None or isinstance(body, bytes) else json.dumps(body)
        try:
            conn.request(method, path, data, {"Content-Type": "application/json"})
            reply = conn.getresponse()
            return reply.status, reply.read()
        finally:
            conn.close()

    def post(self, path: str, body: dict | None, method: str = "POST", timeout=600) -> dict:
        status, raw = self.ask(path, body, method, timeout)
        if status != 200:
            raise RuntimeError(f"{path}: {status} {raw[:200]!r}")
        return json.loads(raw)

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

    def rss_mb(self, field: str = "VmRSS") -> float:
        """The server's resident memory now (VmRSS), or its peak so far (VmHWM)."""
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
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
                speedups = {"none": streams(sec, server, "serve_on")}
                memory(sec, sizes, server, english)
        finally:
            server.stop()
    server = Server({"shakes": runs["shakes"]}, "--quantize", "int8")
    sec.commands["serve_int8"] = " ".join(server.argv)
    try:
        speedups["int8"] = streams(sec, server, "serve_int8")
    finally:
        server.stop()
    for batching, options in (("on", []), ("off", ["--max-batch", 1])):
        server = Server({"de-en": runs["de-en"]}, "--quantize", "int8", *options)
        sec.commands[f"serve_int8_{batching}"] = " ".join(server.argv)
        try:
            load(server, translate[:CLIENTS])  # warm-up
            wall, _, _ = load(server, translate)
            rates[f"translate_int8_{batching}"] = len(german) / wall
        finally:
            server.stop()
    ceiling = ceilings(sec, runs, source)
    kinds = (("none", "fp32", "serve_on"), ("int8", "int8", "serve_int8"))
    for quantize, weights, command in kinds:
        sec.add(f"generate ({weights}): speed-up of {CLIENTS} streams over one through the "
                f"server (ref: the ceiling, {CLIENTS} rows of Batch.step over one)", "x",
                speedups[quantize], ceiling[quantize], "ratio >= 0.9",
                [command, f"rows_{quantize}"])  # fmt: skip
    for weights, key, on, off in (
        ("fp32", "", "serve_on", "serve_off"),
        ("int8", "_int8", "serve_int8_on", "serve_int8_off"),
    ):
        sec.add(f"translate beam 5 ({weights}): speed-up of {CLIENTS} clients with batching "
                f"over without (ref: the ceiling, batches of {CLIENTS} over one sentence at a "
                "time)", "x", rates[f"translate{key}_on"] / rates[f"translate{key}_off"],
                ceiling[f"translate{key}"], "ratio >= 0.9",
                [on, off, f"batches{key}"])  # fmt: skip
    worst(sec, runs, german)
    soak(sec, runs, german, english)
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


def streams(sec: Section, server: Server, command: str) -> float:
    """32 concurrent 300-character streams against one stream alone (continuous
    batching); returns the speed-up."""

    def body(seed: int) -> dict:
        return {"model": "shakes", "prompt": "ROMEO:", "length": STREAM_CHARS, "seed": seed,
                "stream": True}  # fmt: skip

    server.first_and_total(body(0))  # warm-up
    alone = [server.first_and_total(body(s)) for s in range(3)]
    alone_rate = statistics.median(chars / total for _, total, chars in alone)
    rates = []
    for _ in range(3):  # a run takes under a second: the median of three, as for one alone
        start = time.perf_counter()
        with ThreadPoolExecutor(CLIENTS) as pool:
            together = list(pool.map(server.first_and_total, [body(s) for s in range(CLIENTS)]))
        rates.append(sum(chars for _, _, chars in together) / (time.perf_counter() - start))
    rate = statistics.median(rates)
    weights = "int8" if command == "serve_int8" else "fp32"
    sec.add(f"generate ({weights}): {CLIENTS} concurrent streams of {STREAM_CHARS} characters, "
            "all streams together (ref: one stream alone)", "chars/s", rate, alone_rate,
            "ratio >= 8", [command])  # fmt: skip
    first, alone_first = [f for f, _, _ in together], statistics.median(f for f, _, _ in alone)
    sec.notes.append(
        f"generate ({weights}) time to the first character: alone {alone_first:.3f} s; with "
        f"{CLIENTS} streams p50 {percentile(first, 50):.3f} s, p99 {percentile(first, 99):.3f} s"
    )
    return rate / alone_rate


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


def ceilings(sec: Section, runs: dict[str, Path], source: Path) -> dict[str, float]:
    """What the model calls allow before any HTTP: a generation step over 32 rows against
    one, and translating in batches of 32 against one sentence at a time (what 32 clients
    with batching on and off can at best give), each in fp32 and int8. Returns these
    speed-ups by "none", "int8", "translate" and "translate_int8"."""
    speedups = {}
    for quantize in ("none", "int8"):
        child = run([PYTHON, "bench/run.py", "probe-rows", runs["shakes"], quantize])
        sec.commands[f"rows_{quantize}"] = child.command
        rate = json.loads(child.stdout)
        weights = "int8" if quantize == "int8" else "fp32"
        sec.add(f"in-process ceiling, generate ({weights}): {CLIENTS} rows stepped together "
                "(ref: one row)", "chars/s", rate[str(CLIENTS)], rate["1"], "",
                [f"rows_{quantize}"])  # fmt: skip
        speedups[quantize] = rate[str(CLIENTS)] / rate["1"]
    for quantize, key in (("none", ""), ("int8", "_int8")):
        child = run([PYTHON, "bench/run.py", "probe-batches", runs["de-en"], source, quantize])
        sec.commands[f"batches{key}"] = child.command
        rate = json.loads(child.stdout)
        weights = "int8" if quantize == "int8" else "fp32"
        sec.add(f"in-process ceiling, translate beam 5 ({weights}): batches of {CLIENTS} in "
                "file order (ref: one sentence at a time)", "sentences/s", rate[str(CLIENTS)],
                rate["1"], "", [f"batches{key}"])  # fmt: skip
        speedups[f"translate{key}"] = rate[str(CLIENTS)] / rate["1"]
    return speedups


def longest(lines: list[str], chars: int) -> str:
    """Lines joined until `chars` characters: a sentence as long as a limit allows."""
    text = ""
    while len(text) < chars:
        text += " " + lines[len(text) % len(lines)]
    return text[:chars]


def worst(sec: Section, runs: dict[str, Path], german: list[str]) -> None:
    """The largest request of each task that the default limits (serve.Limits) allow,
    each alone on a fresh server: its seconds, and the server's peak RSS (VmHWM) against
    the peak after a small request of the same model."""
    from seqtool.serve import Limits

    limits = Limits()
    sentence = longest(german, limits.max_chars)
    many = [sentence] * limits.max_sentences
    n = limits.max_n
    asks = {
        "translate": ("de-en", "/v1/translate", {
            "text": many, "beam_size": limits.max_beam, "n_best": limits.max_beam,
            "length_penalty": limits.max_length_penalty, "attention": True,
            "max_length_ratio": limits.max_length_ratio}),
        "classify": ("sst2", "/v1/classify", {
            "text": many, "top_k": limits.max_top_k, "explain": False}),
        "completions": ("shakes", "/v1/completions", {
            "prompt": [sentence] * (limits.max_sentences // n), "n": n,
            "max_tokens": limits.max_generate_length}),
    }  # fmt: skip
    for task, (model, path, body) in asks.items():
        server = Server({model: runs[model]})
        sec.commands[f"worst_{task}"] = " ".join(server.argv)
        try:
            small = {k: v[:1] if isinstance(v, list) else v for k, v in body.items()}
            server.post(path, {"model": model, **small, "n": 1} if task == "completions"
                        else {"model": model, **small})  # fmt: skip
            before = server.rss_mb("VmHWM")
            start = time.perf_counter()
            server.post(path, {"model": model, **body}, timeout=CHILD_TIMEOUT)
            seconds = time.perf_counter() - start
            sec.add(f"largest {task} request the default limits allow: server peak RSS "
                    "(ref: its peak after one small request)", "MiB",
                    server.rss_mb("VmHWM"), before, "", [f"worst_{task}"])  # fmt: skip
            sec.add(f"largest {task} request the default limits allow: time", "s", seconds,
                    None, "", [f"worst_{task}"])  # fmt: skip
        finally:
            server.stop()


def soak(sec: Section, runs: dict[str, Path], german: list[str], english: list[str]) -> None:
    """SOAK_CLIENTS clients send mixed traffic for SOAK_SECONDS: valid requests of the
    three models (their answers compared with the answers to the same requests sent
    alone before), invalid ones (which must get a 4xx), streams, and clients that leave
    early. No 5xx; the peak RSS of the last quarter within 5% of the first quarter's."""
    seconds = 20 if sec.quick else SOAK_SECONDS
    valid = (
        [("/v1/translate", {"model": "de-en", "text": s}) for s in german[:20]]
        + [("/v1/classify", {"model": "sst2", "text": s}) for s in english[:20]]
        + [("/v1/generate", {"model": "shakes", "prompt": "A", "length": 80, "seed": i})
           for i in range(20)]
    )  # fmt: skip
    invalid = [
        ("/v1/generate", {"model": "shakes", "seed": 2**64}),
        ("/v1/translate", {"model": "de-en", "text": "\ud800"}),
        ("/v1/translate", {"model": "de-en", "text": "x", "beam_size": 10**6}),
        ("/v1/classify", b'{"model": "sst2", "text": '),
        ("/v1/classify", b'{"model": "sst2", "text": "\xff"}'),
    ]
    server = Server(runs, "--max-generate-length", 100_000)
    sec.commands["soak"] = " ".join(server.argv)
    try:
        alone = [server.ask(*ask) for ask in valid]
        stop = time.monotonic() + seconds
        counts = {"valid": 0, "invalid": 0, "left": 0, "streamed": 0}
        failures: list[str] = []
        peaks: list[tuple[float, float]] = []  # (time, RSS)
        lock = threading.Lock()

        def client(seed: int) -> None:
            rng = random.Random(seed)
            while time.monotonic() < stop:
                kind = rng.choice(["valid", "valid", "invalid", "left", "streamed"])
                if kind == "valid":
                    i = rng.randrange(len(valid))
                    got = server.ask(*valid[i])
                    ok = got == alone[i] or (got[0] == 200 and same(got[1], alone[i][1]))
                elif kind == "invalid":
                    ok = 400 <= server.ask(*rng.choice(invalid))[0] < 500
                elif kind == "left":
                    body = {"model": "shakes", "length": 100_000}
                    with contextlib.suppress(OSError):  # the client gives up at once
                        server.ask("/v1/generate", body, timeout=0.05)
                    ok = True
                else:
                    first, _, chars = server.first_and_total(
                        {"model": "shakes", "length": 200, "seed": seed, "stream": True}
                    )
                    ok = chars > 0
                with lock:
                    counts[kind] += 1
                    if not ok:
                        failures.append(kind)

        def watch() -> None:
            while time.monotonic() < stop:
                peaks.append((time.monotonic(), server.rss_mb()))
                time.sleep(1)

        started = time.monotonic()
        threads = [threading.Thread(target=client, args=(i,)) for i in range(SOAK_CLIENTS)]
        threads.append(threading.Thread(target=watch))
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        health = server.ask("/health", None, method="GET")[0]
    finally:
        server.stop()
    first = max(r for t, r in peaks if t < started + seconds / 4)
    last = max(r for t, r in peaks if t >= started + 3 * seconds / 4)
    name = f"soak: {SOAK_CLIENTS} clients for {seconds} s of mixed traffic"
    sec.add(f"{name}, requests that got a wrong answer, a 5xx or no answer", "requests",
            float(len(failures)), None, "", ["soak"])  # fmt: skip
    sec.add(f"{name}, peak RSS of the last quarter (ref: of the first quarter)", "MiB",
            last, first, "ratio <= 1.05", ["soak"])  # fmt: skip
    sec.notes.append(
        f"soak: {', '.join(f'{v:,} {k}' for k, v in counts.items())} requests; "
        f"/health after it: {health}"
    )


def same(got: bytes, want: bytes) -> bool:
    """The same answer but for float digits (a merged batch's scores differ in the 7th):
    the same texts and labels."""
    a, b = json.loads(got), json.loads(want)
    if "translations" in a:
        return [t["translation"] for t in a["translations"]] == [
            t["translation"] for t in b["translations"]
        ]
    if "results" in a:
        return [r["label"] for r in a["results"]] == [r["label"] for r in b["results"]]
    return a == b


def probe_rows(run_dir: str, quantize: str) -> None:
    """Prints {rows: chars/s} of the server's running batch (decoding.Batch.step:
    decode_step and each row's own sampling) with 1 and CLIENTS rows, 300 steps each."""
    import torch

    import seqtool
    from seqtool.decoding import Batch

    generator = seqtool.load(run_dir, device="cpu", quantize=quantize)
    prompt = generator.tokenizer.encode("ROMEO:")
    rates = {}
    with torch.inference_mode():
        for count in (1, CLIENTS):
            rows = Batch(generator.model)
            for seed in range(count):  # one at a time, as streams join
                rows.join([prompt], (1.0, None, None), [seed])
            for _ in range(20):  # warm-up
                rows.step().tolist()
            start = time.perf_counter()
            for _ in range(STREAM_CHARS):
                rows.step().tolist()  # read back each step, as the server does
            rates[count] = count * STREAM_CHARS / (time.perf_counter() - start)
    print(json.dumps(rates))


def probe_batches(run_dir: str, source: str, quantize: str = "none") -> None:
    """Prints {batch size: sentences/s} of Translator.translate at beam 5 called on
    consecutive groups of the file's lines (the first 200 alone, every line by CLIENTS),
    as the server calls it: no sorting across groups; weights as `quantize` makes them."""
    import seqtool

    translator = seqtool.load(run_dir, device="cpu", quantize=quantize)
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    translator.translate(lines[:CLIENTS], beam_size=5)  # warm-up
    rates = {}
    for size, subset in ((1, lines[:200]), (CLIENTS, lines)):
        start = time.perf_counter()
        for i in range(0, len(subset), size):
            translator.translate(subset[i : i + size], beam_size=5, batch_size=size)
        rates[size] = len(subset) / (time.perf_counter() - start)
    print(json.dumps(rates))
