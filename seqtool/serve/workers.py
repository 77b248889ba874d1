"""One worker per model batches its requests; one engine thread runs every model call.

Requests reach a worker through a bounded queue (full: `Overloaded`, a 503) and get
their answers back through a `Reply`, which hands them to the request's event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any

import torch

from seqtool import decoding
from seqtool.serve.rows import Row, Rows
from seqtool.tokenizer import StreamDecoder

log = logging.getLogger("seqtool.serve")
HOLD = 4  # a batch whose requests keep coming waits at most HOLD x max_wait_ms


class Overloaded(Exception):
    """The model's queue is full."""


class Reply:
    """Items from a worker thread to one waiting request: ("text", str), ("done", n),
    ("result", value) or ("error", exception). `cancelled` is set by the request when its
    client is gone; the worker checks it between steps."""

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue = asyncio.Queue()
        self.cancelled = False

    def put(self, kind: str, value: Any) -> None:
        deliver([(self, kind, value)])

    async def get(self) -> tuple[str, Any]:
        return await self.items.get()

    async def result(self) -> Any:
        kind, value = await self.get()
        if kind == "error":
            raise value
        return value


def deliver(items: list[tuple[Reply, str, Any]]) -> None:
    """Hand items to their requests' event loops, one wake-up of each loop for all: a
    generation step answers every stream of the batch at once, and a wake-up per stream
    per step kept the loop busier than the model."""
    by_loop: dict[asyncio.AbstractEventLoop, list] = defaultdict(list)
    for reply, kind, value in items:
        by_loop[reply.loop].append((reply.items, (kind, value)))
    for loop, pending in by_loop.items():
        # the loop may already be closed when a request outlived the server's grace period
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(_put_all, pending)


def _put_all(pending: list[tuple[asyncio.Queue, tuple[str, Any]]]) -> None:
    for items, item in pending:
        items.put_nowait(item)


class Worker:
    """A model, its queue and its batching. `cycle` runs on the engine thread and never
    blocks; it records rows per model call (`batch_sizes`, the last thousand), for tests
    and for tuning --max-batch."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int) -> None:
        self.name, self.model, self.max_batch = name, model, max_batch
        self.jobs: queue.Queue = queue.Queue(max_queue)
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.wake = threading.Event()  # the engine's: set on every submit

    def submit(self, job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            busy = f"model {self.name!r} is busy: {self.jobs.maxsize} requests wait; retry later"
            raise Overloaded(busy) from None
        self.wake.set()

    def next_job(self):
        """A queued job, or None."""
        try:
            return self.jobs.get_nowait()
        except queue.Empty:
            return None

    def cycle(self, now: float) -> float | None:
        """Do the work due at `now` (time.monotonic()); return when work is due next
        (`now`: at once), or None when there is none until a request comes."""
        raise NotImplementedError

    def fail(self, err: Exception) -> None:
        """Answer every request this worker holds with `err` and drop them."""
        raise NotImplementedError


class Engine:
    """The one thread that runs every model call of the server, each model's work in
    turn (a generation step, a merged batch), so the event loop only parses, queues and
    replies and `/health` answers during a long generation.

    One thread for all models, not one each: torch keeps a team of OpenMP threads for
    every thread that has run a parallel operation, and with a second team alive (even
    an idle one) every step waited to wake its own: generation steps took 1.6-1.9x as
    long on 2 cores (AMD EPYC), in a server or in a bare loop.
    """

    def __init__(self, workers: list[Worker]) -> None:
        self.workers = workers
        self.wake = threading.Event()
        for worker in workers:
            worker.wake = self.wake
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name="seqtool-engine", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()
        self.thread.join()

    @staticmethod
    def _cycle(worker: Worker) -> float | None:
        try:
            return worker.cycle(time.monotonic())
        except Exception as err:  # noqa: BLE001 - one model's fault must not stop the others
            log.exception("model %r failed", worker.name)
            worker.fail(err)  # its requests get the error, none waits forever
            return None

    def _run(self) -> None:
        with torch.inference_mode():  # a per-thread setting
            while not self.stopping.is_set():
                self.wake.clear()  # before the cycles: a request queued during them wakes us
                due = [d for w in self.workers if (d := self._cycle(w)) is not None]
                wait = min(due) - time.monotonic() if due else 1.0
                if wait > 0:
                    self.wake.wait(wait)


@dataclass(eq=False)
class Job:
    """Sentences to translate or classify, with the call's keyword options, and when the
    request queued it (time.monotonic())."""

    texts: list[str]
    options: dict[str, Any]
    reply: Reply
    explain: bool = False
    queued: float = field(default_factory=time.monotonic)


class BatchWorker(Worker):
    """Translators and classifiers: requests merge into one model call per set of
    options, up to max_batch sentences. A batch goes when it is full, or when no request
    has come for max_wait_ms, or at the latest HOLD x max_wait_ms after its first request
    came; time spent on the previous batch does not count.

    Waiting out a gap, rather than max_wait_ms after the first request, keeps concurrent
    clients in one batch: they send their next requests over several milliseconds after
    the previous answers, and a fixed wait split 32 clients into batches of 7 and 25 by
    turns (99 sentences/s, 2 cores) where one batch of 32 runs faster per sentence."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int, max_wait_ms: float):
        super().__init__(name, model, max_batch, max_queue)
        self.max_wait = max_wait_ms / 1000
        self.pending: list[Job] = []
        self.count = 0  # sentences in self.pending
        self.ended = float("-inf")  # time.monotonic() when the last batch ended

    def cycle(self, now: float) -> float | None:
        while self.count < self.max_batch and (job := self.next_job()) is not None:
            self.pending.append(job)
            self.count += len(job.texts)
        if not self.pending:
            return None
        start = max(self.pending[0].queued, self.ended)
        last = max(self.pending[-1].queued, self.ended)
        due = min(last + self.max_wait, start + HOLD * self.max_wait)
        if self.count < self.max_batch and now < due:
            return due
        jobs, self.pending, self.count = self.pending, [], 0
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in jobs:
            groups[tuple(sorted(job.options.items()))].append(job)
        for group in groups.values():
            self._answer(group)
        self.ended = time.monotonic()
        return self.ended

    def fail(self, err: Exception) -> None:
        for job in self.pending:
            job.reply.put("error", err)
        self.pending, self.count = [], 0

    def _answer(self, group: list[Job]) -> None:
        texts = [text for job in group for text in job.texts]
        try:
            results = self.call(texts, group[0].options)
            self.batch_sizes.append(len(texts))
        except Exception as err:  # noqa: BLE001 - every waiting request gets the error
            for job in group:
                job.reply.put("error", err)
            return
        start = 0
        for job in group:
            answer = {"results": results[start : start + len(job.texts)]}
            start += len(job.texts)
            try:
                if job.explain:
                    explanation = self.model.explain(job.texts[0])
                    answer["explanation"] = vars(explanation)
            except Exception as err:  # noqa: BLE001
                job.reply.put("error", err)
                continue
            job.reply.put("result", answer)

    def call(self, texts: list[str], options: dict[str, Any]) -> list[dict[str, Any]]:
        """One library call over the merged sentences (batched inside by max_batch)."""
        if self.model.task == "translator":
            found = self.model.translate(texts, batch_size=self.max_batch, **options)
        else:
            found = self.model.classify(texts, batch_size=self.max_batch, **options)
        return [result.to_dict() for result in found]


@dataclass(eq=False)
class Stream:
    """One generation: its prompt, options and seed, and where its text goes."""

    prompt: str
    length: int
    options: tuple[float, int | None, float | None]
    seed: int
    reply: Reply
    decoder: StreamDecoder | None = field(default=None)
    pending: str = ""  # text made since the stream's last delivery
    sent: float = float("-inf")  # time.monotonic() of that delivery


class GeneratorWorker(Worker):
    """Continuous batching: a new stream joins the running batch at the next step, a
    finished or cancelled one leaves it; at most max_batch streams run at once and the
    rest wait in the queue.

    A stream's text goes out at most every `interval` seconds (its first text and its
    end at once): an event per token per stream kept the event loop, which shares the
    interpreter with the engine thread, busier than the model (32 streams: 4.2x one stream's
    characters/s with an event per token)."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int, interval: float):
        super().__init__(name, model, max_batch, max_queue)
        self.interval = interval
        self.rows = Rows(model.model)
        self.streams: list[Stream] = []  # stream of each row

    def cycle(self, now: float) -> float | None:
        while len(self.rows) < self.max_batch and (stream := self.next_job()) is not None:
            self._join(stream)
        self._leave()
        if not self.streams:
            return None
        tokens = self.rows.step()  # a fault: Engine fails the streams, serving goes on
        self.batch_sizes.append(len(tokens))
        out: list[tuple[Reply, str, Any]] = []
        now = time.monotonic()  # the step took a while since `now` was read
        for stream, token, row in zip(self.streams, tokens, self.rows.rows, strict=True):
            out.extend(self._emit(stream, token, row, now))
        deliver(out)
        self._leave()
        return now if self.streams else None

    def fail(self, err: Exception) -> None:
        for stream in self.streams:
            stream.reply.put("error", err)
        self.rows.keep([])
        self.streams = []

    def _join(self, stream: Stream) -> None:
        gen = self.model
        device = self.rows.device
        generator = torch.Generator(device=device).manual_seed(stream.seed)
        row = Row(stream.options, generator, stream.length)
        stream.decoder = StreamDecoder(gen.tokenizer)
        try:
            # without a prompt, start as after a line break (as Generator.generate does)
            token = self.rows.join(row, gen.tokenizer.encode(stream.prompt or "\n"))
        except Exception as err:  # noqa: BLE001
            stream.reply.put("error", err)
            return
        self.streams.append(stream)
        deliver(self._emit(stream, token, row, time.monotonic()))

    def _emit(self, stream: Stream, token: int, row: Row, now: float) -> list:
        """What the stream gets for its new token: its text when `interval` has passed
        since its last text (or at its end), and at the end "done"."""
        stream.pending += stream.decoder.push(token)
        if row.left == 0:
            stream.pending += stream.decoder.flush()
        out = []
        if stream.pending and (row.left == 0 or now - stream.sent >= self.interval):
            out.append((stream.reply, "text", stream.pending))
            stream.pending, stream.sent = "", now
        if row.left == 0:
            out.append((stream.reply, "done", stream.length))
        return out

    def _leave(self) -> None:
        """Drop rows that are done or whose client is gone."""
        keep = [
            i
            for i, (stream, row) in enumerate(zip(self.streams, self.rows.rows, strict=True))
            if row.left > 0 and not stream.reply.cancelled
        ]
        if len(keep) < len(self.streams):
            self.rows.keep(keep)
            self.streams = [self.streams[i] for i in keep]


def seed_for(seed: int | None) -> int:
    """The request's seed, or a fresh one."""
    return decoding.seeds_for(1, seed)[0]


def make_worker(name: str, model, limits) -> Worker:
    if model.task == "generator":
        interval = limits.stream_interval_ms / 1000
        return GeneratorWorker(name, model, limits.max_batch, limits.max_queue, interval)
    return BatchWorker(name, model, limits.max_batch, limits.max_queue, limits.max_wait_ms)
