"""The live server against its own OpenAPI schema, fuzzed by schemathesis: every
route, valid and invalid requests, a bounded number of examples each. No answer may be
a 5xx, and every answer (status, content type, headers, body) must be one the schema
declares. Small limits keep each example's work small.

The operations are driven with hypothesis directly: schemathesis's pytest plugin
(`from_fixture`) reads a pytest internal that pytest 9 no longer has.
"""

from __future__ import annotations

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[dev]'")

from hypothesis import HealthCheck, given, settings  # noqa: E402
from schemathesis import GenerationMode, checks  # noqa: E402

from tests.test_serve import live, models, runs  # noqa: E402, F401 - fixtures

LIMITS = {"max_generate_length": 40, "max_chars": 80, "max_sentences": 6, "max_beam": 4, "max_n": 3}
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_headers_conformance,
    checks.response_schema_conformance,
    checks.negative_data_rejection,
]


@pytest.fixture(scope="module")
def api_schema(models):
    with live(models, **LIMITS) as (client, _):
        yield schemathesis.openapi.from_url(f"{client.base_url}/openapi.json")


OPERATIONS = ["GET /health", "GET /v1/models", "POST /v1/translate", "POST /v1/classify",
              "POST /v1/generate", "POST /v1/completions"]  # fmt: skip
# valid requests to every route; invalid ones where a request has something to get wrong
CASES = [(op, GenerationMode.POSITIVE) for op in OPERATIONS] + [
    (op, GenerationMode.NEGATIVE) for op in OPERATIONS if op.startswith("POST")
]


def test_the_schema_lists_every_route(api_schema):
    listed = [op.ok() for op in api_schema.get_all_operations()]
    assert sorted(f"{op.method.upper()} {op.path}" for op in listed) == sorted(OPERATIONS)


@pytest.mark.parametrize("operation, mode", CASES, ids=[f"{op} {m.value}" for op, m in CASES])
def test_every_route_answers_as_its_schema_says(api_schema, operation, mode):
    method, path = operation.split()

    @given(case=api_schema[path][method].as_strategy(generation_mode=mode))
    @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck))
    def answers(case):
        case.call_and_validate(checks=CHECKS)

    answers()
