"""Checkpoint averaging: the elementwise mean of the weights of several checkpoints of
one model (the same task, model config, weight shapes and tokenizers).

The mean of the weights of a run's last few evaluations smooths out the noise of the last
updates at no cost in training (Vaswani et al. 2017 translate with the average of the
last 5 or 20 checkpoints). Averaging knows nothing of tasks: any checkpoint that
`checkpoint.load` reads can be averaged with others of its model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from seqtool import checkpoint
from seqtool.errors import CheckpointError, ConfigError

# what only last.ckpt holds, for --resume: an averaged model was never trained with that
# optimizer or data position, so an averaged checkpoint holds weights only
_RESUME_STATE = ("optimizer", "scaler", "rng", "task_state", "train_weights")


def average(runs: Sequence[str | os.PathLike]) -> dict[str, Any]:
    """The checkpoint payload (for `checkpoint.save`) whose `model_state` is the mean of
    the runs' weights (run directories resolve to their best.ckpt).

    Floating tensors are summed in float64 and the mean cast back to their dtype; integer
    buffers, configs, tokenizers, progress and metrics are the last checkpoint's, and
    `averaged` lists the files averaged, in order. Checkpoints are read one at a time, so
    memory holds one checkpoint and the float64 sums however many are averaged.
    Raises ConfigError for fewer than two runs, CheckpointError for a checkpoint of
    another model than the first one's."""
    if len(runs) < 2:
        raise ConfigError(f"averaging needs two checkpoints or more; got {len(runs)}")
    first: dict[str, Any] | None = None
    sums: dict[str, torch.Tensor] = {}
    paths: list[str] = []
    for run in runs:
        last = checkpoint.load(run)
        model = _model(last)
        if first is None:
            first = model
        else:
            _check_same(first, model)
        for key, tensor in last["model_state"].items():
            if tensor.is_floating_point():
                sums[key] = sums[key] + tensor.double() if key in sums else tensor.double()
        paths.append(last["path"])
    state = {
        key: (sums[key] / len(runs)).to(tensor.dtype) if key in sums else tensor
        for key, tensor in last["model_state"].items()
    }
    # tied weights stay one tensor: written once, counted once by `info`
    state = {key: state[first] for key, first in checkpoint.distinct(last["model_state"]).items()}
    # the version fields are the writer's: checkpoint.save sets them
    dropped = ("path", "format_version", "seqtool_version", *_RESUME_STATE)
    kept = {k: v for k, v in last.items() if k not in dropped}
    return {**kept, "model_state": state, "averaged": paths}


def write(
    runs: Sequence[str | os.PathLike], out: str | os.PathLike, force: bool = False
) -> dict[str, Any]:
    """Average `runs` into the checkpoint file `out`, written atomically; returns what was
    written. `out` may not be one of the runs: the files averaged are kept as they are;
    nor, unless `force`, a file that exists (another run's best.ckpt, say)."""
    out = Path(out)
    for run in runs:
        if out.resolve() == checkpoint.resolve(run).resolve():
            raise ConfigError(f"{out} is one of the checkpoints to average; give another --out")
    if not force and os.path.lexists(out):
        raise ConfigError(f"{out} already exists; give --force to replace it, or another --out")
    payload = average(runs)
    checkpoint.save(out, payload)
    return payload


def _model(ckpt: dict[str, Any]) -> dict[str, Any]:
    """What must agree between checkpoints for a mean to exist: path (for messages),
    task, model_config, tokenizers, and each weight's shape and dtype."""
    state = ckpt["model_state"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{ckpt['path']}: model_state is not a dict of tensors")
    for key in ("model_config", "tokenizers"):
        if not isinstance(ckpt[key], dict):
            raise CheckpointError(f"{ckpt['path']}: not a seqtool checkpoint ({key} is not a dict)")
    return {
        **{k: ckpt[k] for k in ("path", "task", "model_config", "tokenizers")},
        "weights": {key: (list(t.shape), t.dtype) for key, t in state.items()},
    }


def _check_same(first: dict[str, Any], model: dict[str, Any]) -> None:
    difference = _difference(first, model)
    if difference is not None:
        raise CheckpointError(
            f"{model['path']} cannot be averaged with {first['path']}: {difference}; "
            "average checkpoints of one model (the same task, configs and tokenizers)"
        )


def _difference(first: dict[str, Any], model: dict[str, Any]) -> str | None:
    """The first way `model` differs from `first`, in words (its own value first)."""
    if model["task"] != first["task"]:
        return f"task {model['task']} vs {first['task']}"
    key = _unequal_key(model["model_config"], first["model_config"])
    if key is not None:
        return f"{key} {model['model_config'].get(key)!r} vs {first['model_config'].get(key)!r}"
    mine, theirs = model["weights"], first["weights"]
    key = _unequal_key(mine, theirs)
    if key is not None:
        if key not in mine or key not in theirs:
            return f"weight {key} is in only one of them"
        (shape, dtype), (first_shape, first_dtype) = mine[key], theirs[key]
        if shape != first_shape:
            return f"weight {key} shape {shape} vs {first_shape}"
        return f"weight {key} dtype {dtype} vs {first_dtype}"
    key = _unequal_key(model["tokenizers"], first["tokenizers"])
    return None if key is None else f"tokenizer {key} differs"


def _unequal_key(mine: dict[str, Any], theirs: dict[str, Any]) -> str | None:
    """The first key, in sorted order, whose value differs between two dicts."""
    return next((k for k in sorted({*mine, *theirs}) if mine.get(k) != theirs.get(k)), None)
