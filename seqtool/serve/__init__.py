"""`seqtool serve`: the HTTP API and web page, a second thin client of the library.

fastapi and uvicorn are an optional extra; this module imports neither, so that the
CLI can say how to install them. `app.py` holds the routes, `workers.py` each model's
batching and the one thread that runs every model call (a generator's running batch is
the library's: `Generator.stream_many`).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from seqtool import files
from seqtool.errors import ConfigError, SeqtoolError

MISSING = "seqtool serve needs the serve extra: pip install -e '.[serve]' in the seqtool repository"
LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")  # uvicorn's
# the longest wait a batch or a stream may be told to take: a minute is no batching
# policy already, and a wait past threading.TIMEOUT_MAX (about 292 years) stops the engine
MAX_MS = 60_000.0
MAX_GRACE_SECONDS = 86_400.0  # a day; the stop's waits must stay within what time_t holds


@dataclass(frozen=True)
class Limits:
    """What one request may ask, how the workers batch, and who may ask; every field
    is an option of `seqtool serve`. A field that sizes a request's work has a limit
    here, so the worst request has a known cost (README: "Limits")."""

    max_batch: int = 64  # sentences (or streams) per model call; 1 turns batching off
    max_wait_ms: float = 5.0  # how long a batch waits for more requests to merge
    stream_interval_ms: float = 50.0  # a stream's text goes out at most this often
    max_queue: int = 256  # requests waiting per model before 503
    max_request_bytes: int = 1_000_000
    max_sentences: int = 256  # per request (translate, classify; completions: prompts x n)
    max_chars: int = 2_000  # per sentence or prompt
    max_generate_length: int = 2_000  # tokens per generation (generate length, max_tokens)
    max_beam: int = 8  # translate beam_size (and so n_best)
    max_length_ratio: float = 3.0  # translate: target tokens per source token
    # translate: ((5 + length) / 6) ** alpha stays finite for any length a model reads
    max_length_penalty: float = 5.0
    max_top_k: int = 1_000  # generate and classify top_k
    max_n: int = 16  # completions per prompt (/v1/completions n)
    api_key: str | None = None
    allowed_hosts: tuple[str, ...] | None = None  # Host header names; None: any
    cors_origins: tuple[str, ...] = ()  # origins a browser may call from; none: CORS off

    def __post_init__(self) -> None:
        counts = ("max_batch", "max_queue", "max_request_bytes", "max_sentences", "max_chars")
        for name in (*counts, "max_generate_length", "max_beam", "max_top_k", "max_n"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be positive")
        for name in ("max_length_ratio", "max_length_penalty"):
            if not 0 < getattr(self, name) < float("inf"):
                raise ConfigError(f"{name} must be positive and finite")
        for name in ("max_wait_ms", "stream_interval_ms"):
            if not 0 <= getattr(self, name) <= MAX_MS:
                raise ConfigError(f"{name} must be in [0, {MAX_MS:.0f}]")
        key = self.api_key
        # a key travels in a header, where a space, a control character or a letter
        # outside ASCII cannot come back as sent: such a key would refuse every request,
        # and an empty one would let "Bearer" alone in
        if key is not None and not (key and key.isascii() and key.isprintable() and " " not in key):
            raise ConfigError(
                "--api-key (or SEQTOOL_API_KEY) must be printable ASCII without spaces, "
                "and not empty; leave it out to serve without a key"
            )


LOOPBACK = ("127.0.0.1", "localhost", "::1")


def hosts(given: str | None, host: str) -> tuple[str, ...] | None:
    """--allowed-hosts (comma-separated names, "*": any) -> Limits.allowed_hosts. Not
    given: on a loopback address only the loopback names, so that a page from elsewhere
    cannot reach the server through a DNS name that resolves to 127.0.0.1 (DNS
    rebinding); on any other address, any name."""
    if given is None:
        return LOOPBACK if host in LOOPBACK else None
    names = tuple(name.strip() for name in given.split(",") if name.strip())
    if not names:
        raise ConfigError("--allowed-hosts: give host names, or * for any")
    return None if "*" in names else names


def check_address(host: str, port: int) -> None:
    """Bind (host, port) once and let it go, before the models load: a port in use, a
    privileged one or a host that is not this machine's is one line now, where uvicorn
    would log it only after the load, among its start-up lines."""
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
        with socket.socket(family, kind, proto) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
            sock.bind(address)
    except (OSError, UnicodeError) as err:  # UnicodeError: a host name idna cannot encode
        why = getattr(err, "strerror", None) or str(err)
        raise ConfigError(
            f"cannot listen on {host[:100]}:{port} ({why}); give another --host or --port"
        ) from None


def model_names(runs: list[str]) -> dict[str, str]:
    """`NAME=RUN` or `RUN` arguments -> {name: run}; a bare run is named after its
    directory (a .ckpt file: its stem, or its directory for best/last.ckpt)."""
    names: dict[str, str] = {}
    for arg in runs:
        name, sep, run = arg.partition("=")
        if not sep:
            path = Path(arg)
            run = arg
            name = path.parent.name if path.stem in ("best", "last") else path.stem
            name = path.resolve().name if files.holds(path, Path.is_dir) else name
        if not name or name in names:
            raise ConfigError(
                f"{arg}: {'empty' if not name else 'duplicate'} model name; give NAME=RUN"
            )
        names[name] = run
    return names


def serve(
    runs: list[str],
    host: str = "127.0.0.1",
    port: int = 8000,
    limits: Limits = Limits(),
    device: str = "auto",
    threads: int | None = None,
    grace_seconds: float = 30.0,
    quantize: str = "none",
) -> None:
    """Load every model (converted for `quantize`, see seqtool.quantize), then answer
    HTTP until SIGINT/SIGTERM: uvicorn stops accepting, lets requests in flight finish,
    then the engine stops; all of it within grace_seconds (server.py)."""
    if not 0 <= grace_seconds <= MAX_GRACE_SECONDS:
        raise ConfigError(f"grace_seconds must be in [0, {MAX_GRACE_SECONDS:.0f}]")
    log_level = os.environ.get("SEQTOOL_LOG_LEVEL", "info").lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"SEQTOOL_LOG_LEVEL {log_level!r}: choose one of {', '.join(LOG_LEVELS)}")
    try:
        import uvicorn  # noqa: F401 - the extra itself, even when server.py is loaded already

        from seqtool.serve import server
        from seqtool.serve.app import create_app
    except ImportError as err:
        raise SeqtoolError(MISSING) from err
    check_address(host, port)
    import seqtool

    def load() -> dict:
        return {
            name: seqtool.load(run, device=device, threads=threads, quantize=quantize)
            for name, run in model_names(runs).items()
        }

    # in a thread that then ends: torch keeps a team of OpenMP threads for each thread
    # that ran a parallel operation, and the engine's must be the only one (workers.Engine)
    with ThreadPoolExecutor(1) as pool:
        models = pool.submit(load).result()
    app = create_app(models, limits)
    server.run(app, host, port, grace_seconds, log_level)
