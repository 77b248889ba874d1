import pickle

import pytest
import torch

from seqtool import checkpoint
from seqtool.errors import CheckpointError

PAYLOAD = {
    "task": "generator",
    "model_config": {"vocab_size": 3},
    "tokenizers": {"text": b"proto"},
    "model_state": {"w": torch.ones(2)},
}


def test_save_and_load_round_trip(tmp_path):
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, PAYLOAD)
    ckpt = checkpoint.load(tmp_path)  # a run directory means its best.ckpt
    assert ckpt["task"] == "generator" and ckpt["tokenizers"]["text"] == b"proto"
    assert ckpt["format_version"] == checkpoint.FORMAT_VERSION
    assert not list(tmp_path.glob(".*tmp"))  # no temporary file left behind


def test_failed_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    checkpoint.save(path, PAYLOAD)
    before = path.read_bytes()

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    with pytest.raises(OSError):
        checkpoint.save(path, {**PAYLOAD, "model_state": {"w": torch.zeros(2)}})
    assert path.read_bytes() == before


def test_truncated_checkpoint_is_a_one_line_error(tmp_path):
    path = tmp_path / "best.ckpt"
    checkpoint.save(path, PAYLOAD)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a seqtool checkpoint, or truncated or corrupt")
    assert "\n" not in message


def test_text_file_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.ckpt"
    path.write_text("hello\n")
    with pytest.raises(CheckpointError, match="not a seqtool checkpoint"):
        checkpoint.load(path)


class Exploit:
    def __reduce__(self):
        return (open, ("/tmp/seqtool-pwned-marker", "w"))


def test_pickled_object_is_refused_without_running_it(tmp_path):
    import os

    marker = "/tmp/seqtool-pwned-marker"
    if os.path.exists(marker):
        os.remove(marker)
    path = tmp_path / "evil.ckpt"
    torch.save({**PAYLOAD, "extra": Exploit()}, path)
    with pytest.raises(CheckpointError) as err:
        checkpoint.load(path)
    assert "refused to load: the file holds Python objects" in str(err.value)
    assert "\n" not in str(err.value)
    assert not os.path.exists(marker)


def test_plain_pickle_file_is_refused(tmp_path):
    path = tmp_path / "model.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(CheckpointError):
        checkpoint.load(path)


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
