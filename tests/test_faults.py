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
def test_a_file_size_limit_hits_each_writer_and_keeps_what_was_there(tmp_path, corpus):
    """RLIMIT_FSIZE makes writes past the limit fail with EFBIG, as a full disk would: the
    token cache of a new run, then metrics.jsonl and the checkpoints of a resumed one."""
    out = tmp_path / "run"
    first = subprocess.run(
        _command(corpus, out, "--max-steps", "2"), capture_output=True, text=True, timeout=120
    )
    assert first.returncode == 0, first.stderr
    before = {name: (out / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}

    def resume(limit: int) -> str:
        result = subprocess.run(
            _command(corpus, out, "--resume", "--max-steps", "4"),
            capture_output=True,
            text=True,
            timeout=120,
            preexec_fn=_limit_file_size(limit),
        )
        return _error(result)

    # files may grow to 1 MB: no checkpoint of this model fits
    limit = 1 << 20
    assert min(len(data) for data in before.values()) > limit
    assert re.fullmatch(
        rf"Error: {re.escape(str(out))}/(best|last)\.ckpt: could not write the checkpoint "
        r"\(File too large\); the previous checkpoint is kept",
        resume(limit),
    )
    # metrics.jsonl at the limit: the resumed run's first log line cannot be added
    log = out / "metrics.jsonl"
    full = log.read_bytes().ljust(limit, b"\n")  # blank lines are skipped by readers
    log.write_bytes(full)
    assert resume(limit) == (f"Error: {log}: could not write the training log (File too large)")
    assert log.read_bytes() == full
    for name, data in before.items():
        assert (out / name).read_bytes() == data
        checkpoint.load(out / name)
    assert _temporary(out) == []

    # a new run's token cache (8 KB here) past a limit of 6 KB
    fresh = tmp_path / "fresh"
    result = subprocess.run(
        _tiny(corpus, fresh, "--max-steps", "2"),
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limit_file_size(6000),
    )
    assert _error(result) == (
        f"Error: {fresh}/data/train.ids: could not write the token cache (File too large)"
    )
    assert sorted(p.name for p in (fresh / "data").iterdir()) == [
        "tokenizer.json",
        "tokenizer.model",
    ]


# -- the run directory, the data and the weights, with tiny models ------------------------

# --device cpu: the fp16 refusal below is for a machine without CUDA, and one with a GPU
# must refuse it too
TINY_RUN = [
    *MODEL[4:],
    "--hidden-size",
    "8",
    "--layers",
    "1",
    "--precision",
    "fp32",
    "--device",
    "cpu",
]


def _tiny(corpus: Path, out: Path, *extra: str) -> list[str]:
    return [*_command(corpus, out)[: -len(MODEL)], *TINY_RUN, *extra]


def _train(corpus: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(_tiny(corpus, out, *extra), capture_output=True, text=True, timeout=300)


def _error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_second_train_in_the_same_run_directory_is_refused(tmp_path, corpus):
    out = tmp_path / "run"
    log = tmp_path / "first.txt"
    # trains for 15 s, long enough for a second process to start beside it
    budget = ("--max-time", "15s", "--eval-every", "50")
    with log.open("wb") as stderr:
        first = subprocess.Popen(
            _tiny(corpus, out, *budget), stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists():  # the first one trains
            assert first.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.01)
        second = _train(corpus, out, *budget, "--force")
        assert first.poll() is None, "the first run ended before the second one started"
    finally:
        first.wait(timeout=300)
    assert _error(second) == (
        f"Error: {out} is in use by process {first.pid}; wait for it to end or give another --out"
    )
    assert first.returncode == 0, log.read_text()
    step = _step(out / "last.ckpt")
    assert checkpoint.load(out / "best.ckpt")["progress"]["step"] <= step
    # the lock went with the process: the run can be continued
    resumed = _train(corpus, out, "--max-steps", str(step + 2), "--max-time", "1h", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert _step(out / "last.ckpt") == step + 2


def test_force_checks_everything_before_it_replaces_the_old_run(tmp_path, corpus):
    out = tmp_path / "run"
    assert _train(corpus, out, "--max-steps", "5").returncode == 0
    before = {name: (out / name).read_bytes() for name in ("best.ckpt", "last.ckpt")}
    refused = _train(corpus, out, "--max-steps", "5", "--force", "--precision", "fp16")
    assert _error(refused) == ("Error: --precision fp16 needs a CUDA device; use bf16 or fp32")
    # a new run that fails before its first checkpoint gives the old files back
    diverged = _train(
        corpus, out, "--max-steps", "9", "--eval-every", "9", "--force", "--lr", "1e30"
    )
    assert re.fullmatch(
        r"Error: the loss became nan at step \d; no checkpoint was saved yet; lower --lr or --clip",
        _error(diverged),
    )
    for name, data in before.items():
        assert (out / name).read_bytes() == data
    assert not (out / ".replaced").exists()
    # one that saves replaces them
    assert _train(corpus, out, "--max-steps", "2", "--eval-every", "1", "--force").returncode == 0
    assert _step(out / "last.ckpt") == 2 and not (out / ".replaced").exists()


def test_weights_that_overflow_are_never_saved(tmp_path, corpus):
    out = tmp_path / "run"
    # at lr 1e30 the weights overflow within a few steps; evaluation after every step
    result = _train(corpus, out, "--max-steps", "20", "--eval-every", "1", "--lr", "1e30")
    assert re.fullmatch(
        r"Error: the (validation loss became nan|weights became inf or nan) at step \d+; "
        rf"the last good checkpoint is kept in {re.escape(str(out))}; lower --lr or --clip",
        _error(result),
    ), result.stderr
    for name in ("best.ckpt", "last.ckpt"):
        saved = checkpoint.load(out / name)
        assert all(w.isfinite().all() for w in saved["model_state"].values()), name
        assert all(v == v for v in saved["metrics"].values()), name  # no nan


def test_the_token_cache_follows_the_contents_not_the_file_times(tmp_path, corpus):
    import os

    out = tmp_path / "run"
    args = ("--max-steps", "1", "--force")
    assert _train(corpus, out, *args).returncode == 0
    cache = out / "data" / "train.ids"
    ids, model = cache.read_bytes(), (out / "data" / "tokenizer.model").read_bytes()
    # same length, same modification time: what `cp -p` or `rsync -t` can leave behind
    info = corpus.stat()
    corpus.write_text(corpus.read_text().replace("quick", "QUICK"))
    os.utime(corpus, ns=(info.st_atime_ns, info.st_mtime_ns))
    assert corpus.stat().st_size == info.st_size
    assert _train(corpus, out, *args).returncode == 0
    assert (out / "data" / "tokenizer.model").read_bytes() != model  # Q U I C K are new
    assert cache.read_bytes() != ids
    # a cache cut short is rebuilt, not trusted
    rebuilt = cache.read_bytes()
    with cache.open("r+b") as f:
        f.truncate(len(rebuilt) - 1)
    assert _train(corpus, out, *args).returncode == 0
    assert cache.read_bytes() == rebuilt


def test_resume_refuses_other_training_data(tmp_path, corpus):
    out = tmp_path / "run"
    assert _train(corpus, out, "--max-steps", "2").returncode == 0
    other = tmp_path / "other.txt"
    other.write_text(corpus.read_text().upper())
    refused = _train(other, out, "--max-steps", "4", "--resume")
    assert _error(refused) == (
        f"Error: --train {other} is not the data the run in {out} started with ({corpus}); "
        "resume with the same data, or start over with --force"
    )
    corpus.write_text(corpus.read_text() + "one more line\n")
    changed = _train(corpus, out, "--max-steps", "4", "--resume")
    assert _error(changed) == (
        f"Error: {corpus} has changed since the run in {out} started; "
        "resume with the same data, or start over with --force"
    )
    assert _step(out / "last.ckpt") == 2
    # a checkpoint from before the data was stored resumes as before
    ckpt = checkpoint.load(out / "last.ckpt")
    del ckpt["data"], ckpt["path"]
    checkpoint.save(out / "last.ckpt", ckpt)
    assert _train(corpus, out, "--max-steps", "4", "--resume").returncode == 0
    assert _step(out / "last.ckpt") == 4


def test_sighup_saves_last_ckpt_and_exits_130(tmp_path, corpus):
    """A closed terminal or ssh session: the run stops as after Ctrl-C."""
    out = tmp_path / "run"
    log = tmp_path / "stderr.txt"
    with log.open("wb") as stderr:
        proc = subprocess.Popen(
            _tiny(corpus, out, "--max-steps", "100000", "--eval-every", "1000"),
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists():  # it trains
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "training did not start within 60 s"
            time.sleep(0.01)
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=120) == 130, log.read_text()
    finally:
        proc.kill()
        proc.wait()
    assert "Interrupted: stopped by signal 1 at step" in log.read_text()
    assert "Traceback" not in log.read_text()
    assert _step(out / "last.ckpt") >= 1


# kill -9 at the n-th os.replace of `stage` (moving the old run aside, or putting it back)
_KILL_AT = """
import os, signal, sys
from pathlib import Path
from seqtool import training

run_dir, stage, at = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
calls, replace = [0], os.replace

def replace_or_die(src, dst):
    calls[0] += 1
    if calls[0] == at:
        os.kill(os.getpid(), signal.SIGKILL)
    replace(src, dst)

os.replace = replace_or_die
if stage == "aside":
    names = ("best.ckpt", "last.ckpt", "metrics.jsonl", "recent", "averaged.ckpt")
    training._move_aside(run_dir, [run_dir / n for n in names])
else:
    training._settle_replaced(run_dir)
"""


def _old_run(run_dir: Path) -> dict[str, bytes]:
    run_dir.mkdir()
    files = {
        "best.ckpt": b"old best",
        "last.ckpt": b"old last",
        "metrics.jsonl": b"old log\n",
        "averaged.ckpt": b"old mean",
        "recent/step-000000001.ckpt": b"old recent",
    }
    (run_dir / "recent").mkdir()
    for name, data in files.items():
        (run_dir / name).write_bytes(data)
    return files


def _contents(run_dir: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run_dir)): p.read_bytes() for p in run_dir.rglob("*") if p.is_file()}


def _kill_at(run_dir: Path, stage: str, at: int) -> int:
    return subprocess.run(
        [sys.executable, "-c", _KILL_AT, str(run_dir), stage, str(at)], timeout=60
    ).returncode


@pytest.mark.parametrize("at", range(1, 8))
def test_force_killed_at_each_point_never_mixes_two_runs(tmp_path, at):
    """--force moves five entries aside (five renames and the one that commits); the next
    start finds either the old run whole, or the old run set aside whole."""
    from seqtool import training

    run_dir = tmp_path / "run"
    old = _old_run(run_dir)
    code = _kill_at(run_dir, "aside", at)
    assert code == (-signal.SIGKILL if at <= 6 else 0)
    training._settle_replaced(run_dir)  # the next start, before it looks at the directory
    assert _contents(run_dir) == old

    # moved aside whole; the new run logged a line, then was killed before a checkpoint,
    # and the start after it was killed while putting the old run back
    assert _kill_at(run_dir, "aside", 0) == 0
    (run_dir / "metrics.jsonl").write_bytes(b"new log\n")
    assert _kill_at(run_dir, "settle", at) == (-signal.SIGKILL if at <= 6 else 0)
    training._settle_replaced(run_dir)
    assert _contents(run_dir) == old

    # a new run that saved a checkpoint has replaced the old one
    assert _kill_at(run_dir, "aside", 0) == 0
    (run_dir / "best.ckpt").write_bytes(b"new best")
    training._settle_replaced(run_dir)
    assert _contents(run_dir) == {"best.ckpt": b"new best"}
