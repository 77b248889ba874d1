"""Checkpoints: one self-contained file per save, written atomically.

A checkpoint is a plain dict of tensors, numbers, strings and bytes, loadable with
`torch.load(weights_only=True)`, so a file from a stranger cannot run code:

    format_version, seqtool_version, task, model_config, tokenizer_config, train_config,
    tokenizers {name: sentencepiece proto bytes}, model_state, progress, metrics,
    task_options (classifier: metric, class_weights)
    (+ in last.ckpt: optimizer, scaler, rng, task_state)
"""

from __future__ import annotations

import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import torch

from seqtool import __version__
from seqtool.errors import CheckpointError

FORMAT_VERSION = 1
REQUIRED = ("format_version", "task", "model_config", "tokenizers", "model_state")


def resolve(run: str | os.PathLike) -> Path:
    """A run directory (its best.ckpt) or a checkpoint file."""
    path = Path(run)
    if path.is_dir():
        for name in ("best.ckpt", "last.ckpt"):
            if (path / name).exists():
                return path / name
        raise CheckpointError(f"{path}: no best.ckpt or last.ckpt in this run directory")
    if not path.exists():
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    return path


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write to a temporary file, flush, fsync, then rename over `path`: a crash while
    saving leaves the previous checkpoint intact."""
    payload = {"format_version": FORMAT_VERSION, "seqtool_version": __version__, **payload}
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("wb") as f:
        torch.save(payload, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load(run: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; `task` names the task the caller can run."""
    path = resolve(run)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses anything but tensors and plain containers
        first = str(err).strip().splitlines()
        detail = next((line for line in first if "Unsupported" in line), "unsupported content")
        raise CheckpointError(
            f"{path}: refused to load: the file holds Python objects, not only weights "
            f"({detail.strip().rstrip('.')})"
        ) from None
    except Exception as err:  # torch.load of arbitrary bytes can fail in many ways
        raise CheckpointError(
            f"{path}: not a seqtool checkpoint, or truncated or corrupt ({_first_line(err)})"
        ) from None
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED):
        raise CheckpointError(f"{path}: not a seqtool checkpoint (required keys are missing)")
    if ckpt["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format_version']} is newer than this seqtool "
            f"reads ({FORMAT_VERSION}); upgrade seqtool"
        )
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(
            f"{path}: this is a {ckpt['task']} checkpoint, not a {task} checkpoint; "
            f"use `seqtool {_COMMANDS.get(ckpt['task'], 'info')}` with it"
        )
    ckpt["path"] = str(path)
    return ckpt


_COMMANDS = {"generator": "generate", "classifier": "classify", "translator": "translate"}


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__
