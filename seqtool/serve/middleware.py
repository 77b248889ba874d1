"""The ASGI layers around the routes, outermost first: `Observe` (request id, metrics,
the id in log lines), `Crashes` (an unhandled exception becomes a JSON 500), CORS when
asked for, `Guard` (Host header and API key, before the body is read) and `BodyLimit`.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import re
import secrets
import time
import uuid

from starlette.responses import JSONResponse

log = logging.getLogger("seqtool.serve")
request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
GIVEN_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
PUBLIC = ("/health", "/", "/favicon.ico")  # and /static/: the page, which asks for the key


def error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class RequestIds(logging.Filter):
    """Gives every record `request_id`: that of the request being answered ("-" for
    none), so that the formats of server.run show it on every line of a request. An
    engine-thread line names its request itself: `extra={"request_id": ...}`."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(record, "request_id", None):
            record.request_id = request_id.get() or "-"
        return True


def log_request_ids() -> None:
    """Install RequestIds on the loggers that speak of requests (once)."""
    for name in ("seqtool.serve", "uvicorn.access", "uvicorn.error"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RequestIds) for f in logger.filters):
            logger.addFilter(RequestIds())


class Observe:
    """ASGI middleware: the request id (the client's X-Request-ID when it is a plain
    token, else a new one) on the response and in log lines; requests counted by route
    and status and timed to the end of their answer. `routes`: the paths counted by
    name, the rest as "other" (so that a scan of random paths adds no label values)."""

    def __init__(self, app, metrics, routes: set[str]) -> None:
        self.app, self.metrics, self.routes = app, metrics, routes

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        rid = given if GIVEN_ID.fullmatch(given) else uuid.uuid4().hex
        token = request_id.set(rid)
        route = scope["path"] if scope["path"] in self.routes else "other"
        started, status = time.perf_counter(), 499  # 499: the client left before an answer

        async def sending(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            self.metrics.requests.labels(route, str(status)).inc()
            self.metrics.latency.labels(route).observe(time.perf_counter() - started)
            request_id.reset(token)


class Crashes:
    """ASGI middleware: an exception that no handler took becomes a 500 {"error": ...},
    logged here, and a request cancelled by the server's stop a 503. Starlette's own
    last resort sends its 500 and raises again, and uvicorn then closed the connection
    under the reply (the client read a reset, not the 500)."""

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
        except asyncio.CancelledError:
            # uvicorn cancels the requests still running when --grace-seconds ends; its
            # own answer would be a plain-text 500 and a traceback. The task was told to
            # end, and ends here; a stream already started is cut (one log line).
            if not started and scope["type"] == "http":
                await error(503, "the server is stopping")(scope, receive, send)
        except Exception as err:
            log.error("request failed", exc_info=err)
            if started or scope["type"] != "http":  # a stream cut short: nothing to replace
                raise
            crashed = f"internal error ({type(err).__name__}); see the server log"
            await error(500, crashed)(scope, receive, send)


class Guard:
    """ASGI middleware, before any body is read: the Host header must name an allowed
    host (`hosts`, None: any), and under an API key every path but PUBLIC and /static/
    needs `Authorization: Bearer KEY` (the scheme in any case)."""

    def __init__(self, app, hosts: tuple[str, ...] | None, api_key: str | None) -> None:
        self.app, self.api_key = app, api_key
        self.hosts = None if hosts is None else {h.lower().strip("[]") for h in hosts}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope["headers"])
        if self.hosts is not None:
            host = headers.get(b"host", b"").decode("latin-1").lower()
            name = host[1 : host.find("]")] if host.startswith("[") else host.partition(":")[0]
            if name not in self.hosts:
                refused = f"Host {host!r} is not served here; see --allowed-hosts"
                return await error(400, refused)(scope, receive, send)
        path = scope["path"]
        if self.api_key is not None and path not in PUBLIC and not path.startswith("/static/"):
            scheme, _, given = headers.get(b"authorization", b"").partition(b" ")
            ok = scheme.lower() == b"bearer" and secrets.compare_digest(
                given.strip(), self.api_key.encode()
            )
            if not ok:
                missing = "missing or wrong API key: send Authorization: Bearer KEY"
                return await error(401, missing, {"WWW-Authenticate": "Bearer"})(
                    scope, receive, send
                )
        return await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware: a request body over `limit` bytes gets 413 before any route
    reads it. The body is read here and replayed, so the route sees it unchanged and
    later messages (a client's disconnect) still come through."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        too_large = error(413, f"request body over {self.limit} bytes (--max-request-bytes)")
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
