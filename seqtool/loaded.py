"""What every inference class shares (`Loaded`) and the summary of a checkpoint
(`describe`): below the task modules, which build on them, and above checkpoint.py.
"""

from __future__ import annotations

import functools
import inspect
import json
import warnings
from typing import Any

import torch

from seqtool import checkpoint
from seqtool.errors import ConfigError
from seqtool.quantize import quantize
from seqtool.shortlist import Shortlist


def _parameters(state: dict[str, torch.Tensor]) -> int:
    """Values in the weights, a tied tensor once."""
    return sum(state[key].numel() for key in set(checkpoint.distinct(state).values()))


def describe(ckpt: dict[str, Any]) -> dict[str, Any]:
    """Task, size, vocabularies, progress, metrics and configs of a loaded checkpoint."""
    progress = ckpt.get("progress", {})
    summary = {
        "path": ckpt["path"],
        "task": ckpt["task"],
        "seqtool_version": ckpt.get("seqtool_version"),
        "parameters": _parameters(ckpt["model_state"]),
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
    if "sizing" in ckpt:  # what --max-time chose, and why
        summary["sizing"] = ckpt["sizing"]
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


# keyword names of an earlier release, read as the new one with a DeprecationWarning
RENAMED = {"top": "top_k", "k": "top_k"}


def keyword_options(method):
    """Let an inference method take the options it names and no other: an option of
    another task (a generator's evaluate given `threshold`) is refused with the message
    the CLI prints for it, so a client passes what the user set without asking the
    task. An old name (RENAMED) is read as the new one, with a DeprecationWarning."""
    accepted = inspect.signature(method).parameters

    @functools.wraps(method)
    def checked(self, *args, **options):
        for old, new in RENAMED.items():
            if old in options and old not in accepted and new in accepted:
                warnings.warn(f"{old}= is deprecated; use {new}=", DeprecationWarning, stacklevel=2)
                options[new] = options.pop(old)
        for name in options:
            if name not in accepted or accepted[name].kind != inspect.Parameter.KEYWORD_ONLY:
                flag = "--" + name.replace("_", "-")
                raise ConfigError(f"{flag}: a {self.task} does not take it")
        return method(self, *args, **options)

    return checked


class Loaded:
    """What every inference class shares: where it came from, its device, its
    quantization and `info`."""

    task = ""
    streams = False  # True: generations join and leave one running batch (a generator)

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
