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

from seqtool.errors import SeqtoolError
from seqtool.serve.metrics import Metrics

log = logging.getLogger("seqtool.serve")
HOLD = 4  # a batch whose requests keep coming waits at most HOLD x max_wait_ms
RECENT = 8  # a batch as large as the largest of the last RECENT goes at once
# prompt characters read in one cycle (at least one prompt): a prompt is read one token
# after another, and 64 prompts of 2,000 characters joining at once held the running
# streams for a minute; past this the rest join over the next cycles, between steps
JOIN_CHARS = 1_000


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


def log_failure(err: Exception, request_id: str) -> None:
    """A request's failure: one line when the library refused its values (the client
    is told why; DESIGN 5), the traceback only for a fault of the server's own."""
    if isinstance(err, SeqtoolError):
        log.warning("request refused: %s", err, extra={"request_id": request_id})
    else:
        log.error("request failed", exc_info=err, extra={"request_id": request_id})


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
    """A model, its queue and its batching. `cycle` runs on the engine thread, never
    blocks and does a bounded amount of work (at most max_batch rows of one model call),
    so that the engine goes round every model between calls. It records rows per model
    call (`batch_sizes`, the last thousand, for tests) and into `metrics`."""

    def __init__(
        self, name: str, model, max_batch: int, max_queue: int, metrics: Metrics | None = None
    ) -> None:
        self.name, self.model, self.max_batch = name, model, max_batch
        self.jobs: queue.Queue = queue.Queue(max_queue)
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self.metrics = metrics or Metrics()
        self.metrics.watch_queue(name, self.jobs.qsize)
        self.wake = threading.Event()  # the engine's: set on every submit

    def submit(self, *jobs) -> None:
        """Queue the jobs, all or none (a request refused part-way would leave the jobs
        queued before the refusal running for nobody). Only the event loop submits and
        the engine only takes, so the room checked first is still there."""
        if self.jobs.maxsize - self.jobs.qsize() < len(jobs):
            busy = f"model {self.name!r} is busy: {self.jobs.qsize()} requests wait; retry later"
            raise Overloaded(busy)
        for job in jobs:
            self.jobs.put_nowait(job)
        self.wake.set()

    def next_job(self):
        """A queued job whose client is still there, or None."""
        while True:
            try:
                job = self.jobs.get_nowait()
            except queue.Empty:
                return None
            if not job.reply.cancelled:
                return job

    def record(self, rows: int) -> None:
        self.batch_sizes.append(rows)
        self.metrics.batch_size.labels(self.name).observe(rows)

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

    @property
    def alive(self) -> bool:
        return self.thread.is_alive() and not self.stopping.is_set()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop after the current model call; wait for it at most `timeout` seconds.
        Whether the thread ended (if not, it is a daemon: it ends with the process)."""
        self.stopping.set()
        self.wake.set()
        self.thread.join(timeout)
        return not self.thread.is_alive()

    @staticmethod
    def _cycle(worker: Worker) -> float | None:
        try:
            return worker.cycle(time.monotonic())
        except Exception as err:  # noqa: BLE001 - one model's fault must not stop the others
            log.exception("model %r failed", worker.name)
            try:
                worker.fail(err)  # its requests get the error, none waits forever
            except Exception:  # noqa: BLE001 - the engine thread must outlive any fault
                log.exception("model %r could not report its failure", worker.name)
            return time.monotonic()  # at once: requests still queued start afresh

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
    """Sentences to translate or classify, with the call's keyword options, when the
    request queued it (time.monotonic()), and the results found so far (a job larger
    than max_batch sentences is answered over several model calls)."""

    texts: list[str]
    options: dict[str, Any]
    reply: Reply
    explain: bool = False
    queued: float = field(default_factory=time.monotonic)
    request_id: str = "-"
    results: list[dict[str, Any]] = field(default_factory=list)


class BatchWorker(Worker):
    """Translators and classifiers: requests merge into one model call per set of
    options. A batch forms when it is full (max_batch sentences) or as large as the
    largest of the last RECENT batches, or when no request has come for max_wait_ms, or
    at the latest HOLD x max_wait_ms after its first request came; time spent on the
    previous batch does not count. A formed batch then runs at most max_batch sentences
    per cycle, so a large request shares the engine with the other models instead of
    holding it until it is done.

    Waiting out a gap, rather than max_wait_ms after the first request, keeps concurrent
    clients in one batch: they send their next requests over several milliseconds after
    the previous answers, and a fixed wait split 32 clients into batches of 7 and 25 by
    turns (99 sentences/s, 2 cores) where one batch of 32 runs faster per sentence.
    Clients answered together come back together, and once all of them are back the
    gap is waited for nothing: going then took 32 int8 translate clients from 0.92x to
    0.99x of their in-process ceiling (medians of 6 paired rounds, 2 cores). The bar is
    the largest recent batch, not the last: a batch cut short by the HOLD limit would
    otherwise lower it, and the clients it left out would then send their requests
    while the next batch runs, taking a core from torch (tried: 0.90x)."""

    def __init__(
        self,
        name: str,
        model,
        max_batch: int,
        max_queue: int,
        max_wait_ms: float,
        metrics: Metrics | None = None,
    ):
        super().__init__(name, model, max_batch, max_queue, metrics)
        self.max_wait = max_wait_ms / 1000
        self.pending: list[Job] = []
        self.count = 0  # sentences in self.pending
        self.ready: deque[list[Job]] = deque()  # formed batches: jobs of the same options
        self.ended = float("-inf")  # time.monotonic() when the last batch ended
        self.formed: deque[int] = deque(maxlen=RECENT)  # sentences of the last batches formed

    def cycle(self, now: float) -> float | None:
        if not self.ready:
            while self.count < self.max_batch and (job := self.next_job()) is not None:
                self.pending.append(job)
                self.count += len(job.texts)
            if not self.pending:
                return None
            start = max(self.pending[0].queued, self.ended)
            last = max(self.pending[-1].queued, self.ended)
            due = min(last + self.max_wait, start + HOLD * self.max_wait)
            expected = min(self.max_batch, max(self.formed, default=self.max_batch))
            if self.count < expected and now < due:
                return due
            self.formed.append(self.count)
            groups: dict[tuple, list[Job]] = defaultdict(list)
            for job in self.pending:
                groups[tuple(sorted(job.options.items()))].append(job)
            self.ready.extend(groups.values())
            self.pending, self.count = [], 0
        self._run_part(self.ready[0])
        if not self.ready[0]:
            self.ready.popleft()
        self.ended = time.monotonic()
        return self.ended

    def fail(self, err: Exception) -> None:
        for job in [*self.pending, *(job for group in self.ready for job in group)]:
            job.reply.put("error", err)
        self.pending, self.count = [], 0
        self.ready.clear()

    def _run_part(self, group: list[Job]) -> None:
        """One model call over the group's next max_batch sentences; answer the jobs it
        completes and drop them (and jobs whose client has gone) from the group."""
        group[:] = [job for job in group if not job.reply.cancelled]
        parts, room = [], self.max_batch  # (job, its sentences in this call)
        for job in group:
            if room == 0:
                break
            start = len(job.results)
            texts = job.texts[start : start + room]
            parts.append((job, texts))
            room -= len(texts)
        if parts:
            failed = self._call(parts, group[0].options)
            for job in group:
                if job in failed:
                    job.reply.put("error", failed[job])
                elif len(job.results) == len(job.texts):
                    self._answer(job)
            group[:] = [j for j in group if j not in failed and len(j.results) < len(j.texts)]

    def _call(self, parts: list[tuple[Job, list[str]]], options) -> dict[Job, Exception]:
        """Run the parts as one call; if it fails, each part alone, so that only a part
        that fails by itself fails its job. The jobs that failed, with their errors."""
        try:
            found = self.call([t for _, texts in parts for t in texts], options)
        except Exception as err:  # noqa: BLE001 - one request's fault must stay its own
            if len(parts) == 1:
                log_failure(err, parts[0][0].request_id)
                return {parts[0][0]: err}
            failed: dict[Job, Exception] = {}
            for part in parts:
                failed.update(self._call([part], options))
            return failed
        self.record(len(found))
        start = 0
        for job, texts in parts:
            job.results.extend(found[start : start + len(texts)])
            start += len(texts)
        return {}

    def _answer(self, job: Job) -> None:
        answer: dict[str, Any] = {"results": job.results}
        try:
            if job.explain:
                answer["explanation"] = vars(self.model.explain(job.texts[0]))
        except Exception as err:  # noqa: BLE001
            log_failure(err, job.request_id)
            job.reply.put("error", err)
            return
        job.reply.put("result", answer)

    def call(self, texts: list[str], options: dict[str, Any]) -> list[dict[str, Any]]:
        """One library call over the merged sentences."""
        found = self.model(texts, batch_size=self.max_batch, **options)
        return [result.to_dict() for result in found]


@dataclass(eq=False)
class Stream:
    """One generation: its prompt, length, sampling options (temperature, top_k, top_p)
    and seed, and where its text goes."""

    prompt: str
    length: int
    options: dict[str, Any]
    seed: int
    reply: Reply
    request_id: str = "-"


class GeneratorWorker(Worker):
    """Continuous batching on the library's own (`model.stream_many()`): a new stream
    joins the running batch at the next step, a finished or cancelled one leaves it; at
    most max_batch streams run at once and the rest wait in the queue.

    The streams' text goes out every `interval` seconds, and at once when a stream
    joins or ends: an event per token per stream kept the event loop, which shares the
    interpreter with the engine thread, busier than the model (32 streams: 4.2x one
    stream's characters/s with an event per token). Between deliveries a step only
    samples (`Streams.advance`); the tokens of the steps between are decoded together."""

    def __init__(
        self,
        name: str,
        model,
        max_batch: int,
        max_queue: int,
        interval: float,
        metrics: Metrics | None = None,
    ):
        super().__init__(name, model, max_batch, max_queue, metrics)
        self.interval = interval
        self.generations = model.stream_many()
        self.streams: dict[int, Stream] = {}  # by their index in self.generations
        self.sent = float("-inf")  # time.monotonic() of the last delivery
        self.tokens = self.metrics.tokens.labels(self.name)

    def cycle(self, now: float) -> float | None:
        arrived, chars = [], 0
        while (
            len(self.streams) + len(arrived) < self.max_batch
            and chars < JOIN_CHARS
            and (stream := self.next_job()) is not None
        ):
            arrived.append(stream)
            chars += len(stream.prompt)
        joined = bool(arrived) and self._join(arrived)
        waiting = not self.jobs.empty()  # streams JOIN_CHARS left for the next cycles
        if not self.streams:
            return now if waiting else None
        rows = len(self.generations.batch)  # a stream of length 1 has its one token already
        ended = self.generations.advance()  # a fault: Engine fails the streams, serving goes on
        if rows:
            self.record(rows)
            self.tokens.inc(rows)
        now = time.monotonic()  # the step took a while since `now` was read
        if joined or ended or now - self.sent >= self.interval:
            self._deliver(now)
        for index, stream in list(self.streams.items()):
            if stream.reply.cancelled:  # its client is gone
                self.generations.cancel(index)
                del self.streams[index]
        return now if self.streams or waiting else None

    def fail(self, err: Exception) -> None:
        """Answer the streams of the batch with `err`; queued ones start a new batch."""
        for stream in self.streams.values():
            stream.reply.put("error", err)
        self.generations = self.model.stream_many()  # the failed step may have left it half done
        self.streams = {}

    def _join(self, streams: list[Stream]) -> bool:
        """Start the streams that arrived since the last step, together (one model call
        per set of sampling options: 32 streams joining one at a time took a sixth of
        their whole generation in int8), or answer each with the error its own values
        caused: the library refuses them before they join the batch, which goes on
        without them. True when one joined."""
        requests = [
            {"prompt": s.prompt, "length": s.length, "seed": s.seed, **s.options} for s in streams
        ]
        joined = False
        for stream, added in zip(streams, self.generations.add_many(requests), strict=True):
            if isinstance(added, Exception):
                log_failure(added, stream.request_id)
                stream.reply.put("error", added)
                continue
            self.tokens.inc()
            self.streams[added] = stream
            joined = True
        return joined

    def _deliver(self, now: float) -> None:
        """Send every stream its new text, and "done" to those that ended, which are
        then dropped."""
        out: list[tuple[Reply, str, Any]] = []
        for index, text in self.generations.texts():
            stream = self.streams[index]
            if text:
                out.append((stream.reply, "text", text))
            if index not in self.generations:
                out.append((stream.reply, "done", stream.length))
        deliver(out)
        self.sent = now
        self.streams = {i: stream for i, stream in self.streams.items() if i in self.generations}


def make_worker(name: str, model, limits, metrics: Metrics) -> Worker:
    sizes = (limits.max_batch, limits.max_queue)
    if model.streams:  # its generations join one running batch
        return GeneratorWorker(name, model, *sizes, limits.stream_interval_ms / 1000, metrics)
    return BatchWorker(name, model, *sizes, limits.max_wait_ms, metrics)
