"""What every inference class shares (`Loaded`) and the summary of a checkpoint
(`describe`): below the task modules, which build on them, and above checkpoint.py.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from seqtool import checkpoint
from seqtool.errors import ConfigError
from seqtool.quantize import quantize
from seqtool.shortlist import Shortlist


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
