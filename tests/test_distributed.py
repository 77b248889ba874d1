"""Data-parallel training under torchrun: 2 CPU processes (gloo) on tiny corpora."""

import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.test_translator import date_lines

pytestmark = pytest.mark.slow

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# a constant learning rate: the schedule then does not depend on the budget, so a run
# stopped and resumed can be compared with one that ran straight through
COMMON = [
    "--hidden-size", "16", "--embedding-size", "8", "--layers", "1", "--eval-every", "10",
    "--log-every", "5", "--precision", "fp32", "--schedule", "constant", "--warmup-steps", "0",
    "--dropout", "0", "--device", "cpu",
]  # fmt: skip


def env():
    # one thread per process: two processes share the two cores
    return {**os.environ, "OMP_NUM_THREADS": "1", "SEQTOOL_DIST_TIMEOUT": "30"}


def seqtool(*args, processes=1, check=True):
    launcher = [*TORCHRUN, "--standalone", "--nproc_per_node", str(processes), "-m", "seqtool"]
    command = launcher if processes > 1 else [sys.executable, "-m", "seqtool"]
    result = subprocess.run(
        [*command, *map(str, args)], env=env(), capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def weights(run_dir):
    return torch.load(run_dir / "last.ckpt", weights_only=True)["model_state"]


def assert_close(a, b, atol):
    worst = max((a[k] - b[k]).abs().max().item() for k in a)
    assert worst <= atol, f"largest difference {worst}"


@pytest.fixture
def data(tmp_path):
    text = tmp_path / "text.txt"
    text.write_text("the quick brown fox jumps over the lazy dog.\na stitch in time.\n" * 200)
    labeled = tmp_path / "labeled.tsv"
    labeled.write_text(
        "".join(
            f"{'pos' if i % 3 else 'neg'}\tline {i} is {'good' if i % 3 else 'bad'}\n"
            for i in range(300)
        )
    )  # noqa: E501
    dates = tmp_path / "dates.tsv"
    dates.write_text("".join(date_lines(300, 0)))
    return {"generator": text, "classifier": labeled, "translator": dates}


TASK_OPTIONS = {
    "generator": ["--batch-size", "8", "--seq-len", "16"],
    "classifier": ["--batch-size", "16", "--vocab-size", "60", "--word-dropout", "0"],
    "translator": ["--batch-size", "16", "--tokenizer", "char", "--label-smoothing", "0.1"],
}


@pytest.mark.parametrize("task", ["generator", "classifier", "translator"])
def test_two_processes_train_as_one_with_the_same_global_batch(task, data, tmp_path):
    """--batch-size is global: 2 processes x half the batch = 1 process x the batch,
    to float rounding (gradients are summed in another order)."""
    args = ["train", task, "--train", data[task], "--max-steps", 12, *COMMON, *TASK_OPTIONS[task]]
    seqtool(*args, "--out", tmp_path / "one")
    two = seqtool(*args, "--out", tmp_path / "two", processes=2)
    assert two.stderr.count("done: 12 steps") == 1  # one process speaks for all
    assert_close(weights(tmp_path / "one"), weights(tmp_path / "two"), atol=1e-5)


def test_resume_under_torchrun_and_generate(data, tmp_path):
    args = ["train", "generator", "--train", data["generator"], *COMMON, "--batch-size", "8"]
    seqtool(*args, "--out", tmp_path / "whole", "--max-steps", 20, processes=2)
    seqtool(*args, "--out", tmp_path / "split", "--max-steps", 10, processes=2)
    ckpt = torch.load(tmp_path / "split" / "last.ckpt", weights_only=True)
    assert len(ckpt["rng"]) == 2  # each process's random state, to resume it exactly
    seqtool(*args, "--out", tmp_path / "split", "--max-steps", 20, "--resume", processes=2)
    assert_close(weights(tmp_path / "whole"), weights(tmp_path / "split"), atol=0)
    sample = seqtool("generate", tmp_path / "split", "--length", 20, "--seed", 1)
    assert len(sample.stdout) > 0

    alone = seqtool(*args, "--out", tmp_path / "split", "--max-steps", 30, "--resume", check=False)
    assert alone.returncode == 1
    assert alone.stderr.endswith(
        "this run trained in 2 processes; resume it in 2 (torchrun --nproc_per_node 2 ...)\n"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_nodes(args, port):
    """Two torchrun 'nodes' on this machine, one process each, meeting at 127.0.0.1."""
    nodes = []
    for node in (0, 1):
        command = [
            *TORCHRUN, "--nnodes", "2", "--node_rank", str(node), "--nproc_per_node", "1",
            "--master_addr", "127.0.0.1", "--master_port", str(port),
            "-m", "seqtool", *map(str, args),
        ]  # fmt: skip
        nodes.append(
            subprocess.Popen(
                command,
                env=env(),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    return nodes


def test_two_nodes_train_together(data, tmp_path):
    out = tmp_path / "nodes"
    args = ["train", "generator", "--train", data["generator"], "--out", out, *COMMON]
    nodes = start_nodes([*args, "--batch-size", "8", "--max-steps", 12], free_port())
    results = [node.communicate(timeout=300) for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], results[0][1][-2000:]
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    assert ckpt["progress"]["step"] == 12 and len(ckpt["rng"]) == 2


def test_a_process_that_dies_stops_the_others_with_a_message(data, tmp_path):
    out = tmp_path / "dies"
    args = ["train", "generator", "--train", data["generator"], "--out", out, *COMMON]
    nodes = start_nodes([*args, "--batch-size", "8", "--max-time", "5m"], free_port())
    deadline = time.time() + 120
    while not (out / "metrics.jsonl").exists() and time.time() < deadline:
        time.sleep(0.2)
    # the training process of node 1 dies (its torchrun agent then gives up too)
    workers = subprocess.run(["pgrep", "-P", str(nodes[1].pid)], capture_output=True, text=True)
    for pid in workers.stdout.split():
        os.kill(int(pid), signal.SIGKILL)
    _, stderr = nodes[0].communicate(timeout=120)  # no hang: an error, at once
    nodes[1].communicate(timeout=120)
    assert nodes[0].returncode != 0
    error = next(line for line in stderr.splitlines() if line.startswith("Error: "))
    assert error.startswith("Error: process 0 of 2 lost the others at step ")
    assert error.endswith("every process must run, restart with --resume")
