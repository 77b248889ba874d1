"""`seqtool serve` under concurrent load, beside the command line on the same files.

A live server on 127.0.0.1 and 32 client threads in this process, each sending one
sentence (or one stream) per request: translate (test2016, beam 5), classify (SST-2
test) and generate (streams of the API's default length); translate and generate in
fp32 and with `--quantize int8`; with batching on and off (`--max-batch 1`), each
speed-up beside the in-process ceiling of its model calls; the server's resident memory
over many requests; the largest request the default limits allow, per task (peak memory
and time); and a soak: 64 clients of mixed traffic (valid, invalid, leaving early,
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
from seqtool.config import SamplingConfig

TITLE = "Serving: batching across requests"
CLIENTS = 32
STREAM_CHARS = SamplingConfig().length  # the API's default length
SOAK_CLIENTS = 64
SOAK_SECONDS = 600  # --quick: 20
ROUNDS = 9  # --quick: 2; server and in-process ceiling alternate, their ratios' median
BATCHED, ALONE = 320, 96  # translate sentences per round with batching, without


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

    def first_and_total(
        self, body: dict, ready: threading.Barrier | None = None
    ) -> tuple[float, float, float, int]:
        """One streamed generation: when it was sent (time.perf_counter()), seconds to
        the first text event, seconds in all, and the characters received. The
        connection is open before the clock starts; with `ready`, the request goes when
        every client of the barrier is connected, so that what is timed is the server,
        not the client's threads starting (15-40 ms for 32 on 2 cores)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=600)
        conn.connect()
        if ready is not None:
            ready.wait()
        start = time.perf_counter()
        conn.request("POST", "/v1/generate", json.dumps(body), {"Content-Type": "application/json"})
        reply, first, lines = conn.getresponse(), 0.0, []
        for line in reply:
            if line.startswith(b"data:") and "text" in json.loads(line[5:]):
                first = time.perf_counter() - start
                lines.append(line)
                break
        # the rest in one read, parsed once the clock has stopped: 32 client threads
        # parsing event by event would take CPU from the server on the same two cores
        lines += reply.read().splitlines()
        total = time.perf_counter() - start
        conn.close()
        events = [json.loads(line[5:]) for line in lines if line.startswith(b"data:")]
        return start, first, total, sum(len(event.get("text", "")) for event in events)

    def concurrent(self, bodies: list[dict]) -> tuple[float, list[tuple[float, float, int]]]:
        """The streamed generations at once, one connected client each: seconds from the
        first request sent to the last stream's end, and each one's (first, total,
        chars) as first_and_total gives them."""
        ready = threading.Barrier(len(bodies))
        with ThreadPoolExecutor(len(bodies)) as pool:
            done = list(pool.map(lambda body: self.first_and_total(body, ready), bodies))
        began = min(start for start, _, _, _ in done)
        return max(s + t for s, _, t, _ in done) - began, [d[1:] for d in done]

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
                memory(sec, sizes, server, english)
        finally:
            server.stop()
    rounds = 2 if sec.quick else ROUNDS
    for quantize in ("none", "int8"):
        streams(sec, runs["shakes"], quantize, rounds)
    for quantize in ("none", "int8"):
        batches(sec, runs["de-en"], source, translate, quantize, rounds)
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


def weights_of(quantize: str) -> str:
    return "int8" if quantize == "int8" else "fp32"


def speedups(sec: Section, name: str, server: list[float], ceiling: list[float], commands):
    """The speed-up through the server beside its in-process ceiling, in rounds that
    alternate the two so that both see the machine in the same minutes: the figure is
    the median of the rounds' ratios (paired), the two medians shown beside it. The
    medians of each side taken apart mix rounds of a slow minute on one side with a
    fast one on the other (one round's ceiling alone moved 4.05 to 5.56, 2 cores)."""
    ratios = [s / c for s, c in zip(server, ceiling, strict=True)]
    sec.add(name, "x", statistics.median(ratios), None, "value >= 0.9", commands)
    sec.notes.append(
        f"{name.split(':')[0]}, round by round: through the server "
        f"{', '.join(f'{s:.2f}' for s in server)} (median {statistics.median(server):.2f}); "
        f"ceiling {', '.join(f'{c:.2f}' for c in ceiling)} (median "
        f"{statistics.median(ceiling):.2f}); ratios {', '.join(f'{r:.2f}' for r in ratios)}"
    )


def streams(sec: Section, run_dir: Path, quantize: str, rounds: int) -> None:
    """32 concurrent streams of STREAM_CHARS characters against one stream alone
    (continuous batching), on a server of the generator alone; each round also runs the
    in-process ceiling (probe-rows) while the server idles."""

    def body(seed: int) -> dict:
        return {"model": "shakes", "prompt": "ROMEO:", "length": STREAM_CHARS, "seed": seed,
                "stream": True}  # fmt: skip

    weights, key = weights_of(quantize), f"serve_gen_{quantize}"
    server = Server({"shakes": run_dir}, "--quantize", quantize)
    sec.commands[key] = " ".join(server.argv)
    probe = [PYTHON, "bench/run.py", "probe-rows", run_dir, quantize]
    sec.commands[f"rows_{quantize}"] = " ".join(map(str, probe))
    alone, together, rows, firsts = [], [], [], []
    try:
        server.first_and_total(body(0))  # warm-up
        for _ in range(rounds):
            times = [server.first_and_total(body(s))[1:] for s in range(3)]
            alone.append(statistics.median(chars / total for _, total, chars in times))
            seconds, done = server.concurrent([body(s) for s in range(CLIENTS)])
            together.append(sum(c for _, _, c in done) / seconds)
            firsts.append((statistics.median(f for f, _, _ in times), [f for f, _, _ in done]))
            rows.append({int(k): v for k, v in json.loads(run(probe).stdout).items()})
    finally:
        server.stop()
    sec.add(f"generate ({weights}): {CLIENTS} concurrent streams of {STREAM_CHARS} characters, "
            "all streams together (ref: one stream alone)", "chars/s", statistics.median(together),
            statistics.median(alone), "ratio >= 8", [key])  # fmt: skip
    sec.add(f"in-process ceiling, generate ({weights}): {CLIENTS} rows stepped together "
            "(ref: one row)", "chars/s", statistics.median(r[CLIENTS] for r in rows),
            statistics.median(r[1] for r in rows), "", [f"rows_{quantize}"])  # fmt: skip
    speedups(sec, f"generate ({weights}): speed-up of {CLIENTS} streams over one through the "
             f"server / the ceiling's ({CLIENTS} rows of Batch.step over one), median of the "
             "rounds' ratios",
             [t / a for t, a in zip(together, alone, strict=True)],
             [r[CLIENTS] / r[1] for r in rows], [key, f"rows_{quantize}"])  # fmt: skip
    alone_first, first = firsts[-1]
    sec.notes.append(
        f"generate ({weights}) time to the first character, last round: alone "
        f"{alone_first:.3f} s; with {CLIENTS} streams p50 {percentile(first, 50):.3f} s, p99 "
        f"{percentile(first, 99):.3f} s"
    )


def batches(sec: Section, run_dir: Path, source: Path, translate: list, quantize: str,
            rounds: int) -> None:  # fmt: skip
    """32 translate clients with batching against without (--max-batch 1), two servers
    of the translator alone, beside the in-process ceiling (probe-batches: batches of 32
    against one sentence at a time, on the same sentences), round by round."""
    weights, key = weights_of(quantize), f"serve_tr_{quantize}"
    together, alone = translate[:BATCHED], translate[:ALONE]
    probe = [PYTHON, "bench/run.py", "probe-batches", run_dir, source, quantize, len(alone),
             len(together)]  # fmt: skip
    sec.commands[f"batches_{quantize}"] = " ".join(map(str, probe))
    servers = {}
    try:
        for batching, options in (("on", []), ("off", ["--max-batch", 1])):
            servers[batching] = Server({"de-en": run_dir}, "--quantize", quantize, *options)
            sec.commands[f"{key}_{batching}"] = " ".join(servers[batching].argv)
            load(servers[batching], translate[:CLIENTS])  # warm-up
        on, off, ceiling = [], [], []
        for _ in range(rounds):
            on.append(len(together) / load(servers["on"], together)[0])
            off.append(len(alone) / load(servers["off"], alone)[0])
            ceiling.append({int(k): v for k, v in json.loads(run(probe).stdout).items()})
    finally:
        for server in servers.values():
            server.stop()
    sec.add(f"in-process ceiling, translate beam 5 ({weights}): batches of {CLIENTS} in "
            f"file order, the first {len(together)} sentences (ref: one sentence at a time, "
            f"the first {len(alone)})", "sentences/s",
            statistics.median(c[CLIENTS] for c in ceiling),
            statistics.median(c[1] for c in ceiling), "", [f"batches_{quantize}"])  # fmt: skip
    speedups(sec, f"translate beam 5 ({weights}): speed-up of {CLIENTS} clients with batching "
             f"over without / the ceiling's (batches of {CLIENTS} over one sentence at a time), "
             "median of the rounds' ratios",
             [a / b for a, b in zip(on, off, strict=True)],
             [c[CLIENTS] / c[1] for c in ceiling],
             [f"{key}_on", f"{key}_off", f"batches_{quantize}"])  # fmt: skip


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
                    *_, chars = server.first_and_total(
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
    decode_step and each row's own sampling) for STREAM_CHARS steps: one row (the
    median of three runs, as the server's one stream alone) and CLIENTS rows."""
    import torch

    import seqtool
    from seqtool.decoding import Batch

    generator = seqtool.load(run_dir, device="cpu", quantize=quantize)
    prompt = generator.tokenizer.encode("ROMEO:")

    def rate(count: int) -> float:
        rows = Batch(generator.model)
        for seed in range(count):  # one at a time, as streams join
            rows.join([prompt], (1.0, None, None), [seed])
        for _ in range(20):  # warm-up
            rows.step().tolist()
        start = time.perf_counter()
        for _ in range(STREAM_CHARS):
            rows.step().tolist()  # read back each step, as the server does
        return count * STREAM_CHARS / (time.perf_counter() - start)

    with torch.inference_mode():
        rates = {1: statistics.median(rate(1) for _ in range(3)), CLIENTS: rate(CLIENTS)}
    print(json.dumps(rates))


def probe_batches(run_dir: str, source: str, quantize: str, alone: str, together: str) -> None:
    """Prints {batch size: sentences/s} of Translator.translate at beam 5: the file's
    first `alone` lines one at a time, and its first `together` lines by CLIENTS, as the
    server calls it (no sorting across groups); weights as `quantize` makes them."""
    import seqtool

    translator = seqtool.load(run_dir, device="cpu", quantize=quantize)
    lines = Path(source).read_text(encoding="utf-8").splitlines()
    translator.translate(lines[:CLIENTS], beam_size=5)  # warm-up
    rates = {}
    for size, subset in ((1, lines[: int(alone)]), (CLIENTS, lines[: int(together)])):
        start = time.perf_counter()
        for i in range(0, len(subset), size):
            translator.translate(subset[i : i + size], beam_size=5, batch_size=size)
        rates[size] = len(subset) / (time.perf_counter() - start)
    print(json.dumps(rates))
