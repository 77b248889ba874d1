"""Checkpoints: one self-contained file per save, written atomically.

A checkpoint is a plain dict of tensors, numbers, strings and bytes, loadable with
`torch.load(weights_only=True)`, so a file from a stranger cannot run code:

    format_version, seqtool_version, task, model_config, tokenizer_config, train_config,
    tokenizers {name: sentencepiece proto bytes}, model_state, progress, metrics,
    task_options (classifier: metric, class_weights), data {train: path, sha256},
    sizing (what --max-time chose, where it chose: one line)
    (+ in last.ckpt: optimizer, scaler, rng, task_state, and with --ema train_weights:
    the trained weights, where model_state holds their moving average)

Every failure is a one-line CheckpointError naming the file: `load` for files that are
not checkpoints, `tokenizer` and `restore_model` for checkpoints whose contents are
damaged or crafted; `save` raises OutputError for a full disk.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pickle
import re
import stat
import types
import typing
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from seqtool import files
from seqtool.config import (
    ClassifierConfig,
    GeneratorConfig,
    TokenizerConfig,
    TrainConfig,
    TranslatorConfig,
)
from seqtool.errors import CheckpointError, ConfigError, first_line
from seqtool.version import __version__

if TYPE_CHECKING:
    from seqtool.tokenizer import Tokenizer

FORMAT_VERSION = 1
# the torch floor of pyproject.toml: older releases' weights_only loading can be made to
# run code by a crafted file (CVE-2025-32434, CVE-2026-24747)
TORCH_FLOOR = (2, 10)
REQUIRED = ("format_version", "task", "model_config", "tokenizers", "model_state")
# torch.save writes a zip archive; torch.load also reads the older plain pickle format
_ZIP_MAGIC, _PICKLE_MAGIC = b"PK\x03\x04", b"\x80"
_TEMPORARY = ".*.ckpt.tmp"  # `save` writes best.ckpt through .best.ckpt.tmp


def resolve(run: str | os.PathLike) -> Path:
    """A run directory (its best.ckpt) or a checkpoint file."""
    path = Path(run)
    mode = _mode(path)
    if mode is None:
        raise CheckpointError(f"{path}: no such run directory or checkpoint file")
    if stat.S_ISDIR(mode):
        name = next((n for n in ("best.ckpt", "last.ckpt") if _mode(path / n) is not None), None)
        if name is None:
            raise CheckpointError(f"{path}: no best.ckpt or last.ckpt in this run directory")
        path, mode = path / name, _mode(path / name)
    if not stat.S_ISREG(mode):  # a FIFO or a device would be read from forever
        raise CheckpointError(f"{path}: not a regular file, so not a checkpoint")
    if path.match(_TEMPORARY):
        raise CheckpointError(
            f"{path}: the temporary file of a save that did not finish, not a checkpoint; "
            "use best.ckpt or last.ckpt"
        )
    return path


def save(path: Path, payload: dict[str, Any]) -> None:
    """Write atomically (seqtool.files): a crash while saving leaves the previous
    checkpoint intact, and a failed write (disk full) raises OutputError."""
    payload = {"format_version": FORMAT_VERSION, "seqtool_version": __version__, **payload}
    with files.replacing(path, "checkpoint") as f:
        writer = _Writer(f)
        try:
            torch.save(payload, writer)
        except RecursionError:  # a RuntimeError: lists nested deeply in a crafted input
            raise CheckpointError(
                f"{path}: not saved: it would hold data nested too deeply to write"
            ) from None
        except RuntimeError:
            if writer.error is None:
                raise
            raise writer.error from None


class _Writer:
    """The file torch.save writes to. Its zip writer reports a failed write as a
    RuntimeError that has lost the cause; this keeps the OSError (disk full, file too
    large) so that the message can say what went wrong."""

    def __init__(self, file) -> None:
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


def clean_temporary(run_dir: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of saves that never finished (a run killed while
    saving); returns what was removed. Nothing reads them, but each holds a
    checkpoint's worth of disk."""
    removed = []
    for tmp in Path(run_dir).glob(_TEMPORARY):
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
            removed.append(tmp)
    return removed


def load(run: str | os.PathLike, task: str | None = None) -> dict[str, Any]:
    """Load and check a checkpoint; `task` names the task the caller can run."""
    path = resolve(run)
    if _release(torch.__version__) < TORCH_FLOOR:
        raise CheckpointError(
            f"{path}: refused to load under torch {torch.__version__}: seqtool needs torch "
            f"{'.'.join(map(str, TORCH_FLOOR))} or newer, whose weights_only loading cannot "
            "be made to run code; upgrade torch"
        )
    try:
        with path.open("rb") as f:
            head = f.read(len(_ZIP_MAGIC))
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read the file ({err.strerror or err})") from None
    # only a zip archive or a pickle reaches torch.load, so that its errors about
    # pickles are not reported for a text file
    if not head:
        raise CheckpointError(f"{path}: not a seqtool checkpoint (the file is empty)")
    if not head.startswith((_ZIP_MAGIC, _PICKLE_MAGIC)):
        raise CheckpointError(
            f"{path}: not a seqtool checkpoint (neither a zip archive nor a pickle)"
        )
    if head.startswith(_ZIP_MAGIC):
        _check_records(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's notes on foreign pickle protocols
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        # weights_only refuses any reference to a Python class or function (GLOBAL)
        name = re.search(r"GLOBAL ([\w.]+)", str(err))
        if name:
            raise CheckpointError(
                f"{path}: refused to load: the file holds Python objects, not only weights "
                f"(it names {name.group(1)})"
            ) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(err))
        raise CheckpointError(
            f"{path}: not a seqtool checkpoint, or truncated or corrupt "
            f"({detail.group(1).strip() if detail else first_line(err)})"
        ) from None
    except Exception as err:  # torch.load of arbitrary bytes can fail in many ways
        raise CheckpointError(
            f"{path}: not a seqtool checkpoint, or truncated or corrupt ({first_line(err)})"
        ) from None
    if not isinstance(ckpt, dict) or any(key not in ckpt for key in REQUIRED):
        raise CheckpointError(f"{path}: not a seqtool checkpoint (required keys are missing)")
    version = ckpt["format_version"]
    if type(version) is not int:
        raise CheckpointError(f"{path}: not a seqtool checkpoint (format_version {version!r})")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format {version} is newer than this seqtool "
            f"reads ({FORMAT_VERSION}); upgrade seqtool"
        )
    if not isinstance(ckpt["task"], str) or ckpt["task"] not in _CONFIGS:
        raise CheckpointError(f"{path}: not a seqtool checkpoint (unknown task {ckpt['task']!r})")
    if task is not None and ckpt["task"] != task:
        raise CheckpointError(
            f"{path}: this is a {ckpt['task']} checkpoint, not a {task} checkpoint; "
            f"use `seqtool {_COMMANDS.get(ckpt['task'], 'info')}` with it"
        )
    _check_structure(ckpt, path)
    ckpt["path"] = str(path)
    return ckpt


def _check_records(path: Path) -> None:
    """torch.save stores a checkpoint's records uncompressed, so none can hold more bytes
    than the file. A compressed record, or one that claims more, is a crafted archive
    whose loading would take what memory it claims (a zip bomb): refused before torch
    reads it."""
    size = path.stat().st_size
    try:
        with zipfile.ZipFile(path) as archive:
            records = archive.infolist()
    except Exception as err:  # zipfile reading crafted bytes fails in many ways
        raise CheckpointError(
            f"{path}: not a seqtool checkpoint, or truncated or corrupt ({first_line(err)})"
        ) from None
    for record in records:
        stored = record.compress_type == zipfile.ZIP_STORED
        if not stored or record.file_size > size:
            what = "larger than the file" if stored else "compressed"
            raise CheckpointError(
                f"{path}: not a seqtool checkpoint (its record {record.filename[:80]!r} of "
                f"{record.file_size:,} bytes is {what}; torch.save stores records whole)"
            )


def _release(version: str) -> tuple[int, ...]:
    """(2, 10) for "2.10.0+cpu" or "2.10.0a0"."""
    return tuple(int(re.match(r"\d+", part).group()) for part in version.split(".")[:2])


_CONFIGS = {
    "generator": GeneratorConfig,
    "classifier": ClassifierConfig,
    "translator": TranslatorConfig,
}
_NUMBER = (int, float)
# what every other key holds, where present: the type of its values, or of the key itself
_VALUES = {
    "tokenizers": bytes,
    "model_state": torch.Tensor,
    "metrics": _NUMBER,
    "data": str,
}
# the fields of training.Progress, which a resumed run rebuilds from `progress`
_PROGRESS = {
    "step": int,
    "epoch": int,
    "batch": int,
    "tokens": int,
    "elapsed": _NUMBER,
    "best": (*_NUMBER, type(None)),
    "best_step": (int, type(None)),
    "best_loss": (*_NUMBER, type(None)),
    "best_tie": (*_NUMBER, type(None)),
    "bad_evals": int,
}
_TYPES = {
    "seqtool_version": str,
    "sizing": str,
    "task_options": dict,
    "optimizer": dict,
    "scaler": dict,
    "rng": (dict, list),
    "task_state": (dict, list),
    "train_weights": dict,
    "averaged": list,
}  # a translator's shortlist is checked whole by Shortlist.from_state


def stored_whole(tensor: torch.Tensor) -> bool:
    """Whether a loaded tensor is a plain (strided) one whose storage holds all its
    values: a view with a zero stride would make a few bytes of file into gigabytes of
    model, or of an average."""
    return (
        tensor.layout == torch.strided
        and tensor.untyped_storage().nbytes() >= tensor.numel() * tensor.element_size()
    )


def distinct(state: dict[str, torch.Tensor]) -> dict[str, str]:
    """Each key of `state`, mapped to the first key that names the same tensor: tied
    weights (a target embedding that is also the output layer) are one tensor under two
    keys, which a saved and loaded checkpoint keeps."""
    first: dict[tuple, str] = {}
    return {
        key: first.setdefault(
            (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), t.stride()), key
        )
        for key, t in state.items()
    }


def _check_structure(ckpt: dict[str, Any], path: Path) -> None:
    """Every key a reader uses holds what it should, before anything reads it: a damaged
    or crafted file is one CheckpointError, never an AttributeError in `info`."""

    def refuse(what: str) -> None:
        raise CheckpointError(f"{path}: not a seqtool checkpoint ({what})")

    for key, kind in _VALUES.items():
        value = ckpt.get(key, {})
        if not isinstance(value, dict):
            refuse(f"{key} is a {type(value).__name__}, not a dict")
        bad = next(
            (k for k, v in value.items() if not isinstance(k, str) or not isinstance(v, kind)), None
        )
        if bad is not None:
            refuse(f"{key}[{bad!r}] is a {type(value[bad]).__name__}")
    for key, kind in _TYPES.items():
        if key in ckpt and not isinstance(ckpt[key], kind):
            refuse(f"{key} is a {type(ckpt[key]).__name__}")
    for key, tensor in ckpt["model_state"].items():
        if not stored_whole(tensor):
            refuse(f"model_state[{key!r}] is not a tensor stored whole")
    if not all(isinstance(p, str) for p in ckpt.get("averaged", [])):
        refuse("averaged holds more than paths")
    progress = ckpt.get("progress", {})
    if not isinstance(progress, dict):
        refuse(f"progress is a {type(progress).__name__}, not a dict")
    for key, value in progress.items():
        if key not in _PROGRESS or not isinstance(value, _PROGRESS[key]):
            refuse(f"progress[{key!r}] is {value!r}")
    if "data" in ckpt and set(ckpt["data"]) - {"valid"} != {"train", "sha256"}:
        refuse("data holds other keys than train, valid and sha256")
    for key, config_cls in (
        ("model_config", _CONFIGS[ckpt["task"]]),
        ("tokenizer_config", TokenizerConfig),
        ("train_config", TrainConfig),
    ):
        if key == "model_config" or key in ckpt:
            try:
                config = _parse_config(ckpt[key], config_cls)  # its dataclass checks values
            except (ConfigError, TypeError, ValueError) as err:
                raise CheckpointError(f"{path}: {key} is invalid ({first_line(err)})") from None
            # what this seqtool reads of it: keys of older versions (or crafted ones) go
            ckpt[key] = config.to_dict()


_VOCAB_FIELDS = {"text": "vocab_size", "src": "src_vocab_size", "tgt": "tgt_vocab_size"}


def tokenizer(ckpt: dict[str, Any], name: str = "text") -> Tokenizer:
    """The tokenizer `name` ("text", "src", "tgt") of a loaded checkpoint."""
    from seqtool.tokenizer import Tokenizer  # sentencepiece only where a command needs it

    path = ckpt.get("path", "checkpoint")
    try:
        tok = Tokenizer.from_checkpoint(ckpt, name)
    except KeyError:
        raise CheckpointError(f"{path}: this checkpoint holds no tokenizer {name}") from None
    except (AttributeError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(
            f"{path}: the tokenizer {name} in this checkpoint is corrupt ({first_line(err)})"
        ) from None
    # the model reads and writes ids up to its vocab_size: any other tokenizer would hand
    # it ids it has no row for, or read back ids it has no piece for
    size = ckpt["model_config"].get(_VOCAB_FIELDS.get(name, ""))
    if size is not None and tok.vocab_size != size:
        raise CheckpointError(
            f"{path}: the tokenizer {name} holds {tok.vocab_size:,} pieces and the model "
            f"{size:,}: a damaged file"
        )
    return tok


def restore_model(
    ckpt: dict[str, Any], config_cls: type, build: Callable[[Any], nn.Module]
) -> nn.Module:
    """The model of a loaded checkpoint, in eval mode: `config_cls` (a config dataclass)
    reads `model_config`, `build(config)` makes the model, which gets `model_state`."""
    path = ckpt.get("path", "checkpoint")
    config = check_weights(ckpt, config_cls, build)
    model = build(config)
    try:
        model.load_state_dict(ckpt["model_state"])
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: the weights do not match the model config ({first_line(err)})"
        ) from None
    _check_finite(model.state_dict(), path)  # as the model holds them (fp32)
    return model.eval()


def check_weights(ckpt: dict[str, Any], config_cls: type, build: Callable[[Any], nn.Module]):
    """The checkpoint's model config, once the model it makes is known to take the stored
    weights: the model is built on the meta device, which allocates nothing, and its
    parameter shapes are compared with the weights, so that a crafted config (a hidden
    size of 10**9) is refused before it can exhaust memory."""
    path = ckpt.get("path", "checkpoint")
    try:
        config = _parse_config(ckpt["model_config"], config_cls)
        with torch.device("meta"), _SkipInit():
            skeleton = build(config)
    except (ConfigError, TypeError, ValueError, RuntimeError) as err:
        raise CheckpointError(f"{path}: model_config is invalid ({first_line(err)})") from None
    difference = first_difference(skeleton.state_dict(), ckpt["model_state"])
    if difference is not None:
        raise CheckpointError(
            f"{path}: the weights do not match the model config (first difference: {difference})"
        )
    return config


def _check_finite(state: dict[str, torch.Tensor], path: Any) -> None:
    """Training stops before its weights hold nan or inf; weights that do come from a
    damaged or crafted file, and every answer of the model would be nan."""
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: the weights hold nan or inf ({name}): a damaged file")


class _SkipInit(TorchFunctionMode):
    """Skips torch.nn.init's functions: meta tensors hold no values to initialize, and
    the meta normal_ imports torch._dynamo, a second of start-up for every command."""

    def __torch_function__(self, func, arg_types=(), args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "__module__", None) == "torch.nn.init":
            return kwargs["tensor"] if "tensor" in kwargs else args[0]
        return func(*args, **kwargs)


def _parse_config(data: Any, config_cls: type):
    """config_cls.from_dict, once each field is known to hold a value of its declared
    type: the dataclasses check ranges, not types, and a string where a number belongs
    would fail later with a traceback."""
    if not isinstance(data, dict):
        raise TypeError(f"a {type(data).__name__}, not a dict")
    data = config_cls.upgrade(data)
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if field.name not in data:
            if field.default is dataclasses.MISSING:
                raise ValueError(f"{field.name} is missing")
        elif not _has_type(data[field.name], hints[field.name]):
            hint = hints[field.name]
            expected = hint.__name__ if isinstance(hint, type) else str(hint)
            raise TypeError(f"{field.name} is {data[field.name]!r}, not {expected}")
    return config_cls.from_dict(data)


def _has_type(value: Any, hint: Any) -> bool:
    """isinstance for the hints configs use: int, float, bool, str, X | None, tuple[X, ...]."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_has_type(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:  # a list once stored
        item = typing.get_args(hint)[0]
        return isinstance(value, (tuple, list)) and all(_has_type(v, item) for v in value)
    if hint is float:
        return type(value) in (int, float)
    if hint is int:
        return type(value) is int  # not a bool
    return isinstance(value, hint)


def first_difference(
    expected: dict[str, torch.Tensor], state: Any, name: str = "model_state"
) -> str | None:
    """How `state` differs from the model's state_dict (`expected`) in keys or shapes."""
    if not isinstance(state, dict):
        return f"{name} is a {type(state).__name__}, not a dict"
    for key, tensor in expected.items():
        if key not in state:
            return f"{key} is missing from the weights"
        value = state[key]
        if not isinstance(value, torch.Tensor):
            return f"{key} is not a tensor ({type(value).__name__})"
        if value.shape != tensor.shape:
            return (
                f"{key} shape {list(value.shape)} in the file vs {list(tensor.shape)} in the config"
            )
        if value.is_floating_point() != tensor.is_floating_point() or value.is_complex():
            return f"{key} holds {value.dtype} values"
    extra = next((key for key in state if key not in expected), None)
    return None if extra is None else f"{extra} is not in the model"


_COMMANDS = {"generator": "generate", "classifier": "classify", "translator": "translate"}


def _mode(path: Path) -> int | None:
    """The file's st_mode, or None where nothing is there."""
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        return None
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied") from None
    except OSError as err:
        raise CheckpointError(f"{path}: {err.strerror or err}") from None
