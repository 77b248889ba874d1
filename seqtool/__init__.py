"""seqtool: train and run recurrent sequence models.

    import seqtool
    gen = seqtool.load("runs/shakes")            # a run directory or a .ckpt file
    gen.generate("ROMEO:", length=300, seed=1)
    run = seqtool.train("generator", train="input.txt", out="runs/mine", max_time="5m")

`load` returns a `Generator`, `Classifier` or `Translator`; `train` takes the options of
`seqtool train TASK` by name and returns a `Run`. Everything that needs torch
is imported on first use, so `import seqtool` stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seqtool.errors import (
    CheckpointError,
    ConfigError,
    DataError,
    OutputError,
    SeqtoolError,
    SeqtoolWarning,
    TrainingError,
    TrainingInterrupted,
)
from seqtool.version import __version__ as __version__

# public name -> the module that defines it, imported when first used
_LAZY = {
    "load": "seqtool.inference",
    "train": "seqtool.api",
    "Run": "seqtool.training",
    "info": "seqtool.inference",
    "Generator": "seqtool.tasks.generator",
    "Classifier": "seqtool.tasks.classifier",
    "Classification": "seqtool.tasks.classifier",
    "Explanation": "seqtool.tasks.classifier",
    "Translator": "seqtool.tasks.translator",
    "Translation": "seqtool.tasks.translator",
}

__all__ = [
    "CheckpointError",
    "Classification",
    "Classifier",
    "ConfigError",
    "DataError",
    "Explanation",
    "Generator",
    "OutputError",
    "Run",
    "SeqtoolError",
    "SeqtoolWarning",
    "TrainingError",
    "TrainingInterrupted",
    "Translation",
    "Translator",
    "info",
    "load",
    "train",
]

if TYPE_CHECKING:
    from seqtool.api import train
    from seqtool.inference import info, load
    from seqtool.tasks.classifier import Classification, Classifier, Explanation
    from seqtool.tasks.generator import Generator
    from seqtool.tasks.translator import Translation, Translator
    from seqtool.training import Run


def __getattr__(name: str):
    if name not in _LAZY:
        raise AttributeError(f"module 'seqtool' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_LAZY[name]), name)
