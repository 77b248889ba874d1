"""Data-parallel training across processes, with torch.distributed under torchrun.

`torchrun --nproc_per_node N -m seqtool train ...` starts N processes with RANK,
WORLD_SIZE and LOCAL_RANK set; `init` joins them into one process group (gloo on CPU,
nccl on CUDA). Outside torchrun every function here is a no-op, so the single-process
path runs the same code.

Collectives time out after SEQTOOL_DIST_TIMEOUT seconds (default 600): a process that
dies makes the others fail with an error instead of waiting forever.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from seqtool.errors import ConfigError, first_line

T = TypeVar("T")


def world() -> int:
    return dist.get_world_size() if dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def _env(name: str, default: int, low: int, high: int, what: str = "set by torchrun") -> int:
    """A whole number from the environment, in [low, high]: one line for anything else."""
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or not low <= number <= high:
        raise ConfigError(
            f"{name}={value[:40]!r} is not a whole number from {low:,} to {high:,} ({what}); "
            f"unset it or correct it"
        )
    return number


def local_rank() -> int:
    return _env("LOCAL_RANK", 0, 0, 1 << 16)


def timeout() -> float:
    return _env("SEQTOOL_DIST_TIMEOUT", 600, 1, 7 * 24 * 3600, "seconds")


def init(device: torch.device) -> None:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    processes = _env("WORLD_SIZE", 1, 1, 1 << 16)
    if processes <= 1 or dist.is_initialized():
        return
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if name not in os.environ]
    if missing:  # torch would raise its own ValueError, a traceback
        raise ConfigError(
            f"WORLD_SIZE is {processes} but {', '.join(missing)} "
            "not set: start data-parallel training with torchrun, or unset WORLD_SIZE"
        )
    _env("RANK", 0, 0, processes - 1)
    _env("MASTER_PORT", 0, 1, 65535)
    backend = "nccl" if device.type == "cuda" else "gloo"
    wait = timeout()
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=wait))
    except dist.DistError as err:  # the others never came, or MASTER_ADDR leads nowhere
        raise ConfigError(
            f"the {processes} processes did not all join at {os.environ['MASTER_ADDR']}:"
            f"{os.environ['MASTER_PORT']} in {wait} s ({first_line(err)}); start every "
            "one with torchrun, or raise SEQTOOL_DIST_TIMEOUT"
        ) from None


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def on_main(fn: Callable[[], T]) -> T:
    """Run fn on rank 0 only and hand its (picklable) result to every process: for work
    that must come out the same everywhere, such as training the tokenizer."""
    if not dist.is_initialized():
        return fn()
    box = [fn() if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def gather(value: Any) -> list[Any]:
    """Every process's value, in rank order (on every process)."""
    if not dist.is_initialized():
        return [value]
    values: list[Any] = [None] * world()
    dist.all_gather_object(values, value)
    return values


def agree(stop: bool, elapsed: float) -> tuple[bool, float]:
    """After each step: stop when any process was told to stop (a signal), and count
    the slowest process's time, so that every process sees the same budget left."""
    if not dist.is_initialized():
        return stop, elapsed
    flags = torch.tensor([float(stop), elapsed], dtype=torch.float64)
    dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    return bool(flags[0]), float(flags[1])


def share(flag: bool) -> bool:
    """Rank 0's decision (early stopping), on every process."""
    if not dist.is_initialized():
        return flag
    return on_main(lambda: flag)


def rows(batch_size: int) -> slice:
    """This process's rows of a batch of parallel streams (the generator's)."""
    per = batch_size // world()
    return slice(rank() * per, (rank() + 1) * per)


def part(batch: list[int]) -> tuple[list[int], float]:
    """This process's share of a batch of example indices, and the factor that makes
    the averaged gradients equal those of the whole batch: world x (share / batch).
    A process left without examples takes one at factor 0, so that every process runs
    the same backward pass."""
    n, r = world(), rank()
    mine = batch[r::n]
    if not mine:
        return batch[:1], 0.0
    return mine, n * len(mine) / len(batch)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
