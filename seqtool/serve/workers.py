"""One worker thread per model: it owns the model and runs every call of it, so the
event loop only parses, queues and replies (and `/health` answers during a long
generation).

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
    """The thread, the queue and what both kinds of worker record: rows per model call
    (`batch_sizes`, the last thousand), for tests and for tuning --max-batch."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int) -> None:
        self.name, self.model, self.max_batch = name, model, max_batch
        self.jobs: queue.Queue = queue.Queue(max_queue)
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, name=f"seqtool-{name}", daemon=True)

    def submit(self, job) -> None:
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            busy = f"model {self.name!r} is busy: {self.jobs.maxsize} requests wait; retry later"
            raise Overloaded(busy) from None

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join()

    def _run(self) -> None:
        with torch.inference_mode():  # a per-thread setting
            while not self.stopping.is_set():
                self.cycle()

    def next_job(self, timeout: float):
        """A queued job, or None after `timeout` seconds (0: do not wait)."""
        try:
            return self.jobs.get(timeout=timeout) if timeout > 0 else self.jobs.get_nowait()
        except queue.Empty:
            return None

    def cycle(self) -> None:
        raise NotImplementedError


@dataclass(eq=False)
class Job:
    """Sentences to translate or classify, with the call's keyword options."""

    texts: list[str]
    options: dict[str, Any]
    reply: Reply
    explain: bool = False


class BatchWorker(Worker):
    """Translators and classifiers: requests that arrive within max_wait_ms of the first
    (up to max_batch sentences) are merged, one model call per set of options, and the
    answers split back to their requests."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int, max_wait_ms: float):
        super().__init__(name, model, max_batch, max_queue)
        self.max_wait = max_wait_ms / 1000

    def cycle(self) -> None:
        first = self.next_job(0.1)
        if first is None:
            return
        jobs, count = [first], len(first.texts)
        deadline = time.monotonic() + self.max_wait
        while count < self.max_batch:
            job = self.next_job(deadline - time.monotonic())
            if job is None:
                break
            jobs.append(job)
            count += len(job.texts)
        groups: dict[tuple, list[Job]] = defaultdict(list)
        for job in jobs:
            groups[tuple(sorted(job.options.items()))].append(job)
        for group in groups.values():
            self._answer(group)

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


class GeneratorWorker(Worker):
    """Continuous batching: a new stream joins the running batch at the next step, a
    finished or cancelled one leaves it; at most max_batch streams run at once and the
    rest wait in the queue."""

    def __init__(self, name: str, model, max_batch: int, max_queue: int) -> None:
        super().__init__(name, model, max_batch, max_queue)
        self.rows = Rows(model.model)
        self.streams: list[Stream] = []  # stream of each row

    def cycle(self) -> None:
        while len(self.rows) < self.max_batch:
            stream = self.next_job(0 if self.streams else 0.1)
            if stream is None:
                break
            self._join(stream)
        self._leave()
        if not self.streams:
            return
        try:
            tokens = self.rows.step()
        except Exception as err:  # noqa: BLE001 - fail the streams, keep serving
            log.exception("generation failed")
            for stream in self.streams:
                stream.reply.put("error", err)
            self.rows.keep([])
            self.streams = []
            return
        self.batch_sizes.append(len(tokens))
        out: list[tuple[Reply, str, Any]] = []
        for stream, token, row in zip(self.streams, tokens, self.rows.rows, strict=True):
            out.extend(self._emit(stream, token, row))
        deliver(out)
        self._leave()

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
        deliver(self._emit(stream, token, row))

    @staticmethod
    def _emit(stream: Stream, token: int, row: Row) -> list[tuple[Reply, str, Any]]:
        """What the stream gets for its new token: its text, and at the end "done"."""
        text = stream.decoder.push(token)
        if row.left == 0:
            text += stream.decoder.flush()
        out = [(stream.reply, "text", text)] if text else []
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
        return GeneratorWorker(name, model, limits.max_batch, limits.max_queue)
    return BatchWorker(name, model, limits.max_batch, limits.max_queue, limits.max_wait_ms)
