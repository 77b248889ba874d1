"""`seqtool serve`: the HTTP API against tiny trained models, on 127.0.0.1 only.

Every answer is checked against the library's own answer for the same input: the
server batches requests together but must not change what any of them gets.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest
from click.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[dev]'")
httpx = pytest.importorskip("httpx", reason="httpx is not installed: pip install -e '.[dev]'")
uvicorn = pytest.importorskip("uvicorn", reason="the serve extra is not installed")

import seqtool  # noqa: E402
from seqtool.cli import cli  # noqa: E402
from seqtool.errors import ConfigError  # noqa: E402
from seqtool.serve import Limits, serve  # noqa: E402
from seqtool.serve.app import create_app  # noqa: E402
from seqtool.serve.server import Protocol  # noqa: E402
from seqtool.serve.workers import HOLD, RECENT, BatchWorker, Job  # noqa: E402
from tests.conftest import TEXT, TINY  # noqa: E402
from tests.test_classifier import sentiment_lines, train_classifier  # noqa: E402
from tests.test_translator import date_lines, train_translator, write_dates  # noqa: E402


def run_cli(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def train_runs(root: Path) -> dict[str, Path]:
    """One tiny trained model of each task (as tests/test_api.py trains them)."""
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    runs = {"gen": root / "gen", "clf": root / "clf", "tr": root / "tr"}
    result = run_cli(
        "train", "generator", "--train", corpus, "--out", runs["gen"], "--max-steps", 10, *TINY
    )
    assert result.exit_code == 0, result.output
    sentiment = root / "train.tsv", root / "valid.tsv"
    sentiment[0].write_text("\n".join(sentiment_lines(400, 0)) + "\n")
    sentiment[1].write_text("\n".join(sentiment_lines(100, 1)) + "\n")
    result = train_classifier(
        run_cli, sentiment, runs["clf"], "--max-steps", 60, "--pooling", "attention"
    )
    assert result.exit_code == 0, result.output
    dates = write_dates(root)
    result = train_translator(run_cli, dates, runs["tr"])
    assert result.exit_code == 0, result.output
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Trained once per session: every serve test module reads the same runs."""
    root = tmp_path_factory.getbasetemp() / "serve-runs"
    if not (root / "trained").exists():
        root.mkdir(exist_ok=True)
        train_runs(root)
        (root / "trained").touch()
    return {name: root / name for name in ("gen", "clf", "tr")}


@pytest.fixture(scope="module")
def models(runs):
    return {name: seqtool.load(path, device="cpu") for name, path in runs.items()}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def live(models, **limits):
    """The app on uvicorn in a thread (with serve's HTTP protocol), on 127.0.0.1 and a free
    port: yields (client, app)."""
    app = create_app(models, Limits(**limits))
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error", http=Protocol)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        assert thread.is_alive(), "the server did not start"
        time.sleep(0.01)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
            yield client, app
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def server(models):
    with live(models, max_generate_length=100_000) as (client, app):
        yield client, app


def close(got, want) -> bool:
    """Equal, but floats only to float32 precision (within 1e-5, or 1e-4 for numbers
    rounded to 4 places). The library itself gives a sentence a score that differs in
    the 7th digit when it is translated in a padded batch rather than alone (measured:
    5 of 48 sentences, texts and tokens identical), and the server batches."""
    if isinstance(got, float) or isinstance(want, float):
        return got == pytest.approx(want, rel=1e-5, abs=1e-4)
    if isinstance(got, dict) and isinstance(want, dict):
        return got.keys() == want.keys() and all(close(got[k], want[k]) for k in got)
    if isinstance(got, list | tuple) and isinstance(want, list | tuple):
        return len(got) == len(want) and all(close(a, b) for a, b in zip(got, want, strict=True))
    return got == want


def calling(model, call):
    """A copy of `model` that the server calls through `call(texts, **options)`: it calls
    a model as a pipeline is called, model(texts, ...), which Python looks up on the
    model's class, not on the model."""
    copied = copy.copy(model)
    cls = type(model)
    copied.__class__ = type(cls.__name__, (cls,), {"__call__": lambda self, *a, **k: call(*a, **k)})
    return copied


def events(response) -> list[dict]:
    return [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]


# -- answers -----------------------------------------------------------------------------


def test_health_and_models(server, models):
    client, _ = server
    assert client.get("/health").json() == {"status": "ok"}  # names no models
    listed = client.get("/v1/models").json()["data"]
    assert [(m["id"], m["task"]) for m in listed] == [
        ("gen", "generator"), ("clf", "classifier"), ("tr", "translator"),
    ]  # fmt: skip
    assert listed[0]["info"]["steps"] == models["gen"].info["steps"]
    assert "path" not in listed[0]["info"] and str(models["gen"].info["path"]) not in str(listed)
    assert "/v1/translate" in client.get("/openapi.json").json()["paths"]
    assert client.get("/docs").status_code == 200


def test_models_lists_no_file_paths_of_an_averaged_checkpoint(models):
    averaged = copy.copy(models["gen"])  # as `seqtool average` or --average-last writes
    averaged.info = {**averaged.info, "averaged": ["/home/op/runs/a.ckpt", "/home/op/b.ckpt"]}
    with live({"avg": averaged}) as (client, _):
        listed = client.get("/v1/models")
    assert listed.status_code == 200 and "/home/op" not in listed.text
    assert listed.json()["data"][0]["info"]["steps"] == averaged.info["steps"]


def test_translate_gives_the_models_answer(server, models):
    client, _ = server
    texts = ["3 march 2021", "12 june 1999", ""]
    reply = client.post(
        "/v1/translate",
        json={"model": "tr", "text": texts, "beam_size": 3, "n_best": 2, "attention": True},
    )
    assert reply.status_code == 200, reply.text
    own = models["tr"].translate(texts, beam_size=3, n_best=2, attention=True)
    assert close(reply.json(), {"translations": [t.to_dict() for t in own]})
    assert "attention" in reply.json()["translations"][0]
    single = client.post("/v1/translate", json={"model": "tr", "text": "3 march 2021"}).json()
    assert single == {"translations": [models["tr"].translate("3 march 2021").to_dict()]}
    listed = client.post("/v1/translate", json={"model": "tr", "text": texts, "shortlist": True})
    own = models["tr"].translate(texts, shortlist=True)
    assert close(listed.json(), {"translations": [t.to_dict() for t in own]})


def test_a_shortlist_needs_a_model_that_has_one(models, caplog):
    older = copy.copy(models["tr"])
    older.shortlist = None  # as loaded from a checkpoint written before shortlists
    with live({"tr": older}) as (client, _):
        reply = client.post("/v1/translate", json={"model": "tr", "text": "x", "shortlist": True})
    assert reply.status_code == 422
    assert reply.json()["error"].startswith("shortlist: model 'tr' has no")  # not --shortlist
    assert "Traceback" not in caplog.text


def test_a_value_the_library_refuses_in_the_engine_is_one_log_line(models, caplog):
    """A client's error found only by the model call: 422 with the library's message,
    and one warning line, no traceback (that is for faults of the server's own)."""

    def refuses(texts, **options):
        raise ConfigError("a value this model cannot take")

    with live({"clf": calling(models["clf"], refuses)}) as (client, _):
        reply = client.post("/v1/classify", json={"model": "clf", "text": "x"})
    assert (reply.status_code, reply.json()) == (422, {"error": "a value this model cannot take"})
    lines = [r for r in caplog.records if r.name == "seqtool.serve"]
    assert [(r.levelname, r.exc_info) for r in lines] == [("WARNING", None)]


def test_classify_gives_the_models_answer_and_explains(server, models):
    client, _ = server
    texts = ["a gorgeous witty film", "dull and boring"]
    reply = client.post(
        "/v1/classify", json={"model": "clf", "text": texts, "top_k": 2, "explain": True}
    ).json()
    assert reply["results"] == [c.to_dict() for c in models["clf"].classify(texts, top_k=2)]
    explained = models["clf"].explain(texts[0])
    assert reply["explanation"] == {"pieces": explained.pieces, "weights": explained.weights}


def test_generate_and_stream_give_the_librarys_text(server, models):
    client, _ = server
    own = models["gen"].generate("the ", length=60, temperature=0.9, top_k=5, seed=7)
    request = {"model": "gen", "prompt": "the ", "length": 60, "temperature": 0.9, "top_k": 5}
    reply = client.post("/v1/generate", json={**request, "seed": 7}).json()
    assert reply == {"text": own, "tokens": 60, "seed": 7}
    with client.stream("POST", "/v1/generate", json={**request, "seed": 7, "stream": True}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        got = events(r)
    assert len(got) > 2  # the text arrives piece by piece
    assert "".join(e.get("text", "") for e in got) == own
    assert got[-1] == {"done": True, "tokens": 60, "seed": 7}
    unseeded = client.post("/v1/generate", json={"model": "gen", "length": 5}).json()
    assert unseeded["text"] == models["gen"].generate("", length=5, seed=unseeded["seed"])
    again = {"model": "gen", "length": 5, "seed": unseeded["seed"]}  # a seed it takes back
    assert client.post("/v1/generate", json=again).json()["text"] == unseeded["text"]


# -- bad input ---------------------------------------------------------------------------

BAD = [
    ("/v1/translate", b'{"model": "tr", "text": ', 422, "malformed JSON"),
    ("/v1/translate", {"text": "x"}, 422, "model"),
    ("/v1/translate", {"model": "tr"}, 422, "text"),
    ("/v1/translate", {"model": "tr", "text": 5}, 422, "text"),
    ("/v1/translate", {"model": "tr", "text": "x", "beam_size": "wide"}, 422, "beam_size"),
    ("/v1/translate", {"model": "nope", "text": "x"}, 404, "unknown model 'nope'"),
    (
        "/v1/translate",
        {"model": "n" * 100_000, "text": "x"},
        404,
        f"unknown model '{'n' * 80}'... (100,000 characters); models: ",
    ),
    ("/v1/translate", {"model": "gen", "text": "x"}, 422, "is a generator"),
    ("/v1/translate", {"model": "tr", "text": "x", "beam_size": 0}, 422, "beam_size"),
    ("/v1/translate", {"model": "tr", "text": "x", "n_best": 3, "beam_size": 2}, 422, "n_best"),
    ("/v1/translate", {"model": "tr", "text": "x", "beams": 2}, 422, "beams"),
    ("/v1/translate", {"model": "tr", "text": []}, 422, "text"),
    ("/v1/translate", {"model": "tr", "text": ["x"] * 300}, 422, "at most 256"),
    ("/v1/translate", {"model": "tr", "text": ["x", "y" * 3000]}, 422, "text[1]"),
    ("/v1/classify", {"model": "clf", "text": "x", "threshold": 2}, 422, "threshold"),
    ("/v1/classify", {"model": "clf", "text": "x", "top_k": 0}, 422, "top_k"),
    ("/v1/generate", {"model": "gen", "temperature": -1}, 422, "temperature"),
    ("/v1/generate", {"model": "gen", "top_p": 1.5}, 422, "top_p"),
    ("/v1/generate", {"model": "gen", "length": 0}, 422, "length"),
    ("/v1/generate", {"model": "gen", "length": 2001}, 422, "length"),
    ("/v1/generate", {"model": "gen", "prompt": "x" * 2001}, 422, "prompt"),
    ("/v1/generate", {"model": "gen", "stream": "maybe"}, 422, "stream"),
    ("/v1/classify", b"x" * 2_000_001, 413, "max-request-bytes"),
    ("/v1/nothing", {}, 404, "Not Found"),
]


@pytest.mark.parametrize("path, body, status, says", BAD, ids=[b[3] for b in BAD])
def test_bad_input_gets_a_4xx_naming_the_field(models, path, body, status, says):
    from fastapi.testclient import TestClient

    with TestClient(create_app(models, Limits())) as client:
        if isinstance(body, bytes):
            reply = client.post(path, content=body, headers={"content-type": "application/json"})
        else:
            reply = client.post(path, json=body)
    assert reply.status_code == status, reply.text
    assert says in reply.json()["error"], reply.json()
    assert "Traceback" not in reply.text


def test_api_key_is_required_on_v1_routes(models, monkeypatch):
    from fastapi.testclient import TestClient

    with TestClient(create_app(models, Limits(api_key="s3cret"))) as client:
        assert client.get("/health").status_code == 200
        request = {"model": "clf", "text": "fine"}
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            reply = client.post("/v1/classify", json=request, headers=headers)
            assert reply.status_code == 401 and "API key" in reply.json()["error"]
        assert client.get("/v1/models").status_code == 401
        good = {"Authorization": "Bearer s3cret"}
        assert client.post("/v1/classify", json=request, headers=good).status_code == 200


@pytest.mark.parametrize("key", ["", "two words", "tab\tkey", "kl\u00fcssel", " s3cret"])
def test_an_api_key_that_no_header_can_carry_is_refused(key):
    """An empty key let "Authorization: Bearer" alone in; a space or a character outside
    printable ASCII cannot come back in a header as sent, so every request was refused."""
    with pytest.raises(ConfigError, match="must be printable ASCII without spaces"):
        Limits(api_key=key)


# -- batching ----------------------------------------------------------------------------


def test_concurrent_requests_merge_and_each_gets_its_own_answer(models):
    sentences = [line.split("\t")[0] for line in date_lines(48, 5)]
    texts = [f"word{i} film is {'great' if i % 2 else 'awful'}" for i in range(48)]
    with live(models, max_wait_ms=50) as (client, app):

        def translate(i):
            body = {"model": "tr", "text": sentences[i], "beam_size": 1 + i % 2}
            return client.post("/v1/translate", json=body).json()["translations"][0]

        def classify(i):
            body = {"model": "clf", "text": texts[i : i + 2]}
            return client.post("/v1/classify", json=body).json()["results"]

        with ThreadPoolExecutor(16) as pool:
            translations = list(pool.map(translate, range(48)))
            classes = list(pool.map(classify, range(48)))
        workers = app.state.workers
    for i, got in enumerate(translations):
        assert close(got, models["tr"].translate(sentences[i], beam_size=1 + i % 2).to_dict())
    for i, got in enumerate(classes):
        assert close(got, [c.to_dict() for c in models["clf"].classify(texts[i : i + 2])])
    # requests really shared model calls
    assert max(workers["tr"].batch_sizes) > 1 and len(workers["tr"].batch_sizes) < 48
    assert max(workers["clf"].batch_sizes) > 2 and len(workers["clf"].batch_sizes) < 48


def test_max_batch_one_turns_batching_off(models):
    with live(models, max_batch=1, max_wait_ms=50) as (client, app):
        with ThreadPoolExecutor(8) as pool:
            body = {"model": "clf", "text": "good"}
            list(pool.map(lambda _: client.post("/v1/classify", json=body), range(8)))
        assert set(app.state.workers["clf"].batch_sizes) == {1}


class Answers:
    """A Job's reply, kept: what the worker put, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[str, object]] = []
        self.cancelled = False

    def put(self, kind: str, value) -> None:
        self.items.append((kind, value))


def test_a_batch_waits_out_gaps_between_requests_up_to_a_limit(models):
    """The batching rule, on the worker itself with given clock readings: a batch goes
    when no request came for max_wait, at the latest HOLD x max_wait after its first;
    requests that queued while the previous batch ran still wait max_wait after it."""
    worker = BatchWorker("tr", models["tr"], max_batch=8, max_queue=16, max_wait_ms=10)
    options = {"beam_size": 2}

    def queue_at(t: float) -> Answers:
        answers = Answers()
        worker.submit(Job(["3 march 2021"], options, answers, queued=t))
        return answers

    t = 1000.0  # requests that keep coming: at most HOLD x max_wait
    for k in range(6):
        queue_at(t + 0.008 * k)
    assert worker.cycle(t + 0.039) == pytest.approx(t + HOLD * 0.010)
    worker.cycle(t + HOLD * 0.010)
    assert list(worker.batch_sizes) == [6]

    t = worker.ended + 1.0
    first = queue_at(t)
    assert worker.cycle(t + 0.005) == pytest.approx(t + 0.010)  # waits for more
    queue_at(t + 0.008)
    assert worker.cycle(t + 0.012) == pytest.approx(t + 0.018)  # a gap of 10 ms from the last
    queue_at(t + 0.016)
    worker.cycle(t + 0.027)
    assert list(worker.batch_sizes) == [6, 3]
    assert first.items[0][0] == "result"
    own = models["tr"].translate("3 march 2021", **options).to_dict()
    assert close(first.items[0][1]["results"][0], own)  # merged: see close()

    early = worker.ended - 1.0  # queued while a batch ran: the wait starts at its end
    queue_at(early)
    assert worker.cycle(worker.ended + 0.001) == pytest.approx(worker.ended + 0.010)
    for _ in range(8):  # a full batch goes at once
        queue_at(worker.ended)
    worker.cycle(worker.ended)
    assert list(worker.batch_sizes)[-1] == 8


def test_a_batch_as_large_as_the_recent_ones_goes_at_once(models):
    """Clients that send their next request when answered come back together: once as
    many sentences wait as the largest of the last RECENT batches, none is waited for."""
    worker = BatchWorker("tr", models["tr"], max_batch=16, max_queue=32, max_wait_ms=10)
    options = {"beam_size": 2}

    def queue(n: int, t: float) -> None:
        for _ in range(n):
            worker.submit(Job(["3 march 2021"], options, Answers(), queued=t))

    t = 1000.0
    queue(5, t)
    assert worker.cycle(t) == pytest.approx(t + 0.010)  # no batch yet to go by: the gap
    worker.cycle(t + 0.010)
    queue(5, worker.ended)
    worker.cycle(worker.ended)  # as many as the last batch: at once
    assert list(worker.batch_sizes) == [5, 5]
    queue(4, worker.ended)  # fewer: the gap, as before
    assert worker.cycle(worker.ended) == pytest.approx(worker.ended + 0.010)
    assert list(worker.batch_sizes) == [5, 5]
    queue(RECENT, worker.ended)  # a larger batch raises the bar
    worker.cycle(worker.ended)
    assert list(worker.batch_sizes)[-1] == 4 + RECENT
    queue(5, worker.ended)
    assert worker.cycle(worker.ended) == pytest.approx(worker.ended + 0.010)


def test_one_engine_thread_runs_every_model_call(models):
    """Every model's calls run on the same thread (a second thread running torch
    operations starts a second set of OpenMP threads, which slows every step)."""
    threads = set()

    def recorded(call):
        def run(*args, **kwargs):
            threads.add(threading.get_ident())
            return call(*args, **kwargs)

        return run

    tr = calling(models["tr"], recorded(models["tr"].translate))
    clf = calling(models["clf"], recorded(models["clf"].classify))
    with live({"tr": tr, "clf": clf, "gen": models["gen"]}) as (client, app):
        batch = app.state.workers["gen"].generations.batch
        batch.step = recorded(batch.step)
        asks = [
            ("/v1/translate", {"model": "tr", "text": "3 march 2021"}),
            ("/v1/classify", {"model": "clf", "text": "good"}),
            ("/v1/generate", {"model": "gen", "length": 20}),
        ] * 4
        with ThreadPoolExecutor(6) as pool:
            replies = list(pool.map(lambda ask: client.post(ask[0], json=ask[1]), asks))
    assert all(r.status_code == 200 for r in replies)
    assert len(threads) == 1 and threading.get_ident() not in threads


def failing():
    raise RuntimeError("a fault")


def test_a_fault_in_one_model_fails_its_requests_and_serving_goes_on(models, caplog):
    with live(models) as (client, app):
        app.state.workers["gen"].generations.batch.step = failing
        failed = client.post("/v1/generate", json={"model": "gen", "length": 5})
        assert failed.status_code == 500
        assert failed.json() == {"error": "internal error (RuntimeError); see the server log"}
        assert client.post("/v1/classify", json={"model": "clf", "text": "good"}).status_code == 200
        assert client.post("/v1/generate", json={"model": "gen", "length": 5}).status_code == 200
    assert "model 'gen' failed" in caplog.text


def test_a_failing_step_fails_the_streams_of_its_batch_and_queued_ones_run(models, caplog):
    """A step that raises fails the streams it was sampling (their state is the batch's),
    not the streams still queued, and the model serves the next requests."""
    long = {"model": "gen", "length": 100_000, "stream": True}
    with live(models, max_batch=2, max_generate_length=100_000) as (client, app):
        worker = app.state.workers["gen"]
        with (
            client.stream("POST", "/v1/generate", json={**long, "seed": 1}) as first,
            client.stream("POST", "/v1/generate", json={**long, "seed": 2}) as second,
            ThreadPoolExecutor(1) as pool,
        ):
            running = [first.iter_lines(), second.iter_lines()]
            for lines in running:  # keep them: a dropped iterator closes the connection
                next(lines)
            queued = pool.submit(
                client.post, "/v1/generate", json={"model": "gen", "length": 30, "seed": 3}
            )
            while worker.jobs.qsize() < 1:  # the batch is full: it waits
                time.sleep(0.01)
            worker.generations.batch.step = failing
            for lines in running:
                got = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
                assert got[-1] == {"error": "internal error"}
            reply = queued.result(timeout=20)
        assert reply.status_code == 200, reply.text
        assert reply.json()["text"] == models["gen"].generate("", length=30, seed=3)
        again = client.post("/v1/generate", json={"model": "gen", "length": 5, "seed": 4})
        assert again.json()["text"] == models["gen"].generate("", length=5, seed=4)
    assert "model 'gen' failed" in caplog.text


class Refusing:
    """A tokenizer that cannot read a prompt holding "poison" (a stand-in for a prompt
    the library fails on)."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer

    def __getattr__(self, name: str):
        return getattr(self.tokenizer, name)

    def encode(self, text: str) -> list[int]:
        if "poison" in text:
            raise RuntimeError("a fault of one prompt")
        return self.tokenizer.encode(text)


def test_a_stream_the_library_refuses_never_joins_the_running_batch(models, caplog):
    """A stream whose own prompt fails fails alone, before it joins: the stream running
    meanwhile gets its whole text, as it gets it alone."""
    gen = copy.copy(models["gen"])
    gen.tokenizer = Refusing(gen.tokenizer)
    body = {"model": "gen", "prompt": "the ", "length": 10_000, "seed": 5, "stream": True}
    with (
        live({"gen": gen}, max_generate_length=100_000) as (client, app),
        client.stream("POST", "/v1/generate", json=body) as running,
    ):
        lines = running.iter_lines()
        first = json.loads(next(lines)[6:])
        refused = client.post("/v1/generate", json={"model": "gen", "prompt": "poison"})
        assert refused.status_code == 500
        assert app.state.workers["gen"].streams  # it did run beside the one refused
        got = [first, *(json.loads(line[6:]) for line in lines if line.startswith("data: "))]
    assert got[-1] == {"done": True, "tokens": 10_000, "seed": 5}
    text = "".join(e.get("text", "") for e in got)
    assert text == models["gen"].generate("the ", length=10_000, seed=5)
    assert "request failed" in caplog.text


def test_a_stream_sends_its_text_at_most_every_interval(models):
    """The first text at once, then what piled up every --stream-interval-ms (here
    longer than the whole generation: the rest comes with the end); 0 sends each token."""
    own = models["gen"].generate("the ", length=200, seed=3)
    body = {"model": "gen", "prompt": "the ", "length": 200, "seed": 3, "stream": True}
    for interval, count in ((60_000, 3), (0, None)):
        with (
            live(models, stream_interval_ms=interval) as (client, _),
            client.stream("POST", "/v1/generate", json=body) as r,
        ):
            got = events(r)
        assert "".join(e.get("text", "") for e in got) == own
        if count:
            assert len(got) == count
        else:
            assert len(got) > 50


def test_concurrent_streams_each_get_their_text_alone(server, models):
    """Continuous batching: streams join and leave a running batch, each keeping its
    own seed and options, and each gets exactly the text it gets alone."""
    client, app = server
    asks = [
        {"prompt": "the ", "length": 80, "temperature": 0.8, "seed": 1},
        {"prompt": "a stitch", "length": 50, "temperature": 1.2, "top_k": 4, "seed": 2},
        {"prompt": "", "length": 120, "temperature": 0.5, "top_p": 0.9, "seed": 3},
        {"prompt": "to be", "length": 30, "temperature": 0.0, "seed": 4},
        {"prompt": "the ", "length": 90, "temperature": 1.0, "top_k": 8, "top_p": 0.8, "seed": 5},
        {"prompt": "quick", "length": 70, "temperature": 0.8, "seed": 6},
    ]
    app.state.workers["gen"].batch_sizes.clear()

    def stream(ask):
        time.sleep(ask["seed"] * 0.003)  # arrive at different steps
        body = {"model": "gen", "stream": True, **ask}
        with client.stream("POST", "/v1/generate", json=body) as r:
            return "".join(e.get("text", "") for e in events(r))

    with ThreadPoolExecutor(len(asks)) as pool:
        texts = list(pool.map(stream, asks))
    for ask, text in zip(asks, texts, strict=True):
        options = {k: v for k, v in ask.items() if k != "prompt"}
        assert text == models["gen"].generate(ask["prompt"], **options), ask
    assert max(app.state.workers["gen"].batch_sizes) > 1


def test_health_answers_during_a_long_generation(server):
    client, app = server
    body = {"model": "gen", "length": 100_000, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as r:
        lines = r.iter_lines()  # keep it: a dropped iterator closes the connection
        next(lines)
        started = time.perf_counter()
        assert client.get("/health").status_code == 200
        assert time.perf_counter() - started < 1.0
        assert app.state.workers["gen"].streams  # still generating
    assert freed(app.state.workers["gen"])  # the next test starts without it


def freed(worker, seconds: float = 5.0) -> bool:
    """Whether the worker's streams all end within `seconds`: a client that leaves is
    noticed at the next piece sent to it, not at once."""
    deadline = time.monotonic() + seconds
    while worker.streams and time.monotonic() < deadline:
        time.sleep(0.01)
    return not worker.streams


def test_a_client_that_disconnects_frees_its_slot(server):
    client, app = server
    worker = app.state.workers["gen"]
    assert freed(worker)  # nothing left from an earlier test
    body = {"model": "gen", "length": 100_000, "stream": True}
    with client.stream("POST", "/v1/generate", json=body) as r:
        lines = r.iter_lines()  # keep it: a dropped iterator closes the connection
        next(lines)
        assert len(worker.streams) == 1
    assert freed(worker)


@contextmanager
def slot_taken(client):
    """A streamed generation that holds a server's one batch slot until the block ends
    (or the response it yields is closed)."""
    long = {"model": "gen", "length": 100_000, "stream": True}
    with client.stream("POST", "/v1/generate", json=long) as r:
        lines = r.iter_lines()  # keep it: a dropped iterator closes the connection
        next(lines)
        yield r


@contextmanager
def one_waiting(client, worker):
    """The server's one batch slot taken (slot_taken) and a 5-token generation queued
    behind it: yields (the slot's response, the queued request's future)."""
    with slot_taken(client) as r, ThreadPoolExecutor(1) as pool:
        waiting = pool.submit(
            client.post, "/v1/generate", json={"model": "gen", "length": 5, "seed": 1}
        )
        while worker.jobs.qsize() < 1:
            time.sleep(0.01)
        yield r, waiting


def test_a_full_queue_answers_503_with_retry_after(models):
    limits = {"max_batch": 1, "max_queue": 1, "max_generate_length": 100_000}
    with (
        live(models, **limits) as (client, app),
        one_waiting(client, app.state.workers["gen"]) as (r, waiting),
    ):
        refused = client.post("/v1/generate", json={"model": "gen", "length": 5})
        assert refused.status_code == 503
        assert refused.headers["retry-after"] == "1"
        assert "busy" in refused.json()["error"]
        r.close()  # leaving frees the slot: the waiting request runs
        assert waiting.result(timeout=10).json()["tokens"] == 5


def test_a_completion_refused_part_way_leaves_no_stream_queued(models):
    """4 streams where 3 fit: 503, and none of the 4 waits to run for nobody."""
    with live(models, max_batch=1, max_queue=4, max_generate_length=100_000) as (client, app):
        worker = app.state.workers["gen"]
        with one_waiting(client, worker) as (r, waiting):
            many = {"model": "gen", "prompt": "the", "n": 4, "max_tokens": 5}
            refused = client.post("/v1/completions", json=many)
            assert refused.status_code == 503 and "busy" in refused.json()["error"]
            assert worker.jobs.qsize() == 1
            r.close()
            assert waiting.result(timeout=10).json()["tokens"] == 5


def test_a_completion_with_more_streams_than_the_queue_holds_is_a_client_error(models):
    """Retrying could never help: 422 naming the limit, not 503."""
    with live(models, max_queue=4) as (client, _):
        many = {"model": "gen", "prompt": ["the", "a"], "n": 3, "max_tokens": 5}
        refused = client.post("/v1/completions", json=many)
        assert refused.status_code == 422
        assert refused.json()["error"] == "n x prompts: 6, at most 4 (--max-queue)"
        fits = client.post("/v1/completions", json={**many, "n": 2})
        assert fits.status_code == 200 and len(fits.json()["choices"]) == 4


def test_load_many_clients_all_get_the_models_answers(server, models):
    """200 requests from 16 concurrent clients, a mix of the three tasks."""
    client, _ = server
    sentences = [line.split("\t")[0] for line in date_lines(20, 9)]

    def ask(i):
        if i % 3 == 0:
            body = {"model": "tr", "text": sentences[i % 20]}
            got = client.post("/v1/translate", json=body).json()["translations"][0]
            return close(got, models["tr"].translate(sentences[i % 20]).to_dict())
        if i % 3 == 1:
            text = f"film {i} is {'good' if i % 2 else 'bad'}"
            got = client.post("/v1/classify", json={"model": "clf", "text": text}).json()
            return close(got["results"], [models["clf"].classify(text).to_dict()])
        body = {"model": "gen", "prompt": "the", "length": 20, "seed": i}
        got = client.post("/v1/generate", json=body).json()["text"]
        return got == models["gen"].generate("the", length=20, seed=i)

    started = time.perf_counter()
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, range(200)))
    assert all(answers), [i for i, ok in enumerate(answers) if not ok]
    assert time.perf_counter() - started < 30


# -- the command -------------------------------------------------------------------------


def test_help_does_not_import_the_serve_extra():
    code = (
        "import sys, seqtool.cli; print(sorted({'fastapi', 'uvicorn', 'torch'} & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_serve_without_the_extra_says_how_to_install(runs, monkeypatch):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now fails
    result = run_cli("serve", runs["gen"])
    assert result.exit_code == 1
    assert (
        "Error: seqtool serve needs the serve extra: pip install -e '.[serve]' in the seqtool "
        "repository" in result.output
    )


def test_a_bad_log_level_is_one_error_line(runs, monkeypatch):
    monkeypatch.setenv("SEQTOOL_LOG_LEVEL", "bogus")
    result = run_cli("serve", runs["gen"])
    assert result.exit_code == 1 and result.stderr.splitlines() == [
        "Error: SEQTOOL_LOG_LEVEL 'bogus': choose one of critical, error, warning, info, "
        "debug, trace"
    ]


def test_an_address_that_cannot_be_listened_on_is_one_line_before_the_models_load(runs):
    """uvicorn logged a port in use among its start-up lines, after every model had
    loaded; a host that is not this machine's likewise."""
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for host, why in (("127.0.0.1", "Address already in use"),
                          ("192.0.2.1", "Cannot assign requested address")):  # fmt: skip
            result = run_cli("serve", runs["gen"], "--host", host, "--port", port)
            assert result.exit_code == 1 and result.stderr.splitlines() == [
                f"Error: cannot listen on {host}:{port} ({why}); give another --host or --port"
            ]


def test_request_lines_go_to_stderr_and_stdout_stays_empty(runs):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "seqtool", "serve", str(runs["gen"]), "--port", str(port),
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "SEQTOOL_LOG_LEVEL": "info"},
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                assert httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200
                break
            except httpx.TransportError:
                time.sleep(0.2)
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
    assert out == ""
    assert '"GET /health HTTP/1.1" 200' in err


@contextmanager
def served(*args, env: dict | None = None):
    """`seqtool serve ARGS` in a subprocess on a free port of 127.0.0.1, once it answers
    /health: yields (process, base url); killed at the end if still running."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "seqtool", "serve", *map(str, args), "--port", str(port),
         "--threads", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "SEQTOOL_LOG_LEVEL": "warning", **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/health")
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.2)
        yield server, url
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()


def test_sigterm_lets_the_request_in_flight_finish_and_exits_0(runs):
    args = f"poet={runs['gen']}", runs["clf"], "--max-generate-length", 100_000
    with served(*args) as (server, url):
        listed = httpx.get(f"{url}/v1/models").json()["data"]
        assert [m["id"] for m in listed] == ["poet", "clf"]
        body = {"model": "poet", "length": 3000, "seed": 2, "stream": True}
        with httpx.stream("POST", f"{url}/v1/generate", json=body, timeout=60) as r:
            lines = r.iter_lines()
            next(lines)
            server.send_signal(signal.SIGTERM)
            rest = [json.loads(line[6:]) for line in lines if line.startswith("data: ")]
        assert rest[-1]["done"] and rest[-1]["tokens"] == 3000
        assert server.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{url}/health")


def test_max_generate_length_is_the_limit_and_max_length_its_old_name(runs):
    """`--max-length` of `seqtool train` cuts training lines: the serve limit on tokens
    per generation is --max-generate-length, the old name read as it with a warning."""
    names = {name for param in cli.commands["serve"].params for name in param.opts}
    assert "--max-generate-length" in names and "--max-length" not in names
    old = run_cli("serve", runs["gen"], "--max-length", 0)
    assert old.exit_code == 2 and "'--max-generate-length'" in old.output, old.output
    assert "--max-length is deprecated" in old.output


@pytest.mark.parametrize(
    "option, value",
    [("--max-wait-ms", "60001"), ("--stream-interval-ms", "1e300"), ("--grace-seconds", "86401")],
)
def test_waits_past_their_bound_are_refused_before_anything_loads(runs, option, value):
    """A wait of 1e300 ms passed threading's limit and killed the engine thread at the
    first request (every request then hung); the options and Limits refuse such waits."""
    result = run_cli("serve", runs["gen"], option, value)
    assert result.exit_code == 2 and option in result.output, result.output
    for field in ("max_wait_ms", "stream_interval_ms"):
        for wrong in (float("inf"), float("nan"), 60_001.0, -1.0):
            with pytest.raises(ConfigError, match=f"{field} must be in"):
                Limits(**{field: wrong})
    with pytest.raises(ConfigError, match="grace_seconds must be in"):
        serve([str(runs["gen"])], grace_seconds=float("inf"))
