"""`seqtool.train`: what `seqtool train TASK` does, for a Python caller.

    import seqtool
    run = seqtool.train("generator", train="input.txt", out="runs/shakes", max_time="10m")
    gen = seqtool.load(run.run_dir)

The options are those of the command line, by name (`hidden_size` for --hidden-size),
keyword-only, with the same defaults and checks (seqtool.options declares them once);
the command line calls `start` with the values click has already checked. Either way
the run directory gets config.yaml, which repeats the run.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seqtool import options as declared
from seqtool.config import OPTION_FIELDS, TokenizerConfig, TrainConfig
from seqtool.errors import ConfigError
from seqtool.tasks import NAMES

# options that say where and how to run rather than what to train
_RUN = ("train", "valid", "out", "resume", "force", "tokenizer", "vocab_size", "tensorboard")


def train(
    task: str,
    *,
    callbacks=None,
    notify: Callable[[str], None] | None = None,
    **options: Any,
):
    """Train a model of `task` ("generator", "classifier" or "translator") into the run
    directory `out`, as `seqtool train TASK` does; returns a `Run` (progress, run_dir).

    options: the command's options by name: train= and out= are required; valid=,
    max_time="10m" (or seconds), max_steps=, hidden_size=, seed=, resume=True, ... An
    unknown name or a bad value raises ConfigError naming it. callbacks: an object
    with any of the methods of seqtool.training.Callbacks (progress, evaluations);
    notify: called with each note the command line would print.
    """
    if task not in NAMES:
        raise ConfigError(f"unknown task {task!r}; choose one of {', '.join(NAMES)}")
    values = declared.resolve(declared.training(task), options, f"train {task}")
    given = {k: values[k] for k in values if k in options or _renamed(task, k, options)}
    call = ", ".join([repr(task), *(f"{k}={v!r}" for k, v in options.items())])
    return start(task, values, given, f"seqtool.train({call})", callbacks, notify)


def _renamed(task: str, name: str, options: dict[str, Any]) -> bool:
    """Whether `name` was given under its old name."""
    table = declared.RENAMED.get(task, {})
    return any(new[2:].replace("-", "_") == name and old[2:].replace("-", "_") in options
               for old, new in table.items())  # fmt: skip


def start(
    task: str,
    values: dict[str, Any],
    given: dict[str, Any],
    command_line: str,
    callbacks=None,
    notify: Callable[[str], None] | None = None,
):
    """Train with every option of `train TASK` resolved (`values`); `given`: those the
    user set. The command line's entry, once click has checked the values."""
    from seqtool import training
    from seqtool.plot import with_tensorboard

    job = training.Job(
        task=task,
        train=values["train"],
        valid=values["valid"],
        out=Path(values["out"]),
        tokenizer=TokenizerConfig(values["tokenizer"], values["vocab_size"]),
        resume=values["resume"],
        force=values["force"],
        given=given,
        record=declared.config_text(task, _kept(values), command_line),
        **_split(task, values),
    )
    if values["tensorboard"]:
        callbacks = with_tensorboard(callbacks, values["out"])
    return training.train(job, callbacks, notify or (lambda message: None))


def _kept(values: dict[str, Any]) -> dict[str, Any]:
    """The options config.yaml keeps: all but those about this process."""
    return {k: v for k, v in values.items() if k not in declared.PROCESS}


def _split(task: str, values: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The settings of `train TASK` by where they go: the model config, TrainConfig, or
    the task's own options (src_lang, metric, ...), under their field names."""
    model_fields = {f.name for f in dataclasses.fields(declared.MODEL_CONFIGS[task])}
    train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
    split: dict[str, dict[str, Any]] = {"model": {}, "config": {}, "options": {}}
    for name, value in values.items():
        if name in _RUN or name in declared.PROCESS:
            continue
        field = OPTION_FIELDS.get(name, name)
        where = (
            "config" if field in train_fields else "model" if field in model_fields else "options"
        )
        split[where][field] = value
    return split


def command_line(argv: list[str]) -> str:
    """The command as a shell would read it back, for config.yaml."""
    return " ".join(shlex.quote(a) for a in ["seqtool", *argv])
