"""uvicorn, with seqtool's stop: the first SIGINT/SIGTERM drains (/health answers 503,
requests in flight get --grace-seconds in all, engine included); a second one exits at
once."""

from __future__ import annotations

import copy
import gc
import json
import logging
import os
import signal

import uvicorn
from uvicorn.config import LOGGING_CONFIG
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

log = logging.getLogger("seqtool.serve")
# a whole request (headers and body) must arrive within this of its connection or its
# first byte: a 1 MB body at 300 kbit/s, where only an idle or trickling client is cut
READ_SECONDS = 30.0


class Protocol(HttpToolsProtocol):
    """uvicorn's HTTP protocol, with a deadline on reading each request. uvicorn times a
    connection out only between requests: one that sent nothing, half its headers or
    part of its body kept its socket for as long as the client liked, and 1,100 such
    sockets used up the file descriptors and locked every client out, /health too."""

    read_seconds = READ_SECONDS

    def connection_made(self, transport) -> None:
        self.deadline = None
        super().connection_made(transport)
        self._read_by()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._read_by()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.deadline.cancel()

    def connection_lost(self, exc) -> None:
        self.deadline.cancel()
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """A request the HTTP parser refuses gets a JSON error as every other does, not
        uvicorn's plain text; the connection then closes, as uvicorn's does."""
        body = json.dumps({"error": "malformed HTTP request"}).encode()
        head = [b"HTTP/1.1 400 Bad Request"]
        head += [name + b": " + value for name, value in self.server_state.default_headers]
        head += [b"content-type: application/json", b"content-length: %d" % len(body)]
        head += [b"connection: close", b"", b""]
        self.transport.write(b"\r\n".join(head) + body)
        self.transport.close()

    def _read_by(self) -> None:
        if self.deadline is not None:
            self.deadline.cancel()
        self.deadline = self.loop.call_later(self.read_seconds, self._expire)

    def _expire(self) -> None:
        if self.flow.read_paused:  # the server stopped reading (a request waits its turn)
            self._read_by()
        elif not self.transport.is_closing():
            log.info("closed a connection that sent no whole request in %g s", self.read_seconds)
            self.transport.close()


class Server(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, grace_seconds: float) -> None:
        super().__init__(config)
        self.grace_seconds = grace_seconds

    def handle_exit(self, sig: int, frame) -> None:
        if self.should_exit:  # asked twice: no more waiting
            os._exit(128 + sig)
        self.config.app.state.drain.begin(self.grace_seconds)
        super().handle_exit(sig, frame)


def log_config(level: str) -> dict:
    """uvicorn's logging, with the request id (middleware.RequestIds) on every line,
    seqtool.serve's lines beside uvicorn's, all of it on stderr."""
    config = copy.deepcopy(LOGGING_CONFIG)
    formats = config["formatters"]
    formats["default"]["fmt"] = "%(levelprefix)s [%(request_id)s] %(message)s"
    formats["access"]["fmt"] = (
        '%(levelprefix)s [%(request_id)s] %(client_addr)s - "%(request_line)s" %(status_code)s'
    )
    # a request's line is a diagnostic, not a result: stderr, as every other line
    config["handlers"]["access"]["stream"] = "ext://sys.stderr"
    config["loggers"]["seqtool.serve"] = {
        "handlers": ["default"], "level": level.upper(), "propagate": False,
    }  # fmt: skip
    return config


def run(app, host: str, port: int, grace_seconds: float, log_level: str) -> None:
    # uvicorn stops on these, then raises the signal again with the handlers it found:
    # handlers that do nothing let that end with exit code 0
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    # the models, torch and the app are loaded and stay: out of the collector's sight,
    # or each full collection walks them all with the GIL held (40-94 ms, 2 cores,
    # growing as requests came: every stream stood still that long)
    gc.freeze()
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=Protocol,
        log_level=log_level,
        log_config=log_config(log_level),
        timeout_graceful_shutdown=grace_seconds,
    )
    Server(config, grace_seconds).run()
    if app.state.engine.thread.is_alive():
        # a model call outlasted --grace-seconds: end now, as the interpreter's own exit
        # would abort under a thread still inside torch
        logging.shutdown()
        os._exit(0)
