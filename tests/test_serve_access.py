"""`seqtool serve` behind a port: the API key, Host names, CORS, metrics and request
ids. Live servers on 127.0.0.1 only; every wait is bounded."""

from __future__ import annotations

import json
import signal
import socket

import pytest

httpx = pytest.importorskip("httpx", reason="httpx is not installed: pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[dev]'")
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from seqtool.serve import LOOPBACK, hosts  # noqa: E402
from tests.test_serve import calling, live, models, runs, served  # noqa: E402, F401 - fixtures

KEY = {"Authorization": "Bearer s3cret"}
MISSING_KEY = "missing or wrong API key: send Authorization: Bearer KEY"


@pytest.fixture(scope="module")
def keyed(models):
    with live(models, api_key="s3cret") as (client, app):
        yield client, app


def test_under_a_key_every_route_but_health_and_the_page_needs_it(keyed):
    client, _ = keyed
    for path in ("/v1/models", "/docs", "/redoc", "/openapi.json", "/metrics", "/nothing"):
        reply = client.get(path)
        assert reply.status_code == 401, path
        assert reply.json() == {"error": MISSING_KEY}
        assert reply.headers["www-authenticate"] == "Bearer"
        assert client.get(path, headers=KEY).status_code in (200, 404), path
    assert client.get("/health").json() == {"status": "ok"}  # no model names
    assert client.get("/").status_code == 200  # the page, which asks for the key
    for scheme in ("bearer", "BEARER", "Bearer"):
        reply = client.post(
            "/v1/classify",
            json={"model": "clf", "text": "fine"},
            headers={"Authorization": f"{scheme} s3cret"},
        )
        assert reply.status_code == 200, scheme
    for wrong in ("Bearer s3cre", "Bearer s3cret2", "Basic s3cret", "s3cret"):
        reply = client.get("/v1/models", headers={"Authorization": wrong})
        assert reply.status_code == 401, wrong


def test_the_key_is_checked_before_the_body_is_read(keyed):
    """A client that sends its headers and never its body gets 401 at once, and a bad
    body without the key gets 401, not 422."""
    client, _ = keyed
    assert client.post("/v1/classify", content=b"{not json").status_code == 401
    host, port = client.base_url.host, client.base_url.port
    with socket.create_connection((host, port), timeout=10) as raw:
        raw.sendall(
            b"POST /v1/classify HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Content-Type: application/json\r\nContent-Length: 1000\r\n\r\n"
        )
        head = raw.recv(4096).decode()
    assert head.startswith("HTTP/1.1 401"), head


def test_the_key_comes_from_the_environment_and_log_lines_carry_the_request_id(runs):
    env = {"SEQTOOL_API_KEY": "from-env", "SEQTOOL_LOG_LEVEL": "info"}
    with served(f"clf={runs['clf']}", env=env) as (server, url):
        assert httpx.get(f"{url}/v1/models").status_code == 401
        reply = httpx.get(
            f"{url}/v1/models",
            headers={"Authorization": "Bearer from-env", "X-Request-ID": "trace-42"},
        )
        assert reply.status_code == 200 and reply.headers["x-request-id"] == "trace-42"
        server.send_signal(signal.SIGTERM)
        assert server.wait(30) == 0
        log = server.stdout.read()
    assert "from-env" not in log
    assert [line for line in log.splitlines() if "trace-42" in line] == [
        line for line in log.splitlines() if "GET /v1/models" in line and "200" in line
    ]


def test_allowed_hosts_refuse_other_host_names(models):
    with live(models, allowed_hosts=LOOPBACK) as (client, _):
        for host in ("localhost:8000", "127.0.0.1", "[::1]:8000", "LOCALHOST"):
            assert client.get("/health", headers={"Host": host}).status_code == 200, host
        for host in ("rebound.example:8000", "127.0.0.1.nip.io", ""):
            reply = client.get("/health", headers={"Host": host})
            assert reply.status_code == 400, host
            assert reply.json() == {
                "error": f"Host {host!r} is not served here; see --allowed-hosts"
            }


def test_default_host_names_follow_the_address():
    assert hosts(None, "127.0.0.1") == LOOPBACK and hosts(None, "localhost") == LOOPBACK
    assert hosts(None, "0.0.0.0") is None  # any
    assert hosts("*", "127.0.0.1") is None
    assert hosts("api.example, localhost", "0.0.0.0") == ("api.example", "localhost")


def test_cors_is_off_unless_an_origin_is_given(models):
    origin = {"Origin": "https://app.example"}
    preflight = {
        **origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    with live(models) as (client, _):
        assert "access-control-allow-origin" not in client.get("/health", headers=origin).headers
        assert client.options("/v1/classify", headers=preflight).status_code != 200
    with live(models, cors_origins=("https://app.example",)) as (client, _):
        reply = client.options("/v1/classify", headers=preflight)
        assert reply.status_code == 200
        assert reply.headers["access-control-allow-origin"] == "https://app.example"
        other = client.get("/health", headers={"Origin": "https://other.example"})
        assert "access-control-allow-origin" not in other.headers


def test_json_must_be_sent_as_json(models):
    body = json.dumps({"model": "clf", "text": "fine"})
    with live(models) as (client, _):
        for headers in ({}, {"Content-Type": "text/plain"}):
            reply = client.post("/v1/classify", content=body, headers=headers)
            assert reply.status_code == 422
            assert reply.json() == {"error": "body: send JSON, with Content-Type: application/json"}
        form = client.post("/v1/classify", data={"model": "clf", "text": "fine"})
        assert form.status_code == 422


# -- metrics and request ids -------------------------------------------------------------


def metrics(client) -> dict[tuple[str, tuple], float]:
    """/metrics read with prometheus_client's parser: {(sample name, labels): value}."""
    reply = client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(reply.text)
        for s in family.samples
    }


def test_metrics_count_requests_batches_and_tokens(models):
    with live(models) as (client, _):
        for _ in range(3):
            client.post("/v1/classify", json={"model": "clf", "text": "fine"})
        client.post("/v1/classify", json={"model": "clf", "text": 5})
        client.post("/v1/generate", json={"model": "gen", "length": 20, "seed": 1})
        got = metrics(client)
    requests = "seqtool_requests_total"
    assert got[(requests, (("route", "/v1/classify"), ("status", "200")))] == 3
    assert got[(requests, (("route", "/v1/classify"), ("status", "422")))] == 1
    assert got[(requests, (("route", "/v1/generate"), ("status", "200")))] == 1
    assert got[("seqtool_request_seconds_count", (("route", "/v1/classify"),))] == 4
    assert got[("seqtool_generated_tokens_total", (("model", "gen"),))] == 20
    assert got[("seqtool_batch_size_count", (("model", "clf"),))] == 3
    assert got[("seqtool_batch_size_sum", (("model", "gen"),))] == 19  # steps after the first
    for model in ("gen", "clf", "tr"):
        assert got[("seqtool_queue_depth", (("model", model),))] == 0


def test_request_ids_are_echoed_or_made_and_name_the_log_lines(models, caplog):
    def fails(texts, **options):
        raise RuntimeError("a fault")

    clf = calling(models["clf"], fails)
    with live({"clf": clf}) as (client, _):
        given = client.get("/health", headers={"X-Request-ID": "abc-123"})
        assert given.headers["x-request-id"] == "abc-123"
        made = client.get("/health", headers={"X-Request-ID": "no spaces allowed"})
        assert len(made.headers["x-request-id"]) == 32
        assert made.headers["x-request-id"] != client.get("/health").headers["x-request-id"]
        failed = client.post(
            "/v1/classify",
            json={"model": "clf", "text": "x"},
            headers={"X-Request-ID": "trace-7"},
        )
        assert failed.status_code == 500 and failed.headers["x-request-id"] == "trace-7"
    lines = [r for r in caplog.records if r.name == "seqtool.serve"]
    assert len(lines) >= 2  # the engine's and the route's
    assert {r.request_id for r in lines} == {"trace-7"}
