"""Loading a trained model for inference: `seqtool.load(run)`.

`load` reads one checkpoint file, picks the device and returns the task's inference
object (`Generator`, `Classifier` or `Translator`, see seqtool.tasks). Their methods run
under `torch.inference_mode()` and keep all per-call state (hidden states, beams, random
generators) local to the call, and the weights are only read: one loaded model serves
concurrent calls from several threads without a lock.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from seqtool import checkpoint, tasks
from seqtool.config import MAX_MEMBERS, is_device
from seqtool.device import pick_device, set_threads
from seqtool.errors import ConfigError
from seqtool.loaded import describe


def load(
    run: str | os.PathLike | Sequence[str | os.PathLike],
    task: str | None = None,
    device: str = "auto",
    threads: int | None = None,
    quantize: str = "none",
):
    """A trained model from a run directory (its best.ckpt) or a .ckpt file.

    run: a list of several runs loads them as one ensemble (translators only, see
    Translator.ensemble); a list of one is that run.
    task: refuse a checkpoint of another task ("generator", "classifier", "translator").
    device: "auto" (a GPU when there is one), "cpu", "cuda" or "mps".
    threads: CPU threads for torch (a process-wide setting).
    quantize: "int8" converts the linear and recurrent layers to dynamic int8, for
    faster inference on the CPU (see seqtool.quantize); "none" keeps fp32.
    Raises CheckpointError or ConfigError (SeqtoolErrors) with a one-line message.
    """
    if not isinstance(device, str) or not is_device(device):
        raise ConfigError(f"device {device!r}: give auto, cpu, cuda, cuda:N or mps")
    if threads is not None:
        if type(threads) is not int:
            raise ConfigError(f"threads {threads!r}: give a whole number")
        set_threads(threads)
    runs = [run] if isinstance(run, str | os.PathLike) else list(run)
    if not runs:
        raise ConfigError("no run to load: give a run directory or a .ckpt file")
    if len(runs) > MAX_MEMBERS:  # each is held in memory: refused before any is read
        raise ConfigError(f"{len(runs):,} runs: an ensemble holds at most {MAX_MEMBERS}")
    first = checkpoint.load(runs[0], task=task)
    inference = tasks.get(first["task"]).Inference
    if len(runs) == 1:
        return inference(first, pick_device(device), quantize)
    if not hasattr(inference, "ensemble"):
        raise ConfigError(
            f"{first['path']} is a {first['task']}: only translators can be ensembled"
        )
    rest = [checkpoint.load(r, task=first["task"]) for r in runs[1:]]
    return inference.ensemble([first, *rest], pick_device(device), quantize)


def info(run: str | os.PathLike) -> dict[str, Any]:
    """What a checkpoint holds, without building its model (`seqtool info --json`)."""
    return describe(checkpoint.load(run))
