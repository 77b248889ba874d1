"""`POST /v1/completions` with the official `openai` Python package as the client,
against a live server on 127.0.0.1: each choice is the library's own text for its seed."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai", reason="pip install -e '.[dev]'")
pytest.importorskip("fastapi", reason="the serve extra is not installed: pip install -e '.[dev]'")

from tests.test_serve import live, models, runs  # noqa: E402, F401 - fixtures


@pytest.fixture(scope="module")
def client(models):
    with live(models) as (http, _):
        yield openai.OpenAI(base_url=f"{http.base_url}/v1", api_key="unused", max_retries=0)


def own(models, prompt: str, seed: int, tokens: int, temperature: float = 1.0) -> str:
    return models["gen"].generate(prompt, length=tokens, temperature=temperature, seed=seed)


def test_models_are_listed_where_the_client_reads_them(client):
    assert [m.id for m in client.models.list()] == ["gen", "clf", "tr"]


def test_a_completion_gives_the_librarys_text_with_usage(client, models):
    got = client.completions.create(
        model="gen", prompt=["the ", "a"], max_tokens=12, temperature=0.8, n=2, seed=5
    )
    assert got.object == "text_completion" and got.model == "gen"
    prompts = ["the ", "the ", "a", "a"]
    texts = [own(models, p, 5 + i, 12, 0.8) for i, p in enumerate(prompts)]
    assert [c.text for c in got.choices] == texts
    assert [c.index for c in got.choices] == [0, 1, 2, 3]
    assert {c.finish_reason for c in got.choices} == {"length"}
    prompt_tokens = len(models["gen"].tokenizer.encode("the ")) + 1
    assert (got.usage.prompt_tokens, got.usage.completion_tokens) == (prompt_tokens, 48)
    assert got.usage.total_tokens == prompt_tokens + 48


def test_a_completion_stops_before_its_stop_string(client, models):
    text = own(models, "the ", 1, 60, 0.0)
    stop = text[10:12]
    got = client.completions.create(
        model="gen", prompt="the ", max_tokens=60, temperature=0, stop=[stop, "\x00"], seed=1
    )
    choice = got.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.text == text[: text.find(stop)]


def test_a_streamed_completion_ends_with_done(client, models):
    stream = client.completions.create(
        model="gen", prompt="the ", max_tokens=40, temperature=0.9, seed=3, stream=True
    )
    chunks = list(stream)  # the client ends at `data: [DONE]`
    assert len(chunks) > 1
    assert "".join(c.choices[0].text for c in chunks) == own(models, "the ", 3, 40, 0.9)
    assert [c.choices[0].finish_reason for c in chunks][-1] == "length"
    assert {c.choices[0].finish_reason for c in chunks[:-1]} <= {None}


def test_a_streamed_completion_holds_back_a_possible_stop_string(client, models):
    text = own(models, "a", 2, 50, 0.0)
    stop = text[20:23]
    stream = client.completions.create(
        model="gen", prompt="a", max_tokens=50, temperature=0, stop=stop, seed=2, stream=True
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == text[: text.find(stop)]
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_the_client_raises_the_servers_errors(client):
    """Errors keep the API's one shape, {"error": "..."}: the client raises the status's
    exception, and its `body` is the message."""
    with pytest.raises(openai.NotFoundError) as err:
        client.completions.create(model="nope", prompt="a")
    assert err.value.body == "model: unknown model 'nope'; models: gen, clf, tr"
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.completions.create(model="clf", prompt="a")
    assert err.value.body == "model: 'clf' is a classifier, not a generator"
    with pytest.raises(openai.UnprocessableEntityError) as err:
        client.completions.create(model="gen", prompt="a", n=17)
    assert err.value.body == "n: 17, at most 16 (--max-n)"
