import dataclasses
import errno
import io
import os
import pickle
import random
import subprocess
import sys
import tempfile
import textwrap
import zipfile
from pathlib import Path

import pytest
import torch

from seqtool import checkpoint
from seqtool.config import ClassifierConfig, GeneratorConfig, TranslatorConfig
from seqtool.errors import CheckpointError, OutputError
from seqtool.models.classifier import build_model as build_classifier
from seqtool.models.generator import GeneratorModel
from seqtool.models.translator import TranslatorModel
from seqtool.tokenizer import Tokenizer

PAYLOAD = {
    "task": "generator",
    "model_config": {"vocab_size": 3},
    "tokenizers": {"text": b"proto"},
    "model_state": {"w": torch.ones(2)},
}
TINY_GENERATOR = GeneratorConfig(vocab_size=20, embedding_size=8, hidden_size=8, num_layers=1)


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, PAYLOAD)
    ckpt = checkpoint.load(tmp_path)  # a run directory means its best.ckpt
    assert ckpt["task"] == "generator" and ckpt["tokenizers"]["text"] == b"proto"
    assert ckpt["format_version"] == checkpoint.FORMAT_VERSION
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


# -- saving -------------------------------------------------------------------------


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.save(path, PAYLOAD)
    before = path.read_bytes()

    def crash(payload, f, *args, **kwargs):
        f.write(b"PK\x03\x04 part of a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OutputError) as err:
        checkpoint.save(path, {**PAYLOAD, "model_state": {"w": torch.zeros(2)}})
    assert str(err.value) == (
        f"{path}: could not write the checkpoint (No space left on device); "
        "the previous checkpoint is kept"
    )
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


def test_full_disk_is_a_one_line_error(tmp_path):
    """A real ENOSPC: the temporary file is a link to /dev/full, whose writes fail."""
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, PAYLOAD)
    before = path.read_bytes()
    (tmp_path / ".best.ckpt.tmp").symlink_to("/dev/full")
    big = {**PAYLOAD, "model_state": {"w": torch.zeros(100_000)}}  # more than one buffer
    with pytest.raises(OutputError) as err:
        checkpoint.save(path, big)
    assert str(err.value) == (
        f"{path}: could not write the checkpoint (No space left on device); "
        "the previous checkpoint is kept"
    )
    assert path.read_bytes() == before
    assert not os.path.lexists(tmp_path / ".best.ckpt.tmp")
    # no previous checkpoint: nothing is said to be kept
    (tmp_path / ".last.ckpt.tmp").symlink_to("/dev/full")
    with pytest.raises(OutputError) as err:
        checkpoint.save(tmp_path / "last.ckpt", big)
    assert str(err.value).endswith("could not write the checkpoint (No space left on device)")


def test_save_of_an_unpicklable_payload_raises_and_leaves_no_temporary_file(tmp_path):
    with pytest.raises(Exception) as err:
        checkpoint.save(tmp_path / "best.ckpt", {**PAYLOAD, "bad": lambda: 0})
    assert not isinstance(err.value, OutputError)  # a bug, not a disk problem
    assert list(tmp_path.iterdir()) == []


def test_clean_temporary_removes_only_unfinished_saves(tmp_path):
    checkpoint.save(tmp_path / "best.ckpt", PAYLOAD)
    for name in (".best.ckpt.tmp", ".last.ckpt.tmp"):
        (tmp_path / name).write_bytes(b"PK\x03\x04 cut short")
    (tmp_path / "notes.tmp").write_text("mine")
    removed = checkpoint.clean_temporary(tmp_path)
    assert sorted(p.name for p in removed) == [".best.ckpt.tmp", ".last.ckpt.tmp"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best.ckpt", "notes.tmp"]
    assert checkpoint.clean_temporary(tmp_path / "no such run") == []


def test_a_temporary_file_is_never_taken_for_a_checkpoint(tmp_path):
    tmp = tmp_path / ".best.ckpt.tmp"
    checkpoint.save(tmp_path / "x.ckpt", PAYLOAD)
    (tmp_path / "x.ckpt").rename(tmp)  # even a complete one
    with pytest.raises(CheckpointError, match="no best.ckpt or last.ckpt"):
        checkpoint.load(tmp_path)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp)
    assert str(err.value).startswith(
        f"{tmp}: the temporary file of a save that did not finish, not a checkpoint"
    )


# -- loading files that are not checkpoints -------------------------------------------


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, PAYLOAD)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a seqtool checkpoint, or truncated or corrupt")
    assert "\n" not in message


def test_a_compressed_record_is_refused_before_torch_reads_it(tmp_path):
    """A zip bomb: data.pkl padded with 64 MB of zeros, deflated to a few kB. torch would
    allocate and inflate what the record claims (a 20 MB file can claim 20 GB)."""
    path = tmp_path / "bomb.ckpt"
    checkpoint.save(path, PAYLOAD)
    with zipfile.ZipFile(path) as archive:
        records = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in records.items():
            bomb = name.endswith("data.pkl")
            archive.writestr(name, data + bytes(64 << 20) if bomb else data,
                             zipfile.ZIP_DEFLATED if bomb else zipfile.ZIP_STORED)  # fmt: skip
    assert path.stat().st_size < 1 << 20
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert str(err.value) == (
        f"{path}: not a seqtool checkpoint (its record 'archive/data.pkl' of 67,109,256 bytes "
        "is compressed; torch.save stores records whole)"
    )


def _other_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "content, reason",
    [
        (b"notes: nothing to see here\n", " (neither a zip archive nor a pickle)"),
        (b"", " (the file is empty)"),
        (b"\x00" + random.Random(0).randbytes(999), " (neither a zip archive nor a pickle)"),
        (b"\x80" + random.Random(1).randbytes(999), ", or truncated or corrupt (Unsupported"),
        (pickle.dumps({"a": 1}), ", or truncated or corrupt (Unsupported operand 149)"),
        (_other_zip(), ", or truncated or corrupt ("),
    ],
    ids=["text", "empty", "random", "random-pickle-header", "plain-pickle", "other-zip"],
)
def test_text_file_is_not_a_checkpoint(tmp_path, content, reason):
    path = tmp_path / "notes.ckpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a seqtool checkpoint{reason}")
    assert "Python objects" not in message
    assert "\n" not in message


class Exploit:
    def __reduce__(self):
        return (open, ("/tmp/seqtool-pwned-marker", "w"))


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-pickle"])
def test_pickled_object_is_refused_without_running_it(tmp_path, zip_format):
    marker = "/tmp/seqtool-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({**PAYLOAD, "extra": Exploit()}, path, _use_new_zipfile_serialization=zip_format)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert str(err.value) == (
        f"{path}: refused to load: the file holds Python objects, not only weights "
        "(it names io.open)"
    )
    assert not os.path.exists(marker)


def test_newer_format_version_asks_for_an_upgrade(tmp_path):
    path = tmp_path / "best.ckpt"
    torch.save({**PAYLOAD, "format_version": checkpoint.FORMAT_VERSION + 1}, path)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert str(err.value) == (
        f"{path}: checkpoint format {checkpoint.FORMAT_VERSION + 1} is newer than this "
        f"seqtool reads ({checkpoint.FORMAT_VERSION}); upgrade seqtool"
    )
    torch.save({**PAYLOAD, "format_version": "2"}, path)
    with pytest.raises(CheckpointError, match="not a seqtool checkpoint .format_version '2'"):
        checkpoint.load(path)


def _load_as_nobody(path) -> str:
    """The message of checkpoint.load(path) in a child process without root's right to
    read every file (root reads a file of mode 000)."""
    if os.geteuid() != 0:
        try:
            checkpoint.load(path)
        except CheckpointError as err:
            return str(err)
        return "loaded"
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            os.setgid(65534)
            os.setuid(65534)
            try:
                checkpoint.load(path)
                message = "loaded"
            except CheckpointError as err:
                message = str(err)
            os.write(write_end, message.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end, "rb") as f:
        message = f.read().decode()
    os.waitpid(pid, 0)
    return message


def test_unreadable_checkpoint_says_permission_denied():
    if os.geteuid() == 0 and not hasattr(os, "fork"):
        pytest.skip("root reads any file, and no fork to drop that right")
    # tmp_path's parents are private to root, so the test files live in /tmp itself
    with tempfile.TemporaryDirectory() as base:
        os.chmod(base, 0o755)
        path = os.path.join(base, "best.ckpt")
        checkpoint.save(Path(path), PAYLOAD)
        os.chmod(path, 0)
        assert _load_as_nobody(path) == f"{path}: permission denied"
        locked = os.path.join(base, "locked")
        os.mkdir(locked)
        os.rename(path, os.path.join(locked, "best.ckpt"))
        os.chmod(locked, 0)
        assert _load_as_nobody(locked) == f"{locked}/best.ckpt: permission denied"
        os.chmod(locked, 0o700)


def test_wrong_task_names_the_task_it_holds(tmp_path):
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, {**PAYLOAD, "task": "classifier"})
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path, task="generator")
    assert str(err.value) == (
        f"{path}: this is a classifier checkpoint, not a generator checkpoint; "
        "use `seqtool classify` with it"
    )


def test_missing_run(tmp_path):
    with pytest.raises(CheckpointError, match="no such run directory or checkpoint file"):
        checkpoint.load(tmp_path / "nope")
    with pytest.raises(CheckpointError, match="no best.ckpt or last.ckpt"):
        checkpoint.load(tmp_path)


# -- checkpoints with damaged contents ------------------------------------------------


def _saved(tmp_path, **changes) -> dict:
    """A checkpoint saved and loaded back, with `changes` to the payload."""
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, {**PAYLOAD, **changes})
    return checkpoint.load(path)


def test_tokenizer_of_a_checkpoint(tmp_path):
    tokenizer, _ = Tokenizer.train(["hello world"] * 20)
    ckpt = _saved(
        tmp_path, tokenizers={"text": tokenizer.proto}, tokenizer_config={"lead_space": True}
    )
    ckpt["model_config"]["vocab_size"] = tokenizer.vocab_size  # checked against the model
    restored = checkpoint.tokenizer(ckpt)
    assert restored.lead_space and restored.decode(restored.encode("hello")) == "hello"


def test_corrupt_tokenizer_is_a_one_line_error(tmp_path):
    ckpt = _saved(tmp_path, tokenizers={"text": b"proto"})
    with pytest.raises(CheckpointError) as err:
        checkpoint.tokenizer(ckpt, "text")
    assert str(err.value) == (
        f"{ckpt['path']}: the tokenizer text in this checkpoint is corrupt "
        "(not a sentencepiece model: the bytes do not parse)"
    )
    with pytest.raises(CheckpointError) as err:
        checkpoint.tokenizer(ckpt, "src")
    assert str(err.value) == f"{ckpt['path']}: this checkpoint holds no tokenizer src"


@pytest.mark.parametrize("proto", ["text", None])
def test_a_tokenizer_that_is_not_bytes_is_refused_on_loading(tmp_path, proto):
    with pytest.raises(CheckpointError) as err:
        _saved(tmp_path, tokenizers={"text": proto})
    assert str(err.value) == (
        f"{tmp_path / 'best.ckpt'}: not a seqtool checkpoint "
        f"(tokenizers['text'] is a {type(proto).__name__})"
    )


MODELS = [
    (TINY_GENERATOR, GeneratorModel),
    (
        GeneratorConfig(vocab_size=20, embedding_size=4, hidden_size=8, tie_embeddings=True),
        GeneratorModel,
    ),
    (
        ClassifierConfig(
            vocab_size=20,
            labels=("neg", "pos"),
            embedding_size=8,
            hidden_size=8,
            pooling="attention",
            members=2,
        ),
        build_classifier,
    ),
    (
        TranslatorConfig(
            src_vocab_size=20,
            tgt_vocab_size=24,
            cell="lstm",
            embedding_size=8,
            hidden_size=8,
            tie_embeddings=True,
        ),
        TranslatorModel,
    ),
]


@pytest.mark.parametrize(
    "config, build", MODELS, ids=["generator", "tied", "classifier", "translator"]
)
def test_restore_model_round_trip(tmp_path, config, build):
    model = build(config)
    task = type(config).__name__.removesuffix("Config").lower()
    ckpt = _saved(
        tmp_path, task=task, model_config=config.to_dict(), model_state=model.state_dict()
    )
    restored = checkpoint.restore_model(ckpt, type(config), build)
    assert type(restored) is type(model) and not restored.training
    assert restored.config == config
    state = restored.state_dict()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(not p.is_meta for p in restored.parameters())
    if isinstance(config, GeneratorConfig) and config.tie_embeddings:
        assert restored.out.weight is restored.embedding.weight


def test_a_checkpoint_of_the_earlier_field_name_keeps_its_tied_weights(tmp_path):
    """Generators saved before the option became --tie-embeddings stored tie_weights."""
    config = GeneratorConfig(vocab_size=20, embedding_size=4, hidden_size=8, tie_embeddings=True)
    model = GeneratorModel(config)
    stored = {**config.to_dict(), "tie_weights": True}
    del stored["tie_embeddings"]
    ckpt = _saved(tmp_path, task="generator", model_config=stored, model_state=model.state_dict())
    restored = checkpoint.restore_model(ckpt, GeneratorConfig, GeneratorModel)
    assert restored.config.tie_embeddings and restored.out.weight is restored.embedding.weight


@pytest.mark.parametrize(
    "change, detail",
    [
        ({"vocab_size": None}, "vocab_size is missing"),
        ({"hidden_size": "8"}, "hidden_size is '8', not int"),
        ({"hidden_size": 8.0}, "hidden_size is 8.0, not int"),
        ({"tie_embeddings": "no"}, "tie_embeddings is 'no', not bool"),
        ({"dropout": None}, "dropout is None, not float"),
        ({"cell": "transformer"}, "unknown cell 'transformer'; choose one of lstm, gru, rnn"),
        ({"num_layers": -1}, "num_layers must be positive"),
    ],
)
def test_invalid_model_config_is_a_one_line_error(tmp_path, change, detail):
    model = GeneratorModel(TINY_GENERATOR)
    config = {**TINY_GENERATOR.to_dict(), **change}
    config = {k: v for k, v in config.items() if not (k == "vocab_size" and v is None)}
    with pytest.raises(CheckpointError) as err:  # refused on loading, before any use
        _saved(tmp_path, model_config=config, model_state=model.state_dict())
    assert str(err.value) == f"{tmp_path / 'best.ckpt'}: model_config is invalid ({detail})"


def test_model_config_that_is_not_a_dict(tmp_path):
    with pytest.raises(CheckpointError) as err:
        _saved(tmp_path, model_config=[1, 2])
    assert (
        str(err.value) == f"{tmp_path / 'best.ckpt'}: model_config is invalid (a list, not a dict)"
    )


def _mismatch(state, **config):
    return checkpoint.restore_model(
        {
            "path": "run/best.ckpt",
            "model_config": {**TINY_GENERATOR.to_dict(), **config},
            "model_state": state,
        },
        GeneratorConfig,
        GeneratorModel,
    )


@pytest.mark.parametrize(
    "edit, difference",
    [
        (
            lambda s: s,
            "rnn.weight_ih_l0 shape [32, 8] in the file vs [64, 8] in the config",
        ),
        (lambda s: {k: v for k, v in s.items() if k != "out.bias"}, "out.bias is missing"),
        (lambda s: {**s, "extra.weight": torch.ones(1)}, "extra.weight is not in the model"),
        (lambda s: {**s, "out.bias": 1.5}, "out.bias is not a tensor (float)"),
        (lambda s: [1, 2], "model_state is a list, not a dict"),
    ],
    ids=["shape", "missing", "unexpected", "not-a-tensor", "not-a-dict"],
)
def test_weights_that_do_not_match_the_config(edit, difference):
    state = edit(GeneratorModel(TINY_GENERATOR).state_dict())
    hidden = {"hidden_size": 16} if difference.startswith("rnn.") else {}
    with pytest.raises(CheckpointError) as err:
        _mismatch(state, **hidden)
    message = str(err.value)
    assert message.startswith(
        "run/best.ckpt: the weights do not match the model config (first difference: " + difference
    )
    assert "\n" not in message


def test_huge_model_config_is_refused_before_any_allocation(tmp_path):
    """A crafted config with hidden_size 10**9 would need terabytes: under an address
    space limit of 3 GB, building it for real fails, and restore_model refuses it from
    the shapes alone."""
    model = GeneratorModel(dataclasses.replace(TINY_GENERATOR, cell="rnn"))
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, {**PAYLOAD, "model_state": model.state_dict()})
    script = textwrap.dedent(
        f"""
        import resource, torch
        from seqtool import checkpoint
        from seqtool.config import GeneratorConfig
        from seqtool.errors import CheckpointError
        from seqtool.models.generator import GeneratorModel

        ckpt = checkpoint.load({str(path)!r})
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))
        for cell in ("rnn", "lstm"):
            config = {{**{TINY_GENERATOR.to_dict()!r}, "cell": cell, "hidden_size": 10**9}}
            try:
                checkpoint.restore_model(
                    {{**ckpt, "model_config": config}}, GeneratorConfig, GeneratorModel
                )
                print("restored")
            except CheckpointError as err:
                print(err)
        try:
            GeneratorModel(GeneratorConfig(**{{**config, "cell": "rnn"}}))
            print("allocated")
        except (MemoryError, RuntimeError):
            print("a real build fails")
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == (
        f"{path}: the weights do not match the model config (first difference: "
        "rnn.weight_ih_l0 shape [8, 8] in the file vs [1000000000, 8] in the config)"
    )
    # an LSTM that size overflows torch's size arithmetic even on the meta device
    assert lines[1].startswith(f"{path}: model_config is invalid (Storage size calculation")
    assert lines[2] == "a real build fails"


def test_checkpoints_are_refused_under_a_torch_older_than_the_floor(tmp_path, monkeypatch):
    checkpoint.save(tmp_path / "best.ckpt", PAYLOAD)
    monkeypatch.setattr(torch, "__version__", "2.9.1+cpu")
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(tmp_path)
    assert str(err.value) == (
        f"{tmp_path / 'best.ckpt'}: refused to load under torch 2.9.1+cpu: seqtool needs "
        "torch 2.10 or newer, whose weights_only loading cannot be made to run code; "
        "upgrade torch"
    )
    monkeypatch.setattr(torch, "__version__", "2.10.0a0")
    checkpoint.load(tmp_path)


def test_the_torch_floor_is_the_one_pyproject_requires():
    import re

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    floor = re.search(r'"torch>=([\d.]+)"', pyproject.read_text()).group(1)
    assert tuple(int(n) for n in floor.split(".")) == checkpoint.TORCH_FLOOR
