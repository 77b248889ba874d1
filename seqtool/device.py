"""Device and precision choice, autocast, and batch workers: shared by training and
inference."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from typing import TypeVar

import torch

from seqtool import distributed
from seqtool.errors import ConfigError


def pick_device(name: str) -> torch.device:
    """The device to run on; under torchrun each process takes the GPU of its local rank."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", distributed.local_rank())
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: no CUDA device is available")
    if name.startswith("cuda:") and int(name[5:]) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ConfigError(f"--device {name}: this machine has cuda:0 to cuda:{count - 1}")
    if name == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps: no MPS device is available")
    if name == "cuda":
        return torch.device("cuda", distributed.local_rank())
    return torch.device(name)


def set_threads(threads: int) -> None:
    """torch's CPU threads, at most one per CPU of this machine: more only slow torch
    down, and a thousand fail to start (in the middle of the first parallel step)."""
    cpus = os.cpu_count() or 1
    if not 1 <= threads <= cpus:
        raise ConfigError(f"--threads {threads}: this machine has {cpus} CPUs; give 1 to {cpus}")
    torch.set_num_threads(threads)


@contextlib.contextmanager
def allocating(options: str):
    """Turn a failed allocation of the memory `options` size into a ConfigError naming
    them: torch reports it as an allocator traceback."""
    try:
        yield
    except torch.OutOfMemoryError:
        raise ConfigError(f"out of memory on the device; lower {options}") from None
    except RuntimeError as err:
        if "can't allocate memory" not in str(err):
            raise
        raise ConfigError(f"out of memory; lower {options}") from None


def pick_precision(name: str, device: torch.device) -> str:
    """auto: bf16 where the hardware runs it natively (measured ~2x on CPUs with
    avx512_bf16, see BENCHMARKS.md), fp16 on older GPUs, fp32 otherwise."""
    if name == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        if device.type == "cpu" and _cpu_has_bf16():
            return "bf16"
        return "fp32"
    if name == "fp16" and device.type != "cuda":
        raise ConfigError("--precision fp16 needs a CUDA device; use bf16 or fp32")
    return name


def _cpu_has_bf16() -> bool:
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def autocast(device: torch.device, precision: str):
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)


T, R = TypeVar("T"), TypeVar("R")
# one call's workers at a time: torch.set_num_threads in a worker also sets the count
# that threads started later begin with, which the caller restores when its call ends
_POOL = threading.Lock()
MAX_WORKERS = 4
# the worker threads live as long as the process, a pool per (workers, threads each):
# a thread keeps its glibc arena, so a long stream of reads reuses the same memory
# instead of spreading over new threads' arenas (peak RSS of 100,000 streamed lines
# 1.05x that of 1,000, against 1.09x with a pool per call; bench/analysis.md)
_pools: dict[tuple[int, int], ThreadPoolExecutor] = {}


def map_batches(fn: Callable[[T], R], batches: Sequence[T], device: torch.device) -> list[R]:
    """[fn(b) for b in batches], in order. On the CPU the batches run on worker threads
    (up to the thread count, at most MAX_WORKERS), each with its share of the threads,
    instead of one after another on all of them: a search step's products are too small
    to keep several cores busy, and torch releases the GIL inside each op (measured on 2
    cores: beam search and classification 1.14-1.25x the sentences/s, with the same
    results). Runs in this thread on a GPU, for a single batch, or while another call's
    workers run. Inference mode and CPU autocast are per thread: the workers take the
    caller's (training validates under bf16 autocast)."""
    threads = torch.get_num_threads()
    workers = min(len(batches), threads, MAX_WORKERS)
    if device.type != "cpu" or workers < 2 or not _POOL.acquire(blocking=False):
        return [fn(b) for b in batches]
    inference = torch.is_inference_mode_enabled()
    cast, dtype = torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu")

    def as_the_caller(batch: T) -> R:
        with torch.inference_mode(inference), torch.autocast("cpu", dtype, enabled=cast):
            return fn(batch)

    share = threads // workers
    if (workers, share) not in _pools:
        _pools[workers, share] = ThreadPoolExecutor(
            workers, "seqtool-batch", initializer=torch.set_num_threads, initargs=(share,)
        )
    futures = [_pools[workers, share].submit(as_the_caller, b) for b in batches]
    try:
        return [future.result() for future in futures]
    finally:  # after an error (or Ctrl-C) the batches not yet started are dropped, and
        # the caller goes on once the running ones have finished
        for future in futures:
            future.cancel()
        wait(futures)
        torch.set_num_threads(threads)
        _POOL.release()


def map_by_length(
    fn: Callable[[list[int]], Sequence[R]],
    sequences: Sequence[Sequence],
    batch_size: int,
    device: torch.device,
) -> list[R]:
    """Inference over `sequences` in batches of similar lengths (little padding):
    fn(indices of one batch) -> one result per index, run through map_batches; returns
    the results in input order."""
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    chunks = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
    out: list = [None] * len(sequences)
    for chunk, found in zip(chunks, map_batches(fn, chunks, device), strict=True):
        for i, result in zip(chunk, found, strict=True):
            out[i] = result
    return out
