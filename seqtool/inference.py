"""Loading a trained model for inference: `seqtool.load(run)`.

`load` reads one checkpoint file, picks the device and returns the task's inference
object (`Generator`, `Classifier` or `Translator`, see seqtool.tasks). Their methods run
under `torch.inference_mode()` and keep all per-call state (hidden states, beams, random
generators) local to the call, and the weights are only read: one loaded model serves
concurrent calls from several threads without a lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import torch

from seqtool import checkpoint, tasks
from seqtool.device import pick_device
from seqtool.errors import ConfigError
from seqtool.quantize import quantize
from seqtool.shortlist import Shortlist


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
    if threads:
        torch.set_num_threads(threads)
    runs = [run] if isinstance(run, str | os.PathLike) else list(run)
    if not runs:
        raise ConfigError("no run to load: give a run directory or a .ckpt file")
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


def describe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Task, size, vocabularies, progress, metrics and configs of a loaded checkpoint."""
    progress = ckpt.get("progress", {})
    summary = {
        "path": ckpt["path"],
        "task": ckpt["task"],
        "seqtool_version": ckpt.get("seqtool_version"),
        "parameters": sum(t.numel() for t in ckpt["model_state"].values()),
        "vocab_size": {k: checkpoint.tokenizer(ckpt, k).vocab_size for k in ckpt["tokenizers"]},
        "steps": progress.get("step"),
        "epochs": progress.get("epoch"),
        "tokens_seen": progress.get("tokens"),
        "train_seconds": round(progress.get("elapsed", 0.0), 1),
        "best_score": progress.get("best"),
        "best_step": progress.get("best_step"),
        "metrics": ckpt.get("metrics", {}),
        "model_config": ckpt["model_config"],
        "tokenizer_config": ckpt.get("tokenizer_config", {}),
        "train_config": ckpt.get("train_config", {}),
    }
    if "averaged" in ckpt:  # written by `seqtool average` or --average-last
        summary["averaged"] = [str(path) for path in ckpt["averaged"]]
    if ckpt["task"] == "translator":  # checkpoints from before shortlists have none
        summary["shortlist"] = None
        if ckpt.get("shortlist") is not None:
            config = ckpt["model_config"]
            table = Shortlist.from_state(
                ckpt["shortlist"], config["src_vocab_size"], config["tgt_vocab_size"], ckpt["path"]
            )
            summary["shortlist"] = {"pairs": len(table.targets), "frequent": len(table.frequent)}
    # plain JSON values (tuples as lists), so that `info` equals `info --json` read back
    return json.loads(json.dumps(summary))


class Loaded:
    """What every inference class shares: where it came from, its device, its
    quantization and `info`."""

    task = ""

    def __init__(self, ckpt: dict[str, Any], device: torch.device, quantize: str = "none") -> None:
        self.path = ckpt["path"]
        self.device = device
        self.quantize = quantize
        self.info = describe(ckpt)
        if quantize != "none":
            self.info["quantize"] = quantize
        self.train_config = dict(ckpt.get("train_config", {}))

    def _ready(self, model: torch.nn.Module) -> torch.nn.Module:
        """A restored model on this device, converted for this quantization."""
        return quantize(model, self.quantize, self.device)

    def _fp32(self, what: str) -> None:
        """Refuse `what`, which reads the fp32 weights, on a quantized model."""
        if self.quantize != "none":
            raise ConfigError(f"{what} reads the fp32 weights: load the run without quantize")

    def __repr__(self) -> str:
        return f"<seqtool {type(self).__name__} {self.path} on {self.device}>"
