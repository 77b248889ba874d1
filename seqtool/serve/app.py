"""The HTTP API: routes, request schemas, limits, errors and the web page.

Routes parse and check a request, queue it on its model's worker (workers.py) and
render the answer; they never run a model step (the engine thread does). Every error is
a JSON object {"error": "..."} naming the field, with a 4xx status (503 when a queue is
full).
"""

from __future__ import annotations

import json
import logging
import secrets
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException

from seqtool import __version__
from seqtool.config import ClassifyConfig, SamplingConfig, SearchConfig, defaults
from seqtool.errors import SeqtoolError
from seqtool.serve import Limits
from seqtool.serve.workers import (
    Engine,
    Job,
    Overloaded,
    Reply,
    Stream,
    make_worker,
    seed_for,
)

STATIC = Path(__file__).parent / "static"
SAMPLING, SEARCH, CLASSIFY = (
    defaults(SamplingConfig),
    defaults(SearchConfig),
    defaults(ClassifyConfig),
)
log = logging.getLogger("seqtool.serve")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())
    model: str


class TranslateRequest(_Request):
    text: str | list[str]
    beam_size: int = SEARCH["beam_size"]
    n_best: int = SEARCH["n_best"]
    length_penalty: float = SEARCH["length_penalty"]
    max_length_ratio: float = SEARCH["max_length_ratio"]
    attention: bool = False
    shortlist: bool = False


class ClassifyRequest(_Request):
    text: str | list[str]
    top_k: int | None = None
    threshold: float = CLASSIFY["threshold"]
    explain: bool = False


class GenerateRequest(_Request):
    prompt: str = ""
    length: int = SAMPLING["length"]
    temperature: float = SAMPLING["temperature"]
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stream: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _validation_message(err: RequestValidationError) -> str:
    first = err.errors()[0]
    if first["type"] == "json_invalid":
        return f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    where = ".".join(str(p) for p in first["loc"] if p != "body") or "body"
    return f"{where}: {first['msg']}"


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any route
    reads it. The body is read here and replayed, so the route sees it unchanged and
    later messages (a client's disconnect) still come through."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = _error(413, f"request body over {self.limit} bytes (--max-request-bytes)")
        length = dict(scope["headers"]).get(b"content-length", b"0")
        if length.isdigit() and int(length) > self.limit:
            return await too_large(scope, receive, send)
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.limit:
                return await too_large(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        return await self.app(scope, replay, send)


class Crashes:
    """ASGI middleware: an exception that no handler took becomes a 500 {"error": ...},
    logged here. Starlette's own last resort sends its 500 and raises again, and uvicorn
    then closed the connection under the reply (the client read a reset, not the 500)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        started = False

        async def sending(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as err:
            log.error("request failed", exc_info=err)
            if started or scope["type"] != "http":  # a stream cut short: nothing to replace
                raise
            crashed = f"internal error ({type(err).__name__}); see the server log"
            await _error(500, crashed)(scope, receive, send)


def create_app(models: dict[str, Any], limits: Limits | None = None) -> FastAPI:
    """The app serving loaded models ({name: Generator | Classifier | Translator});
    its lifespan starts and stops the engine thread that runs them."""
    limits = limits or Limits()
    workers = {name: make_worker(name, model, limits) for name, model in models.items()}
    engine = Engine(list(workers.values()))

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        engine.start()
        yield
        engine.stop()

    app = FastAPI(title="seqtool", version=__version__, lifespan=lifespan)
    app.state.workers = workers
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    app.add_middleware(Crashes)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, err: RequestValidationError):
        return _error(422, _validation_message(err))

    @app.exception_handler(SeqtoolError)
    async def refused(request: Request, err: SeqtoolError):
        return _error(422, str(err))

    @app.exception_handler(ApiError)
    async def api_error(request: Request, err: ApiError):
        return _error(err.status, str(err), err.headers)

    @app.exception_handler(Overloaded)
    async def overloaded(request: Request, err: Overloaded):
        return _error(503, str(err), {"Retry-After": "1"})

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, err: HTTPException):
        return _error(err.status_code, str(err.detail), getattr(err, "headers", None))

    async def authorize(request: Request) -> None:  # async: no trip to a thread pool
        if limits.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {limits.api_key}".encode()):
            raise ApiError(
                401,
                "missing or wrong API key: send Authorization: Bearer KEY",
                {"WWW-Authenticate": "Bearer"},
            )

    def worker_for(name: str, task: str):
        if name not in workers:
            raise ApiError(404, f"model: unknown model {name!r}; models: {', '.join(workers)}")
        worker = workers[name]
        if worker.model.task != task:
            raise ApiError(422, f"model: {name!r} is a {worker.model.task}, not a {task}")
        return worker

    def sentences(text: str | list[str]) -> list[str]:
        texts = [text] if isinstance(text, str) else text
        if not texts:
            raise ApiError(422, "text: give at least one sentence")
        if len(texts) > limits.max_sentences:
            raise ApiError(
                422, f"text: {len(texts)} sentences, at most {limits.max_sentences} per request"
            )
        for i, line in enumerate(texts):
            check_chars(f"text[{i}]" if isinstance(text, list) else "text", line)
        return texts

    def check_chars(field: str, line: str) -> None:
        if len(line) > limits.max_chars:
            raise ApiError(422, f"{field}: {len(line)} characters, at most {limits.max_chars}")

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "models": list(workers)}

    v1 = APIRouter(prefix="/v1", dependencies=[Depends(authorize)])

    @v1.get("/models")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [
                {"name": name, "task": w.model.task, "info": w.model.info}
                for name, w in workers.items()
            ]
        }

    @v1.post("/translate")
    async def translate(body: TranslateRequest) -> dict[str, Any]:
        worker = worker_for(body.model, "translator")
        texts = sentences(body.text)
        SearchConfig(body.beam_size, body.n_best, body.length_penalty, body.max_length_ratio)
        if body.attention and worker.model.config.attention == "none":
            raise ApiError(422, f"attention: model {body.model!r} was trained without attention")
        options = body.model_dump(exclude={"model", "text"})
        reply = Reply()
        worker.submit(Job(texts, options, reply))
        return {"translations": (await reply.result())["results"]}

    @v1.post("/classify")
    async def classify(body: ClassifyRequest) -> dict[str, Any]:
        worker = worker_for(body.model, "classifier")
        texts = sentences(body.text)
        ClassifyConfig(body.top_k, body.threshold)
        if body.explain and worker.model.config.pooling != "attention":
            raise ApiError(
                422,
                f"explain: model {body.model!r} pools with "
                f"{worker.model.config.pooling}; explaining needs attention",
            )
        reply = Reply()
        options = {"top_k": body.top_k, "threshold": body.threshold}
        worker.submit(Job(texts, options, reply, body.explain))
        return await reply.result()

    @v1.post("/generate")
    async def generate(body: GenerateRequest):
        worker = worker_for(body.model, "generator")
        SamplingConfig(body.length, body.temperature, body.top_k, body.top_p)
        if body.length > limits.max_length:
            raise ApiError(422, f"length: {body.length} tokens, at most {limits.max_length}")
        check_chars("prompt", body.prompt)
        seed = seed_for(body.seed)
        options = (body.temperature, body.top_k, body.top_p)
        stream = Stream(body.prompt, body.length, options, seed, Reply())
        worker.submit(stream)
        if body.stream:
            return StreamingResponse(
                _events(stream),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )
        pieces = []
        try:
            while True:
                kind, value = await stream.reply.get()
                if kind == "error":
                    raise value
                if kind == "done":
                    return {"text": "".join(pieces), "tokens": value, "seed": seed}
                pieces.append(value)
        finally:
            stream.reply.cancelled = True

    app.include_router(v1)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app


async def _events(stream: Stream):
    """Server-sent events: {"text": ...} per chunk of text (the pieces made since the
    last event), then {"done": true, "tokens": n, "seed": s}, or {"error": ...}. The
    finally runs when the client goes away too, and the worker drops the row at its
    next step."""
    try:
        while True:
            kind, value = await stream.reply.get()
            # text that piled up while the client was being written to goes as one event
            while kind == "text" and not stream.reply.items.empty():
                more_kind, more = stream.reply.items.get_nowait()
                if more_kind != "text":
                    yield f"data: {json.dumps({'text': value})}\n\n"
                    kind, value = more_kind, more
                    break
                value += more
            if kind == "text":
                event = {"text": value}
            elif kind == "done":
                event = {"done": True, "tokens": value, "seed": stream.seed}
            else:
                event = {
                    "error": str(value) if isinstance(value, SeqtoolError) else "internal error"
                }
            yield f"data: {json.dumps(event)}\n\n"
            if kind != "text":
                return
    finally:
        stream.reply.cancelled = True
