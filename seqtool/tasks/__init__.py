"""Tasks: what each kind of model reads, builds, computes as loss and reports as metrics,
and the inference class that runs a trained one.

Each module (generator, classifier, translator) holds a training task (`Task` below),
`prepare(request, notify) -> Task` that reads the data and builds it, and `Inference`,
its class for trained models (`Generator`, `Classifier`, `Translator`). `get(name)` is
the one place that maps a task name to its module.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

from seqtool.config import TokenizerConfig, TrainConfig
from seqtool.errors import CheckpointError, ConfigError

NAMES = ("generator", "classifier", "translator")


class Task(Protocol):
    """What the training loop (seqtool.training) drives."""

    name: str  # "generator", "classifier", "translator"
    model: Any  # the torch module being trained
    unit: str  # what the throughput counts ("chars", "tokens")
    metric: str  # the validation key that picks best.ckpt
    higher_is_better: bool
    tie_break: str | None  # a validation key, higher is better, deciding a tie on metric
    data: dict[str, str]  # the training data: {"train": path as given, "sha256": digest}

    def num_batches(self) -> int:
        """Training batches per epoch."""

    def start_epoch(self, epoch: int) -> None:
        """Called before the first batch of each epoch."""

    def train_loss(self, model, index: int, device) -> tuple[Any, int]:
        """(mean loss tensor, tokens in the batch) for batch `index` of the epoch."""

    def evaluate(self, model, device) -> dict[str, Any]:
        """Validation metrics; empty without validation data."""

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run must carry over (data position, hidden state)."""

    def load_state_dict(self, state: dict[str, Any], device) -> None: ...

    def checkpoint_info(self) -> dict[str, Any]:
        """task, model_config, tokenizer_config, tokenizers: what inference needs."""


@dataclass(frozen=True)
class TrainRequest:
    """Everything `prepare` needs to build a task: the data, the configs, and for a
    resumed run its last checkpoint (whose model and tokenizer settings win)."""

    train: str
    valid: str | None
    run_dir: Path
    tokenizer: TokenizerConfig
    model_options: dict[str, Any]  # model config fields given by the user
    config: TrainConfig
    resume: dict[str, Any] | None = None
    options: dict[str, Any] = field(default_factory=dict)  # task-specific (src_lang, ...)


def get(name: str) -> ModuleType:
    """The module of task `name`: its `prepare`, training task and `Inference` class."""
    if name not in NAMES:
        raise CheckpointError(f"unknown task {name!r}; this seqtool knows {', '.join(NAMES)}")
    return importlib.import_module(f"seqtool.tasks.{name}")


def restored(request: TrainRequest, config_cls, build) -> tuple[Any, TokenizerConfig]:
    """A resumed run's model config and tokenizer config, from its checkpoint, once the
    model `build(config)` makes is known to take its weights (checkpoint.check_weights)."""
    from seqtool import checkpoint  # torch: imported by the commands that train

    ckpt = request.resume
    assert ckpt is not None
    if "tokenizer_config" not in ckpt:
        raise CheckpointError(f"{ckpt['path']}: holds no tokenizer_config to resume with")
    config = checkpoint.check_weights(ckpt, config_cls, build)
    return config, TokenizerConfig.from_dict(ckpt["tokenizer_config"])


def training_data(request: TrainRequest, paths: list[Path]) -> dict[str, str]:
    """The training data's path and digest, which checkpoints store; a resumed run must
    read the data it started with (a checkpoint written before this check resumes as
    before)."""
    from seqtool.data import digest

    # valid "": part of --train held out for validation
    data = {"train": request.train, "valid": request.valid or "", "sha256": digest(paths)}
    stored = (request.resume or {}).get("data")
    if stored and stored["sha256"] != data["sha256"]:
        if stored["train"] == data["train"]:
            what = f"{data['train']} has changed since the run in {request.run_dir} started"
        else:
            what = (
                f"--train {data['train']} is not the data the run in {request.run_dir} "
                f"started with ({stored['train']})"
            )
        raise ConfigError(f"{what}; resume with the same data, or start over with --force")
    return data


Notify = Callable[[str], None]
