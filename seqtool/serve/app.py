"""The HTTP API: routes, limits, errors and the web page.

Routes check a request (schemas.py, then the server's limits), queue it on its model's
worker (workers.py) and render the answer; they never run a model step (the engine
thread does). Every error is a JSON object {"error": "..."} naming the field, with a 4xx
status (503 when a queue is full or the server is stopping).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException

from seqtool.config import ClassifyConfig, SamplingConfig, SearchConfig
from seqtool.decoding import seeds_for
from seqtool.errors import SeqtoolError
from seqtool.serve import Limits
from seqtool.serve import completions as openai
from seqtool.serve.metrics import Metrics
from seqtool.serve.middleware import (
    BodyLimit,
    Crashes,
    Guard,
    Observe,
    error,
    log_request_ids,
    request_id,
)
from seqtool.serve.schemas import (
    Classifications,
    ClassifyRequest,
    Completion,
    CompletionRequest,
    Error,
    GenerateRequest,
    Generation,
    Health,
    ModelCard,
    ModelList,
    TranslateRequest,
    Translations,
)
from seqtool.serve.workers import Engine, Job, Overloaded, Reply, Stream, Worker, make_worker
from seqtool.version import __version__

STATIC = Path(__file__).parent / "static"
log = logging.getLogger("seqtool.serve")
ERRORS: dict[int | str, dict[str, Any]] = {"4XX": {"model": Error}, "5XX": {"model": Error}}
EVENTS = {200: {"content": {"text/event-stream": {}}}}  # with "stream": true


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers


class ClientGone(Exception):
    """The client closed its connection before its answer was ready."""


def _validation_message(err: RequestValidationError) -> str:
    """The field and what is wrong with it: of a union's errors (text: a string or a
    list of strings) the deepest, named without pydantic's tags for the union's members
    ("text[1]", not "text.list[function-after[...]].1")."""
    first = max(err.errors(), key=lambda e: len(e["loc"]))
    if first["type"] == "json_invalid":
        return f"malformed JSON: {first.get('ctx', {}).get('error', first['msg'])}"
    where = ""
    for part in first["loc"][1:] if first["loc"][:1] == ("body",) else first["loc"]:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part.isidentifier():
            where += f".{part}" if where else part
    return f"{where or 'body'}: {first['msg'].removeprefix('Value error, ')}"


class Drain:
    """The server's stop: set when the first SIGINT/SIGTERM comes (server.Server), read
    by /health and by the lifespan, which waits for the engine only until `deadline`."""

    def __init__(self) -> None:
        self.deadline: float | None = None  # time.monotonic()

    def begin(self, grace_seconds: float) -> None:
        self.deadline = time.monotonic() + grace_seconds

    def left(self) -> float | None:
        return None if self.deadline is None else max(0.0, self.deadline - time.monotonic())


class Watch:
    """Waits for a worker's items while watching the request's connection: a client
    that leaves cancels its work (the worker drops it before its batch runs or at the
    next step). For plain JSON answers; a StreamingResponse watches by itself."""

    def __init__(self, request: Request) -> None:
        self.gone = asyncio.ensure_future(self._disconnect(request))

    @staticmethod
    async def _disconnect(request: Request) -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    async def get(self, reply: Reply) -> tuple[str, Any]:
        got = asyncio.ensure_future(reply.get())
        await asyncio.wait({got, self.gone}, return_when=asyncio.FIRST_COMPLETED)
        if got.done():
            return got.result()
        got.cancel()
        reply.cancelled = True
        raise ClientGone

    async def result(self, reply: Reply) -> Any:
        kind, value = await self.get(reply)
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        self.gone.cancel()


async def pieces(stream: Stream, get=None):
    """A generation's text as it comes (`get`: Watch.get, or plain waiting); raises its
    error. Leaving early (a stop sequence, a client gone) drops the stream."""
    try:
        while True:
            kind, value = await (get(stream.reply) if get else stream.reply.get())
            if kind == "error":
                raise value
            if kind == "done":
                return
            yield value
    finally:
        stream.reply.cancelled = True


# -- what the routes depend on: the app's state, set by create_app ---------------------
# async, so that FastAPI runs them on the event loop: a plain def would cost every
# request a hop to its thread pool and back


async def _workers(request: Request) -> dict[str, Worker]:
    return request.app.state.workers


async def _limits(request: Request) -> Limits:
    return request.app.state.limits


Workers = Annotated[dict[str, Worker], Depends(_workers)]
Limited = Annotated[Limits, Depends(_limits)]


def worker_for(workers: dict[str, Worker], name: str, task: str) -> Worker:
    if name not in workers:  # a name as long as the body allows is not echoed whole
        shown = repr(name) if len(name) <= 80 else f"{name[:80]!r}... ({len(name):,} characters)"
        raise ApiError(404, f"model: unknown model {shown}; models: {', '.join(workers)}")
    worker = workers[name]
    if worker.model.task != task:
        raise ApiError(422, f"model: {name!r} is a {worker.model.task}, not a {task}")
    return worker


def at_most(field: str, value: float | None, limit: float, flag: str) -> None:
    if value is not None and value > limit:
        raise ApiError(422, f"{field}: {value}, at most {limit} (--{flag})")


def sentences(
    limits: Limits, text: str | list[str], field: str = "text", each: int = 1
) -> list[str]:
    texts = [text] if isinstance(text, str) else text
    if not texts:
        raise ApiError(422, f"{field}: give at least one")
    if len(texts) * each > limits.max_sentences:
        raise ApiError(
            422,
            f"{field}: {len(texts) * each} per request, at most {limits.max_sentences}",
        )
    for i, line in enumerate(texts):
        check_chars(limits, f"{field}[{i}]" if isinstance(text, list) else field, line)
    return texts


def check_chars(limits: Limits, field: str, line: str) -> None:
    at_most(field + " characters", len(line), limits.max_chars, "max-chars")


def stream_of(prompt: str, length: int, options: dict, seed: int) -> Stream:
    return Stream(prompt, length, options, seed, Reply(), request_id.get() or "-")


async def queued(request: Request, worker: Worker, texts, options, explain: bool = False):
    job = Job(texts, options, Reply(), explain, request_id=request_id.get() or "-")
    worker.submit(job)
    watch = Watch(request)
    try:
        return await watch.result(job.reply)
    finally:
        watch.close()


# -- routes ------------------------------------------------------------------------------

root = APIRouter()
v1 = APIRouter(prefix="/v1", responses=ERRORS)


@root.get("/health", response_model=Health, responses={503: {"model": Health}})
async def health(request: Request):
    state = request.app.state
    if state.drain.deadline is not None or not state.engine.alive:
        return JSONResponse({"status": "draining"}, status_code=503)
    return {"status": "ok"}


@root.get("/metrics", include_in_schema=False)
async def prometheus(request: Request) -> Response:
    metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=metrics.content_type)


@root.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(STATIC / "index.html")


@v1.get("/models", response_model=ModelList)
async def list_models(request: Request, workers: Workers):
    created = request.app.state.created
    cards = [
        ModelCard(id=name, created=created, task=w.model.task, info=_public(w.model.info))
        for name, w in workers.items()
    ]
    return ModelList(data=cards)


@v1.post("/translate", response_model=Translations)
async def translate(body: TranslateRequest, request: Request, workers: Workers, limits: Limited):
    worker = worker_for(workers, body.model, "translator")
    texts = sentences(limits, body.text)
    SearchConfig(body.beam_size, body.n_best, body.length_penalty, body.max_length_ratio)
    at_most("beam_size", body.beam_size, limits.max_beam, "max-beam")
    at_most("max_length_ratio", body.max_length_ratio, limits.max_length_ratio,
            "max-length-ratio")  # fmt: skip
    at_most("length_penalty", body.length_penalty, limits.max_length_penalty,
            "max-length-penalty")  # fmt: skip
    if body.attention and worker.model.config.attention == "none":
        raise ApiError(422, f"attention: model {body.model!r} was trained without attention")
    if body.shortlist and worker.model.shortlist is None:
        older = "it was trained by an older seqtool"
        raise ApiError(422, f"shortlist: model {body.model!r} has no shortlist ({older})")
    options = body.model_dump(exclude={"model", "text"})
    return {"translations": (await queued(request, worker, texts, options))["results"]}


@v1.post("/classify", response_model=Classifications, response_model_exclude_none=True)
async def classify(body: ClassifyRequest, request: Request, workers: Workers, limits: Limited):
    worker = worker_for(workers, body.model, "classifier")
    texts = sentences(limits, body.text)
    ClassifyConfig(body.top_k, body.threshold)
    at_most("top_k", body.top_k, limits.max_top_k, "max-top-k")
    if body.explain:
        try:
            worker.model.check_explainable()
        except SeqtoolError as err:
            raise ApiError(422, f"explain: model {body.model!r}: {err}") from None
    options = {"top_k": body.top_k, "threshold": body.threshold}
    return await queued(request, worker, texts, options, body.explain)


@v1.post("/generate", response_model=Generation, responses=EVENTS)
async def generate(body: GenerateRequest, request: Request, workers: Workers, limits: Limited):
    worker = worker_for(workers, body.model, "generator")
    SamplingConfig(body.length, body.temperature, body.top_k, body.top_p)
    at_most("length", body.length, limits.max_generate_length, "max-generate-length")
    at_most("top_k", body.top_k, limits.max_top_k, "max-top-k")
    check_chars(limits, "prompt", body.prompt)
    seed = seeds_for(1, body.seed)[0]
    options = {"temperature": body.temperature, "top_k": body.top_k, "top_p": body.top_p}
    stream = stream_of(body.prompt, body.length, options, seed)
    worker.submit(stream)
    if body.stream:
        return StreamingResponse(
            _events(stream),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    watch = Watch(request)
    try:
        text = "".join([piece async for piece in pieces(stream, watch.get)])
    finally:
        watch.close()
    return {"text": text, "tokens": body.length, "seed": seed}


@v1.post("/completions", response_model=Completion, responses=EVENTS)
async def completions(body: CompletionRequest, request: Request, workers: Workers, limits: Limited):
    """OpenAI's completions API for generator models: `n` samples of each prompt
    (seeds seed, seed + 1, ...), cut at the first `stop` string."""
    worker = worker_for(workers, body.model, "generator")
    SamplingConfig(body.max_tokens, body.temperature, None, body.top_p)
    _positive("n", body.n)
    at_most("n", body.n, limits.max_n, "max-n")
    at_most("max_tokens", body.max_tokens, limits.max_generate_length, "max-generate-length")
    prompts = sentences(limits, body.prompt, "prompt", body.n)
    # more streams than the queue holds would be refused as busy however long one waited
    at_most("n x prompts", len(prompts) * body.n, limits.max_queue, "max-queue")
    stops = [body.stop] if isinstance(body.stop, str) else body.stop or []
    if len(stops) > 4 or "" in stops:
        raise ApiError(422, "stop: at most 4 strings, none of them empty")
    for i, stop in enumerate(stops):
        check_chars(limits, f"stop[{i}]", stop)
    seeds = iter(seeds_for(len(prompts) * body.n, body.seed))
    options = {"temperature": body.temperature, "top_k": None,
               "top_p": None if body.top_p == 1 else body.top_p}  # fmt: skip
    streams = [
        stream_of(prompt, body.max_tokens, options, next(seeds))
        for prompt in prompts
        for _ in range(body.n)
    ]
    worker.submit(*streams)  # all or none: a refused request leaves no stream running
    answer = openai.Answer(body.model, worker.model.tokenizer, prompts, body.n, stops)
    if body.stream:
        return StreamingResponse(
            answer.events(streams, pieces),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache"},
        )
    watch = Watch(request)
    try:
        return await answer.whole(streams, lambda s: pieces(s, watch.get))
    finally:
        watch.close()
        for stream in streams:
            stream.reply.cancelled = True


# -- errors ------------------------------------------------------------------------------


async def invalid(request: Request, err: RequestValidationError):
    if "json" not in request.headers.get("content-type", ""):  # form data, plain text
        return error(422, "body: send JSON, with Content-Type: application/json")
    return error(422, _validation_message(err))


async def refused(request: Request, err: SeqtoolError):
    return error(422, str(err))


async def api_error(request: Request, err: ApiError):
    return error(err.status, str(err), err.headers)


async def overloaded(request: Request, err: Overloaded):
    return error(503, str(err), {"Retry-After": "1"})


async def gone(request: Request, err: ClientGone):
    return Response(status_code=499)  # nobody reads it: the client has left


async def http_error(request: Request, err: HTTPException):
    if isinstance(err.__cause__, UnicodeDecodeError):  # as malformed JSON is: 422
        return error(422, "malformed JSON: the body is not UTF-8")
    return error(err.status_code, str(err.detail), getattr(err, "headers", None))


HANDLERS = {
    RequestValidationError: invalid,
    SeqtoolError: refused,
    ApiError: api_error,
    Overloaded: overloaded,
    ClientGone: gone,
    HTTPException: http_error,
}


# -- the app -----------------------------------------------------------------------------


@asynccontextmanager
async def lifespan(app: FastAPI):
    """Start the engine thread; at the end stop it, waiting at most what is left of the
    grace period."""
    engine = app.state.engine
    engine.start()
    yield
    if not engine.stop(app.state.drain.left()):
        log.warning("the engine was still busy at the end of --grace-seconds; exiting")


def create_app(models: dict[str, Any], limits: Limits | None = None) -> FastAPI:
    """The app serving loaded models ({name: Generator | Classifier | Translator});
    its lifespan starts and stops the engine thread that runs them."""
    limits = limits or Limits()
    metrics = Metrics()
    workers = {name: make_worker(name, m, limits, metrics) for name, m in models.items()}
    log_request_ids()
    app = FastAPIOffline(
        title="seqtool", version=__version__, lifespan=lifespan, static_url="/static/docs"
    )
    app.state.workers, app.state.limits, app.state.metrics = workers, limits, metrics
    app.state.engine, app.state.drain = Engine(list(workers.values())), Drain()
    app.state.created = int(time.time())
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    app.add_middleware(Guard, hosts=limits.allowed_hosts, api_key=limits.api_key)
    if limits.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(limits.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID"],
        )
    app.add_middleware(Crashes)
    for kind, handler in HANDLERS.items():
        app.add_exception_handler(kind, handler)
    app.include_router(root)
    app.include_router(v1)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    # an included router's routes are its own, not the app's
    routes = {r.path for r in [*app.routes, *root.routes, *v1.routes] if hasattr(r, "methods")}
    app.add_middleware(Observe, metrics=metrics, routes=routes)
    return app


def _positive(field: str, value: int) -> None:
    if value < 1:
        raise ApiError(422, f"{field} must be positive")


def _public(info: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of a model: `info` without file paths (where its checkpoint
    lies, and those it was averaged from), which are the operator's, not a client's."""
    return {k: v for k, v in info.items() if k not in ("path", "averaged")}


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
