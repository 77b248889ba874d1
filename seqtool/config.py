"""Frozen configuration dataclasses and their validation.

A config is what a checkpoint stores to rebuild a model or to continue its training,
so every field is a plain JSON-able value.
"""

from __future__ import annotations

import dataclasses
import math
import re
import unicodedata
from dataclasses import dataclass
from typing import Any, ClassVar

from seqtool.errors import ConfigError

CELLS = ("lstm", "gru", "rnn")
TOKENIZERS = ("auto", "char", "bpe", "unigram")
DEVICES = ("auto", "cpu", "cuda", "mps")  # and cuda:N, one GPU of several


def _has_control(text: str) -> bool:
    return any(unicodedata.category(ch) == "Cc" for ch in text)


def is_device(name: str) -> bool:
    """A --device value: one of DEVICES or cuda:N."""
    return name in DEVICES or re.fullmatch(r"cuda:[0-9]{1,4}", name) is not None


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
SCHEDULES = ("cosine", "constant")
POOLINGS = ("max", "mean", "last", "attention")
ATTENTIONS = ("bahdanau", "luong", "none")
QUANTIZATIONS = ("none", "int8")

# the longest --max-time: the clock it shows (datetime.timedelta) stays in range
MAX_TIME = 365 * 24 * 3600.0
# Counts a model or a run is built from in a loop, bounded so that a huge one is refused
# at once instead of looping for hours: layers, classifier members and torch threads,
# far beyond any useful setting. A sentencepiece vocabulary past MAX_VOCAB pieces makes
# its trainer loop forever (2**31 - 1 does); no corpus here needs more.
MAX_LAYERS = 64
MAX_MEMBERS = 64
MAX_THREADS = 1024
MAX_VOCAB = 1_000_000
# counts the library takes (lengths, beams, batches), as the command line bounds them: a
# number torch can allocate or refuse (2**62 overflows a tensor size)
MAX_COUNT = 2**31 - 1

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*$")


def parse_duration(text: str) -> float:
    """'90s', '10m', '2h' or a bare number of seconds -> seconds."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise ConfigError(f"cannot read {text!r} as a duration; use a form like 90s, 10m or 2h")
    seconds = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if seconds > MAX_TIME:
        raise ConfigError(f"{text!r} is longer than a year, the most --max-time takes")
    return seconds


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ConfigError(message)


class _Config:
    """Shared dict round trip for checkpoints."""

    # field names of earlier releases -> today's, read from older checkpoints
    RENAMED: ClassVar[dict[str, str]] = {}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[arg-type]

    @classmethod
    def upgrade(cls, data: dict[str, Any]) -> dict[str, Any]:
        """`data` with the fields of earlier releases under today's names."""
        return {cls.RENAMED.get(k, k): v for k, v in data.items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]):
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: v for k, v in cls.upgrade(data).items() if k in names})


def _check_model(config, *sizes: str) -> None:
    """What every model config checks: its cell, its sizes (the shared ones and `sizes`)
    and its dropout."""
    cell = config.cell
    _check(cell in CELLS, f"unknown cell {cell!r}; choose one of {', '.join(CELLS)}")
    for name in ("embedding_size", "hidden_size", "num_layers", *sizes):
        _check(getattr(config, name) > 0, f"{name} must be positive")
    _check(config.num_layers <= MAX_LAYERS, f"num_layers must be at most {MAX_LAYERS}")
    _check(0.0 <= config.dropout < 1.0, "dropout must be in [0, 1)")


@dataclass(frozen=True)
class TokenizerConfig(_Config):
    kind: str = "char"
    vocab_size: int | None = None  # None: every character (char) or a per-task default
    lead_space: bool = False  # see Tokenizer: lines are read as if they began with a space
    chosen: tuple[str, ...] = ()  # with kind "auto": what each side got and why

    def __post_init__(self) -> None:
        object.__setattr__(self, "chosen", tuple(self.chosen))  # a list after a checkpoint
        _check(self.kind in TOKENIZERS, f"unknown tokenizer {self.kind!r}")
        _check(
            self.vocab_size is None or 0 < self.vocab_size <= MAX_VOCAB,
            f"--vocab-size must be in [1, {MAX_VOCAB}]",
        )


@dataclass(frozen=True)
class GeneratorConfig(_Config):
    vocab_size: int
    cell: str = "lstm"
    embedding_size: int = 64
    hidden_size: int = 512
    num_layers: int = 2
    # with --seq-len 64 and lr 3e-3: 2.048 and 2.043 bits/char on tinyshakespeare after
    # 10 minutes on 2 cores, against 2.086 without dropout (bench/analysis.md)
    dropout: float = 0.2
    tie_embeddings: bool = False

    RENAMED: ClassVar[dict[str, str]] = {"tie_weights": "tie_embeddings"}

    def __post_init__(self) -> None:
        _check_model(self, "vocab_size")


@dataclass(frozen=True)
class ClassifierConfig(_Config):
    vocab_size: int
    labels: tuple[str, ...]
    cell: str = "lstm"
    embedding_size: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.5
    # share of a training line's pieces blanked (a zero vector) in training: on SST-2 at
    # 180 s (3 members) 83.3% against 82.2% without, seeds 0-1; no change with one member
    word_dropout: float = 0.2
    bidirectional: bool = True
    pooling: str = "max"
    multi_label: bool = False
    max_length: int = 256  # tokens; longer lines are cut
    members: int = 1  # classifiers trained side by side, probabilities averaged

    def __post_init__(self) -> None:
        object.__setattr__(self, "labels", tuple(self.labels))  # a list after a checkpoint
        _check_model(self, "vocab_size", "max_length", "members")
        _check(self.members <= MAX_MEMBERS, f"members must be at most {MAX_MEMBERS}")
        _check(self.pooling in POOLINGS, f"unknown pooling {self.pooling!r}")
        _check(0.0 <= self.word_dropout < 1.0, "word_dropout must be in [0, 1)")
        _check(len(self.labels) >= 2 or self.multi_label, "a classifier needs two labels or more")
        # labels are printed one per column of a line: a tab, a line end or an escape
        # sequence in one would break the line or reach the terminal
        bad = next((label for label in self.labels if _has_control(label)), None)
        _check(bad is None, f"the label {bad!r} holds a control character")


@dataclass(frozen=True)
class TranslatorConfig(_Config):
    src_vocab_size: int
    tgt_vocab_size: int
    cell: str = "gru"
    embedding_size: int = 256
    hidden_size: int = 256
    num_layers: int = 1
    dropout: float = 0.3
    bidirectional: bool = True  # the encoder
    attention: str = "bahdanau"
    input_feeding: bool = True  # feed the last attentional vector into the next step
    tie_embeddings: bool = False  # target embedding shared with the output layer
    max_length: int = 128  # tokens per side; longer lines are cut
    word_dropout: float = 0.0  # share of source and target-input pieces blanked in training

    def __post_init__(self) -> None:
        _check_model(self, "src_vocab_size", "tgt_vocab_size", "max_length")
        _check(0.0 <= self.word_dropout < 1.0, "word_dropout must be in [0, 1)")
        _check(self.attention in ATTENTIONS, f"unknown attention {self.attention!r}")


@dataclass(frozen=True)
class TrainConfig(_Config):
    batch_size: int = 64
    batch_tokens: int | None = None  # translator: padded tokens per batch, source + target
    label_smoothing: float = 0.0
    seq_len: int = 64  # generator: the truncated-BPTT window
    lr: float = 3e-3
    weight_decay: float = 0.01
    clip: float = 1.0  # max gradient norm; 0 turns clipping off
    schedule: str = "cosine"
    warmup_steps: int = 50
    max_steps: int | None = None
    max_epochs: float | None = None
    max_time: float | None = None  # seconds
    eval_every: int | None = 250  # None: fitted to --max-time once steps are timed
    log_every: int = 25
    patience: int | None = None  # evaluations without improvement before stopping
    seed: int = 0
    device: str = "auto"
    precision: str = "auto"
    threads: int | None = None
    average_last: int = 0  # keep the last N evaluations' weights, average them at the end
    ema: float = 0.0  # decay of the moving average of the weights that is validated and saved

    def __post_init__(self) -> None:
        for name in ("batch_size", "seq_len", "log_every"):
            _check(getattr(self, name) > 0, f"{name} must be positive")
        _check(self.eval_every is None or self.eval_every > 0, "eval_every must be positive")
        _check(self.eval_every is not None or self.max_time is not None, "give --eval-every")
        _check(0 <= self.seed < 2**63, "--seed must be in [0, 2**63)")
        _check(self.lr > 0, "--lr must be positive")
        _check(self.clip >= 0, "--clip must be >= 0")
        _check(self.warmup_steps >= 0, "--warmup-steps must be >= 0")
        _check(self.average_last >= 0, "--average-last must be >= 0")
        _check(0.0 <= self.ema < 1.0, "--ema must be in [0, 1)")
        _check(self.schedule in SCHEDULES, f"unknown schedule {self.schedule!r}")
        _check(is_device(self.device), f"unknown device {self.device!r}")
        _check(self.precision in PRECISIONS, f"unknown precision {self.precision!r}")
        _check(0.0 <= self.label_smoothing < 1.0, "--label-smoothing must be in [0, 1)")
        for name in ("lr", "weight_decay", "clip", "max_epochs", "max_time"):
            value = getattr(self, name)
            _check(value is None or math.isfinite(value), f"--{name.replace('_', '-')} is {value}")
        for name in ("max_steps", "max_epochs", "max_time", "patience", "threads", "batch_tokens"):
            value = getattr(self, name)
            _check(value is None or value > 0, f"{name} must be positive")
        _check(self.max_time is None or self.max_time <= MAX_TIME, "--max-time is at most a year")
        _check(
            self.max_epochs is None or self.max_epochs <= MAX_COUNT,
            f"--max-epochs is at most {MAX_COUNT}",
        )
        _check(
            self.threads is None or self.threads <= MAX_THREADS,
            f"--threads is at most {MAX_THREADS}",
        )

    @property
    def has_budget(self) -> bool:
        return any(v is not None for v in (self.max_steps, self.max_epochs, self.max_time))


def defaults(cls) -> dict[str, Any]:
    """The field defaults of a config class: the one place the command line reads them."""
    return {
        f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING
    }


# training defaults per task, where they differ from TrainConfig's (the generator's)
# the options of `seqtool train` whose config field is named otherwise
OPTION_FIELDS = {"layers": "num_layers", "ensemble": "members", "early_stop_metric": "metric"}

TRAIN_DEFAULTS: dict[str, dict[str, Any]] = {
    "generator": {},
    "classifier": {"batch_size": 32, "lr": 3e-3, "eval_every": 100},
    "translator": {
        "batch_size": 64,
        "batch_tokens": 1200,
        "lr": 1e-3,
        "eval_every": 500,
        "label_smoothing": 0.1,
        "ema": 0.9999,
    },
}

# budget when none is given: three classifier members for 6 epochs reach SST-2 82.9 in
# about 3.5 minutes on 2 cores, where one member for 10 epochs reaches 80.7 in 2
DEFAULT_EPOCHS = {"generator": 10, "classifier": 6, "translator": 10}

# tokenizer kind per task: characters for generators; for whole lines, "auto" picks char
# or unigram per side from the training text (tokenizer.choose_kind)
DEFAULT_TOKENIZER = {"generator": "char", "classifier": "auto", "translator": "auto"}

# the classifier trains an ensemble of three unless told otherwise (a checkpoint without
# the field holds one model, hence ClassifierConfig's default of 1)
DEFAULT_MEMBERS = 3


@dataclass(frozen=True)
class SamplingConfig(_Config):
    """How `generate` samples: temperature 0 is greedy."""

    length: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        _check(0 < self.length <= MAX_COUNT, f"length must be in [1, {MAX_COUNT}]")
        _check(self.temperature >= 0, "temperature must be >= 0")
        _check(self.top_k is None or self.top_k > 0, "top_k must be positive")
        _check(self.top_p is None or 0 < self.top_p <= 1, "top_p must be in (0, 1]")


# translations longer than this many times their source are not translations; a larger
# ratio only lets a model that never ends a sentence decode for hours
MAX_LENGTH_RATIO = 10.0


@dataclass(frozen=True)
class SearchConfig(_Config):
    """How `translate` searches: beam 1 is greedy; GNMT length penalty alpha."""

    beam_size: int = 5
    n_best: int = 1
    length_penalty: float = 1.0
    max_length_ratio: float = 2.0
    batch_size: int = 64

    def __post_init__(self) -> None:
        for name in ("beam_size", "n_best", "batch_size"):
            _check(0 < getattr(self, name) <= MAX_COUNT, f"{name} must be in [1, {MAX_COUNT}]")
        _check(self.length_penalty >= 0, "length_penalty must be >= 0")
        _check(
            0 < self.max_length_ratio <= MAX_LENGTH_RATIO,
            f"max_length_ratio must be in (0, {MAX_LENGTH_RATIO:g}]",
        )
        _check(
            self.n_best <= self.beam_size,
            f"n_best {self.n_best} needs beam_size {self.n_best} or more",
        )


@dataclass(frozen=True)
class ClassifyConfig(_Config):
    """How `classify` decides: multi-label models keep every label this likely."""

    top_k: int | None = None
    threshold: float = 0.5
    # lines per forward pass, formed from similar lengths: 64 classifies SST-2's test set
    # 1.3x (int8) and 1.2x (fp32) as fast as 256 did
    batch_size: int = 64

    def __post_init__(self) -> None:
        _check(self.top_k is None or self.top_k > 0, "top_k must be positive")
        _check(0 <= self.threshold <= 1, "threshold must be in [0, 1]")
        _check(self.batch_size > 0, "batch_size must be positive")
