"""Device choice (seqtool.device.pick_device) and batch workers (map_batches)."""

import threading
import time

import pytest
import torch

from seqtool import device


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def calling_threads(monkeypatch, owner, name: str) -> set[int]:
    """From now on, the threads that call owner.name (filled in as they call)."""
    threads: set[int] = set()
    real = getattr(owner, name)

    def recorded(*args, **kwargs):
        threads.add(threading.get_ident())
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, recorded)
    return threads


def with_threads(count: int, call):
    """call() with torch set to `count` threads, which are then set back."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        return call()
    finally:
        torch.set_num_threads(before)


def squares(batches, together=False):
    """map_batches of b -> b * b on the CPU -> (results, the threads that ran them, as
    thread objects: an ident can pass to a thread started later).
    together: each call waits for a second one to run at the same time."""
    seen = set()
    gate = threading.Barrier(2, timeout=10)

    def work(b: int) -> int:
        seen.add(threading.current_thread())
        if together:
            gate.wait()
        return b * b

    return device.map_batches(work, batches, torch.device("cpu")), seen


def test_batches_run_side_by_side_on_workers_in_order(two_threads):
    found, seen = squares([3, 4], together=True)
    assert found == [9, 16]
    assert len(seen) == 2 and threading.current_thread() not in seen


def test_later_calls_run_on_the_same_workers(two_threads):
    _, first = squares([3, 4], together=True)
    _, second = squares([5, 6], together=True)
    assert len(first) == 2 and first == second


def test_workers_leave_the_thread_counts_as_they_were(two_threads):
    squares([3, 4, 5])
    assert torch.get_num_threads() == 2
    counts = []  # what a thread started afterwards begins with
    later = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert counts == [2]


@pytest.mark.parametrize("threads, batches", [(2, [5]), (1, [1, 2, 3])])
def test_one_batch_or_one_thread_stays_in_this_thread(two_threads, threads, batches):
    torch.set_num_threads(threads)
    found, seen = squares(batches)
    assert found == [b * b for b in batches] and seen == {threading.current_thread()}


def test_a_call_during_another_calls_pool_runs_in_its_own_thread(two_threads):
    with device._POOL:  # as while another call's workers run
        found, seen = squares([1, 2, 3])
    assert found == [1, 4, 9] and seen == {threading.current_thread()}


def test_an_error_drops_the_batches_not_yet_started_and_waits_for_the_running(two_threads):
    ran, finished = [], []

    def work(b: int) -> int:
        ran.append(b)
        if b == 0:
            raise ValueError("batch 0")
        time.sleep(0.05)
        finished.append(b)
        return b

    with pytest.raises(ValueError, match="batch 0"):
        device.map_batches(work, list(range(20)), torch.device("cpu"))
    assert len(ran) < 10
    assert len(finished) == len(ran) - 1  # none still running
    assert torch.get_num_threads() == 2 and not device._POOL.locked()


def test_workers_run_in_the_callers_inference_mode_and_autocast(two_threads):
    def modes(_):
        return torch.is_inference_mode_enabled(), torch.is_autocast_enabled("cpu")

    cpu = torch.device("cpu")
    assert device.map_batches(modes, [0, 1], cpu) == [(False, False)] * 2
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        found = device.map_batches(modes, [0, 1], cpu)
        product = device.map_batches(
            lambda _: (torch.ones(2, 2) @ torch.ones(2, 2)).dtype, [0, 1], cpu
        )
    assert found == [(True, True)] * 2 and product == [torch.bfloat16] * 2


def test_map_by_length_batches_similar_lengths_and_answers_in_input_order(two_threads):
    sequences = [[1] * n for n in (5, 1, 4, 2, 3)]
    seen = []

    def lengths(chunk: list[int]) -> list[int]:
        seen.append([len(sequences[i]) for i in chunk])
        return [len(sequences[i]) for i in chunk]

    found = device.map_by_length(lengths, sequences, 2, torch.device("cpu"))
    assert found == [5, 1, 4, 2, 3]
    assert sorted(seen) == [[1, 2], [3, 4], [5]]


def test_one_gpu_of_several_is_named_cuda_n(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert device.pick_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(device.ConfigError, match=r"^--device cuda:2: this machine has cuda:0 to "
                       r"cuda:1$"):  # fmt: skip
        device.pick_device("cuda:2")


def test_device_option_takes_cuda_n_and_refuses_other_names(run_cli, tmp_path):
    missing = tmp_path / "none"
    wrong = run_cli("generate", missing, "--device", "gpu")
    assert wrong.exit_code == 2 and "'gpu' is not one of auto, cpu, cuda, cuda:N, mps" in (
        wrong.stderr
    )
    assert run_cli("generate", missing, "--device", "cuda:x").exit_code == 2
    if not torch.cuda.is_available():
        corpus = tmp_path / "c.txt"
        corpus.write_text("hello world\n" * 50)
        given = run_cli("train", "generator", "--train", corpus, "--out", tmp_path / "r",
                        "--device", "cuda:1", "--max-steps", 1)  # fmt: skip
        assert given.exit_code == 1
        assert given.stderr.strip().splitlines()[-1] == (
            "Error: --device cuda:1: no CUDA device is available"
        )
