"""The JSON bodies of the API, checked before anything reaches torch or sentencepiece.

Strict types: a bool is not taken as a number, nor a number as a bool or a string;
NaN and infinities are refused; every string must be encodable as UTF-8 (JSON can
carry a lone surrogate such as "\\ud800", which sentencepiece cannot take). The limits
of the running server (serve.Limits) are checked by the routes.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from seqtool.config import ClassifyConfig, SamplingConfig, SearchConfig, defaults

SAMPLING, SEARCH, CLASSIFY = (
    defaults(SamplingConfig),
    defaults(SearchConfig),
    defaults(ClassifyConfig),
)


def _unicode(text: str) -> str:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        raise ValueError(f"not valid Unicode: a lone surrogate at {err.start}") from None
    return text


Text = Annotated[str, AfterValidator(_unicode)]
# torch seeds a generator with 64 bits; a request's streams use seed, seed + 1, ...
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class _Request(BaseModel):
    model_config = ConfigDict(
        extra="forbid", protected_namespaces=(), strict=True, allow_inf_nan=False
    )
    model: Text


class TranslateRequest(_Request):
    text: Text | list[Text]
    beam_size: int = SEARCH["beam_size"]
    n_best: int = SEARCH["n_best"]
    length_penalty: float = SEARCH["length_penalty"]
    max_length_ratio: float = SEARCH["max_length_ratio"]
    attention: bool = False
    shortlist: bool = False


class ClassifyRequest(_Request):
    text: Text | list[Text]
    top_k: int | None = None
    threshold: float = CLASSIFY["threshold"]
    explain: bool = False


class GenerateRequest(_Request):
    prompt: Text = ""
    length: int = SAMPLING["length"]
    temperature: float = SAMPLING["temperature"]
    top_k: int | None = None
    top_p: float | None = None
    seed: Seed | None = None
    stream: bool = False


class CompletionRequest(_Request):
    """OpenAI's completions request, the fields a recurrent generator can honour."""

    prompt: Text | list[Text] = ""
    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    n: int = 1
    stop: Text | list[Text] | None = None
    seed: Seed | None = None
    stream: bool = False
    user: Text | None = None  # sent by some clients; not used


class Error(BaseModel):
    error: str


class Health(BaseModel):
    status: Literal["ok", "draining"]


class ModelCard(BaseModel):
    """One served model, in OpenAI's shape (id, object, created, owned_by) plus its task
    and what `seqtool info` shows of it (no file paths)."""

    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "seqtool"
    task: str
    info: dict[str, Any]


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


class Translations(BaseModel):
    translations: list[dict[str, Any]]


class Classifications(BaseModel):
    results: list[dict[str, Any]]
    explanation: dict[str, Any] | None = None


class Generation(BaseModel):
    text: str
    tokens: int
    seed: int


class CompletionChoice(BaseModel):
    text: str
    index: int
    logprobs: None = None
    finish_reason: Literal["stop", "length"] | None


class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None
