"""`seqtool serve`: no request can fail, slow or change another; clients that leave and
servers that stop. Live servers on 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import copy
import json
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed: pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[dev]'")

from seqtool.serve import workers  # noqa: E402
from seqtool.serve.server import Protocol  # noqa: E402
from seqtool.serve.workers import BatchWorker, GeneratorWorker, Job, Stream  # noqa: E402
from tests.test_serve import (  # noqa: E402, F401 - fixtures
    Answers,
    calling,
    close,
    free_port,
    freed,
    live,
    models,
    runs,
    served,
)
from tests.test_translator import date_lines  # noqa: E402

SENTENCES = [line.split("\t")[0] for line in date_lines(11, 3)]


def good_asks() -> list[tuple[str, dict]]:
    """31 valid requests over the three models."""
    asks = []
    for i in range(31):
        if i % 3 == 0:
            asks.append(("/v1/translate", {"model": "tr", "text": SENTENCES[i // 3]}))
        elif i % 3 == 1:
            asks.append(("/v1/classify", {"model": "clf", "text": f"film {i} is good"}))
        else:
            asks.append(
                ("/v1/generate", {"model": "gen", "prompt": "the", "length": 15, "seed": i})
            )
    return asks


def alone(models, path: str, body: dict):
    """What the library gives the request alone, as the route renders it."""
    if path == "/v1/translate":
        return {"translations": [models["tr"].translate(body["text"]).to_dict()]}
    if path == "/v1/classify":
        return {"results": [models["clf"].classify(body["text"]).to_dict()]}
    text = models["gen"].generate(body["prompt"], length=body["length"], seed=body["seed"])
    return {"text": text, "tokens": body["length"], "seed": body["seed"]}


def post(client, path: str, body) -> httpx.Response:
    """`body` a dict (sent as JSON, surrogates escaped) or raw bytes sent as JSON."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=raw, headers={"content-type": "application/json"})


@pytest.fixture(scope="module")
def server(models):
    with live(models, max_wait_ms=20) as (client, app):
        yield client, app


# each case: a request of the classes that failed or slowed others; (path, body, says)
POISON = [
    ("/v1/generate", {"model": "gen", "prompt": "a", "seed": 2**64}, "seed"),
    ("/v1/generate", {"model": "gen", "seed": -1}, "seed"),
    ("/v1/generate", {"model": "gen", "seed": True}, "seed"),
    ("/v1/generate", {"model": "gen", "length": True}, "length"),
    ("/v1/generate", {"model": "gen", "length": 2.0}, "length"),
    ("/v1/generate", {"model": "gen", "prompt": "\udfff"}, "lone surrogate"),
    ("/v1/generate", {"model": "gen", "top_k": 10**30}, "top_k"),
    ("/v1/generate", {"model": "gen", "top_k": 1001}, "--max-top-k"),
    ("/v1/generate", b'{"model": "gen", "temperature": Infinity}', "temperature"),
    ("/v1/generate", {"model": "gen", "temperature": 1e-320}, None),  # valid: 200
    ("/v1/translate", {"model": "tr", "text": "\ud800"}, "lone surrogate"),
    (
        "/v1/translate",
        {"model": "tr", "text": ["3 may 2001", "x\ud800"]},
        "text[1]: not valid Unicode: a lone surrogate at 1",
    ),
    ("/v1/translate", {"model": "tr", "text": "a", "beam_size": 937, "n_best": 937}, "max-beam"),
    ("/v1/translate", {"model": "tr", "text": "a", "length_penalty": 5000}, "length_penalty"),
    ("/v1/translate", {"model": "tr", "text": "a", "max_length_ratio": 1e308}, "max_length"),
    ("/v1/translate", b'{"model": "tr", "text": "a", "length_penalty": NaN}', "length_penalty"),
    ("/v1/translate", {"model": "tr", "text": "a", "beam_size": 2**70}, "beam_size"),
    ("/v1/translate", {"model": "tr", "text": "a", "attention": 1}, "attention"),
    ("/v1/classify", {"model": "clf", "text": "a", "top_k": 2**40}, "top_k"),
    ("/v1/classify", {"model": "clf", "text": "a", "threshold": "0.5"}, "threshold"),
    ("/v1/classify", {"model": "clf", "text": ["a"] * 257}, "at most 256"),
    ("/v1/classify", b'{"model": "clf", "text": "\xff\xfe"}', "not UTF-8"),
    ("/v1/classify", b'{"model": "clf", "text": ', "malformed JSON"),
    ("/v1/completions", {"model": "gen", "prompt": "a", "n": 1000}, "--max-n"),
    ("/v1/completions", {"model": "gen", "prompt": "a", "seed": 2**63}, "seed"),
]


@pytest.mark.parametrize("path, poison, says", POISON, ids=[str(p[1])[:48] for p in POISON])
def test_a_poisoned_request_among_31_good_ones_touches_none(server, models, path, poison, says):
    client, app = server
    asks, middle = good_asks(), 15
    with ThreadPoolExecutor(32) as pool:
        replies = list(
            pool.map(
                lambda ask: post(client, *ask), [*asks[:middle], (path, poison), *asks[middle:]]
            )
        )
    bad = replies.pop(middle)
    if says is None:
        assert bad.status_code == 200, bad.text
    else:
        assert bad.status_code == 422, bad.text
        assert says in bad.json()["error"], bad.json()
    for (route, body), reply in zip(asks, replies, strict=True):
        assert reply.status_code == 200, (body, reply.text)
        assert close(reply.json(), alone(models, route, body)), body
    assert app.state.engine.alive
    assert client.get("/health").json() == {"status": "ok"}


def test_a_merged_batch_that_fails_is_retried_one_request_at_a_time(models, caplog):
    """A sentence the library fails on (here by a stand-in fault) fails only its own
    request; the requests merged with it get their answers."""
    translate, calls = models["tr"].translate, []

    def faulty(texts, **options):
        calls.append(len(texts))
        if "poison" in texts:
            raise RuntimeError("a fault of one sentence")
        return translate(texts, **options)

    tr = calling(models["tr"], faulty)
    sentences = SENTENCES + ["poison"]
    with live({"tr": tr}, max_wait_ms=100) as (client, _), ThreadPoolExecutor(32) as pool:
        replies = list(
            pool.map(lambda s: post(client, "/v1/translate", {"model": "tr", "text": s}), sentences)
        )
    assert max(calls) > 1  # they did merge
    assert replies[-1].status_code == 500
    for text, reply in zip(sentences[:-1], replies, strict=False):
        assert reply.status_code == 200
        assert close(reply.json()["translations"][0], models["tr"].translate(text).to_dict())
    assert "failed" in caplog.text


def test_a_large_translation_does_not_hold_up_another_model(models):
    """A request of many sentences at the widest beam runs max_batch sentences per engine
    turn; a classify request sent meanwhile is answered before it ends."""
    big = {"model": "tr", "text": SENTENCES * 6, "beam_size": 8, "max_length_ratio": 3.0}
    with live(models, max_batch=2) as (client, app):
        worker = app.state.workers["tr"]
        with ThreadPoolExecutor(1) as pool:
            translation = pool.submit(post, client, "/v1/translate", big)
            deadline = time.monotonic() + 20
            while not worker.ready:
                assert time.monotonic() < deadline and not translation.done()
                time.sleep(0.005)
            quick = post(client, "/v1/classify", {"model": "clf", "text": "fine"})
            assert quick.status_code == 200
            assert not translation.done()  # the classify request did not wait for it
            assert translation.result(timeout=120).status_code == 200
        assert max(worker.batch_sizes) <= 2


def test_long_prompts_join_over_several_steps(models, monkeypatch):
    """A prompt is read token by token: past JOIN_CHARS characters in one cycle the rest
    of the arrivals join at the next cycles, and the running stream steps between."""
    monkeypatch.setattr(workers, "deliver", lambda items: None)  # no event loop here
    worker = GeneratorWorker("gen", models["gen"], max_batch=8, max_queue=8, interval=1.0)
    worker.submit(Stream("the", 1000, {}, 0, Answers()))
    worker.cycle(time.monotonic())
    prompt = ("the cat " * workers.JOIN_CHARS)[: workers.JOIN_CHARS // 2 + 1]
    worker.submit(*(Stream(prompt, 1000, {}, i, Answers()) for i in range(3)))
    joined, steps = [], []
    for _ in range(3):
        due = worker.cycle(time.monotonic())
        joined.append(len(worker.streams))
        steps.append(list(worker.batch_sizes)[-1])
        assert due is not None
    assert joined == [3, 4, 4]  # two prompts reach JOIN_CHARS; the third joins next
    assert steps == [3, 4, 4]  # the running stream stepped in each cycle


# -- clients that leave ------------------------------------------------------------------


def test_queued_work_of_a_client_that_left_is_dropped(models):
    """A job whose client has gone is dropped before its batch runs."""
    worker = BatchWorker("tr", models["tr"], max_batch=8, max_queue=8, max_wait_ms=0)
    left, stays = Answers(), Answers()
    worker.submit(Job(["3 march 2021"], {}, left))
    worker.submit(Job(["4 april 2022"], {}, stays))
    left.cancelled = True
    worker.cycle(time.monotonic())
    assert left.items == [] and stays.items[0][0] == "result"
    assert list(worker.batch_sizes) == [1]


@pytest.mark.parametrize(
    "path, body",
    [
        ("/v1/translate", {"model": "tr", "text": "3 march 2021"}),
        ("/v1/classify", {"model": "clf", "text": "gone"}),
        ("/v1/generate", {"model": "gen", "length": 50}),
        ("/v1/completions", {"model": "gen", "prompt": "a", "max_tokens": 50}),
    ],
)
def test_every_route_drops_the_work_of_a_client_that_left(models, path, body):
    """The engine is held in another model's call while the client gives up; its work
    never runs once the engine is free."""
    held, release = threading.Event(), threading.Event()
    tr, gen = copy.copy(models["tr"]), copy.copy(models["gen"])
    classify, calls = models["clf"].classify, []

    def blocking(texts, **options):
        calls.append(list(texts))
        if texts == ["hold"]:
            held.set()
            release.wait(20)
        return classify(texts, **options)

    clf = calling(models["clf"], blocking)
    with live({"clf": clf, "tr": tr, "gen": gen}) as (client, app):
        with ThreadPoolExecutor(1) as pool:
            holding = pool.submit(post, client, "/v1/classify", {"model": "clf", "text": "hold"})
            assert held.wait(20)
            with pytest.raises(httpx.TimeoutException):
                client.post(path, json=body, timeout=0.3)
            time.sleep(0.2)  # the server notices the closed connection
            release.set()
            assert holding.result(timeout=20).status_code == 200
            assert (
                post(client, "/v1/classify", {"model": "clf", "text": "after"}).status_code == 200
            )
        workers = app.state.workers
        assert ["gone"] not in calls
        assert not workers["tr"].batch_sizes
        assert not workers["gen"].batch_sizes and not workers["gen"].streams


def test_a_request_that_never_arrives_whole_is_cut_off(models, monkeypatch):
    """Connections that send nothing, half their headers or part of their body are
    closed after the read deadline, so that idle sockets cannot use up the server's."""
    monkeypatch.setattr(Protocol, "read_seconds", 0.5)
    with live(models, max_generate_length=100_000) as (client, _):
        port = client.base_url.port
        partial = [
            b"",
            b"GET /health HTTP/1.1\r\nHost: local",
            b"POST /v1/generate HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n{",
        ]
        socks = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in partial]
        for sock, sent in zip(socks, partial, strict=True):
            sock.sendall(sent)
        started = time.monotonic()
        for sock in socks:
            assert sock.recv(100) == b""  # closed by the server, with nothing to say
            sock.close()
        assert time.monotonic() - started < 3
        assert client.get("/health").json() == {"status": "ok"}
        with client.stream("POST", "/v1/generate", json=LONG | {"length": 100_000}) as r:
            lines = r.iter_lines()
            next(lines)
            time.sleep(1)  # an answer that takes longer than the deadline is not cut
            assert next(line for line in lines if line).startswith("data: ")


def test_a_malformed_request_gets_a_json_400_and_the_server_goes_on(models):
    with live(models) as (client, _):
        for sent in (b"NOT HTTP\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header\r\n\r\n"):
            with socket.create_connection(("127.0.0.1", client.base_url.port), timeout=5) as s:
                s.sendall(sent)
                answer = b""
                while chunk := s.recv(4096):  # the server closes the connection
                    answer += chunk
            head, body = answer.split(b"\r\n\r\n", 1)
            assert head.startswith(b"HTTP/1.1 400 ")
            assert b"content-type: application/json" in head.lower()
            assert json.loads(body) == {"error": "malformed HTTP request"}
        assert client.get("/health").json() == {"status": "ok"}


# -- servers that stop -------------------------------------------------------------------


LONG = {"model": "gen", "length": 10_000_000, "stream": True}


def test_grace_seconds_bounds_the_whole_stop(runs):
    args = f"gen={runs['gen']}", "--max-generate-length", 10_000_000, "--grace-seconds", 1
    with (
        served(*args) as (server, url),
        httpx.stream("POST", f"{url}/v1/generate", json=LONG, timeout=60) as r,
    ):
        lines = r.iter_lines()  # keep it: a dropped iterator closes the connection
        next(lines)  # a stream that would outlast the test
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0  # the stream did not hold it beyond its grace


def test_a_request_cut_by_the_end_of_grace_seconds_gets_a_json_503(runs):
    args = f"gen={runs['gen']}", "--max-generate-length", 10_000_000, "--grace-seconds", 1
    with served(*args) as (server, url), ThreadPoolExecutor(1) as pool:
        whole = pool.submit(
            httpx.post, f"{url}/v1/generate", json={**LONG, "stream": False}, timeout=60
        )
        time.sleep(0.5)  # it runs
        server.send_signal(signal.SIGTERM)
        reply = whole.result(timeout=30)
        assert server.wait(30) == 0
        log = server.stdout.read()
    assert (reply.status_code, reply.json()) == (503, {"error": "the server is stopping"})
    assert "Traceback" not in log


def test_a_second_signal_stops_at_once(runs):
    args = f"gen={runs['gen']}", "--max-generate-length", 10_000_000, "--grace-seconds", 600
    with (
        served(*args) as (server, url),
        httpx.stream("POST", f"{url}/v1/generate", json=LONG, timeout=60) as r,
    ):
        lines = r.iter_lines()
        next(lines)
        server.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        assert server.poll() is None  # draining: it waits for the stream
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 128 + signal.SIGTERM


def test_health_says_draining_while_stopping_and_when_the_engine_is_dead(models):
    with live(models) as (client, app):
        assert client.get("/health").status_code == 200
        app.state.drain.begin(30)
        reply = client.get("/health")
        assert (reply.status_code, reply.json()) == (503, {"status": "draining"})
    with live(models) as (client, app):
        app.state.engine.stop()
        reply = client.get("/health")
        assert (reply.status_code, reply.json()) == (503, {"status": "draining"})
