"""Faults of real processes: `seqtool train` killed with SIGKILL at random moments, and
a disk that fills up while a checkpoint is written. No mocks: the checkpoints are
written by torch.save in a separate process, and the faults are the kernel's."""

from __future__ import annotations

import random
import re
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from seqtool import checkpoint
from seqtool.errors import CheckpointError

# hidden 256 in two layers: last.ckpt is about 10 MB, so that writing it takes long
# enough (some 10 ms) for a kill to land inside a save; evaluation and both
# checkpoints at every step, so that saves make up much of the run
MODEL = [
    "--hidden-size",
    "256",
    "--layers",
    "2",
    "--embedding-size",
    "16",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--eval-every",
    "1",
    "--log-every",
    "1",
    "--warmup-steps",
    "0",
    "--threads",
    "1",
]
KILLS = 10
KILL_TIME = 35.0  # seconds for all the kills, at most; each costs a process start


def _command(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "seqtool",
        "train",
        "generator",
        "--train",
        str(corpus),
        "--out",
        str(out),
        *MODEL,
        *extra,
    ]


def _lines(path: Path) -> int:
    return len(path.read_bytes().splitlines()) if path.exists() else 0


def _step(path: Path) -> int:
    return checkpoint.load(path)["progress"]["step"]


def _files(run_dir: Path) -> list[tuple]:
    """The checkpoint files and their inode, size and time: a save changes them."""
    found = []
    for path in run_dir.glob("*ckpt*"):
        try:
            info = path.stat()
        except FileNotFoundError:  # renamed meanwhile
            continue
        found.append((path.name, info.st_ino, info.st_size, info.st_mtime_ns))
    return sorted(found)


def _temporary(run_dir: Path) -> list[Path]:
    return sorted(run_dir.glob(".*.ckpt.tmp"))


@pytest.mark.slow
def test_kill_at_random_moments_leaves_loadable_checkpoints(tmp_path, corpus):
    out = tmp_path / "run"
    rng = random.Random(1234)
    started = time.monotonic()
    kills, torn, steps = 0, 0, []
    for i in range(KILLS):
        if kills >= 3 and time.monotonic() - started > KILL_TIME:
            break
        # remove the last kill's leftovers, as a run starting in this directory should
        checkpoint.clean_temporary(out)
        flag = "--resume" if (out / "last.ckpt").exists() else "--force"
        logged = _lines(out / "metrics.jsonl")
        log = tmp_path / "stderr.txt"  # a file: a pipe nobody reads could stall the run
        with log.open("wb") as stderr:
            proc = subprocess.Popen(
                _command(corpus, out, flag, "--max-steps", "100000"),
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            # wait until it trains (a new line in metrics.jsonl), then a random moment
            deadline = time.monotonic() + 60
            while _lines(out / "metrics.jsonl") <= logged:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "training did not start within 60 s"
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.3))
            if i % 2:  # every other kill waits for a save to begin: kill it mid-write
                files, until = _files(out), time.monotonic() + 5
                while _files(out) == files and time.monotonic() < until:
                    time.sleep(0.001)
        finally:
            proc.kill()
            proc.wait()
        kills += 1

        for name in ("best.ckpt", "last.ckpt"):
            if (out / name).exists():
                checkpoint.load(out / name)  # raises if the kill broke it
        if (out / "last.ckpt").exists():
            steps.append(_step(out / "last.ckpt"))
            assert steps == sorted(steps), f"a resumed run went back: steps {steps}"
        leftovers = _temporary(out)
        if leftovers:
            torn += 1
            if (out / "best.ckpt").exists():
                assert checkpoint.load(out)["path"] == str(out / "best.ckpt")
            for tmp in leftovers:
                with pytest.raises(CheckpointError, match="temporary file of a save"):
                    checkpoint.load(tmp)
    assert torn >= 1, "no kill landed inside a save"

    # the last of them resumes to the end of a small extra budget
    checkpoint.clean_temporary(out)
    step = _step(out / "last.ckpt")
    result = subprocess.run(
        _command(corpus, out, "--resume", "--max-steps", str(step + 3)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _step(out / "last.ckpt") == step + 3
    checkpoint.load(out)
    print(
        f"{kills} kills ({torn} inside a save) at steps {steps} in "
        f"{time.monotonic() - started:.1f}s"
    )


def _limit_file_size(limit: int):
    def apply() -> None:
        # a write past the limit fails with EFBIG instead of killing the process
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.slow
def test_full_disk_while_saving_keeps_the_previous_checkpoints(tmp_path, corpus):
    out = tmp_path / "run"
    first = subprocess.run(
        _command(corpus, out, "--max-steps", "2"), capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}
    # files may grow to 1 MB: metrics.jsonl can, no checkpoint of this model fits
    limit = 1 << 20
    assert min(len(data) for data in before.values()) > limit

    result = subprocess.run(
        _command(corpus, out, "--resume", "--max-steps", "4"),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(limit),
    )
    assert result.returncode == 1, result.stderr
    last_line = result.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        rf"Error: {re.escape(str(out))}/(best|last)\.ckpt: could not write the checkpoint "
        r"\(File too large\); the previous checkpoint is kept",
        last_line,
    ), result.stderr
    assert "Traceback" not in result.stderr
    for name, data in before.items():
        assert (out / name).read_bytes() == data
        checkpoint.load(out / name)
    assert _temporary(out) == []
