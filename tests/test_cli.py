import gc
import json
import os
import pty
import select
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from seqtool import checkpoint
from tests.conftest import TINY


def train(run_cli, corpus, out, *extra):
    return run_cli("train", "generator", "--train", corpus, "--out", out, *TINY, *extra)


# -- end to end -------------------------------------------------------------------------


def test_train_writes_run_and_reports_holdout(run_cli, corpus, tmp_path):
    out = tmp_path / "run"
    result = train(run_cli, corpus, out, "--max-steps", 10)
    assert result.exit_code == 0, result.output
    assert f"no --valid given: holding out the last 10% of {corpus}" in result.stderr
    assert "step 10 valid: loss" in result.stderr
    assert result.stdout == ""
    assert {"best.ckpt", "last.ckpt", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if r.get("split") == "valid"] == [5, 10]


def test_progress_is_plain_lines_when_stderr_is_not_a_terminal(run_cli, corpus, tmp_path):
    """Under nohup or a job scheduler no bar can redraw: a line every --log-every steps."""
    result = train(run_cli, corpus, tmp_path / "run", "--max-steps", 10, "--log-every", 2)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "  ETA " in line]
    assert [line.split()[1] for line in lines] == ["2", "4", "6", "8", "10"]
    fields = lines[-1].split("  ")
    assert [f.split()[0] for f in fields] == ["step", "epoch", "loss", "lr", fields[4].split()[0],
                                              "elapsed", "ETA"]  # fmt: skip
    assert fields[4].endswith(" chars/s") and fields[-1] == "ETA 0:00:00"


def test_quiet_training_prints_nothing_but_keeps_its_log(run_cli, corpus, tmp_path):
    out = tmp_path / "run"
    result = train(run_cli, corpus, out, "--max-steps", 10, "--valid", corpus, "-q")
    assert result.exit_code == 0, result.output
    assert result.stderr == "" and result.stdout == ""
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 4  # 2 logs, 2 evaluations
    again = train(run_cli, corpus, out, "--max-steps", 12, "--valid", corpus, "--resume", "-q")
    assert again.exit_code == 0 and again.stderr == ""  # --quiet is no setting a run keeps


def test_result_tables_go_to_stdout(run_cli, trained, corpus):
    scores = run_cli("evaluate", trained, "--data", corpus)
    assert scores.exit_code == 0, scores.output
    assert "bits_per_char" in scores.stdout and "bits_per_char" not in scores.stderr


def test_generate_is_repeatable_with_a_seed(run_cli, trained):
    args = ("generate", trained, "--prompt", "the ", "--length", 40, "--seed", 3)
    first, second = run_cli(*args), run_cli(*args)
    assert first.exit_code == 0, first.output
    assert first.stdout == second.stdout
    assert first.stdout.startswith("the ") and first.stdout.endswith("\n")
    other = run_cli("generate", trained, "--prompt", "the ", "--length", 40, "--seed", 4)
    assert other.stdout != first.stdout


def test_generate_length_counts_characters(run_cli, trained):
    result = run_cli("generate", trained, "--length", 30, "--seed", 0, "--top-k", 5)
    assert result.exit_code == 0, result.output
    assert len(result.stdout) == 31  # 30 characters and the final newline


def test_greedy_and_top_p(run_cli, trained):
    greedy = [
        run_cli(
            "generate", trained, "--prompt", "to", "--length", 20, "--temperature", 0, "--seed", s
        ).stdout
        for s in (1, 2)
    ]
    assert greedy[0] == greedy[1]  # temperature 0 ignores the seed
    tiny_p = [
        run_cli(
            "generate",
            trained,
            "--prompt",
            "to",
            "--length",
            20,
            "--top-p",
            "0.000001",
            "--seed",
            s,
        ).stdout
        for s in (1, 2)
    ]
    assert tiny_p[0] == tiny_p[1] == greedy[0]  # top-p that small keeps only the best token


def test_num_samples_prints_each_sample(run_cli, trained):
    result = run_cli(
        "generate", trained, "--prompt", "a", "--length", 15, "--num-samples", 4, "--seed", 0
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.split("\n")
    assert len([line for line in lines if line.startswith("a")]) >= 4
    assert result.stderr.count("sample ") == 4


def test_streamed_samples_equal_the_batched_ones(run_cli, trained, monkeypatch):
    args = ("generate", trained, "--prompt", "a", "--length", 25, "--num-samples", 3)
    batched = run_cli(*args, "--seed", 7)
    monkeypatch.setattr("seqtool.cli.BATCH_TOKENS", 0)  # each sample sampled alone
    streamed = run_cli(*args, "--seed", 7)
    assert streamed.exit_code == 0, streamed.output
    assert streamed.stdout == batched.stdout and streamed.stderr == batched.stderr
    assert streamed.stderr.count("sample ") == 3


def test_evaluate_json_keys(run_cli, trained, corpus):
    result = run_cli("evaluate", trained, "--data", corpus, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"loss", "perplexity", "bits_per_char"} <= scores.keys()
    assert scores["perplexity"] == pytest.approx(2.718281828 ** scores["loss"], rel=1e-6)
    assert scores["tokens"] == len(corpus.read_text()) - 1


def test_info_reports_the_run(run_cli, trained):
    result = run_cli("info", trained, "--json")
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["task"] == "generator" and info["steps"] == 10
    assert info["model_config"]["hidden_size"] == 8
    assert info["tokens_seen"] == 10 * 4 * 16
    assert info["parameters"] > 0 and info["vocab_size"]["text"] > 256
    table = run_cli("info", trained)
    # a table of results, so it goes where `info RUN > f` keeps it
    assert "generator" in table.stdout and "hidden_size" in table.stdout
    assert "hidden_size" not in table.stderr


def test_info_shows_booleans_as_words(run_cli, trained):
    rows = [line.split() for line in run_cli("info", trained).stdout.splitlines()]
    assert ["tie_embeddings", "false"] in [[c for c in row if c != "│"] for row in rows]


@pytest.mark.parametrize("kind", ["bpe", "unigram"])
def test_subword_tokenizers_train_and_generate(run_cli, corpus, tmp_path, kind):
    out = tmp_path / kind
    result = train(run_cli, corpus, out, "--max-steps", 5, "--tokenizer", kind, "--vocab-size", 300)
    assert result.exit_code == 0, result.output
    sample = run_cli("generate", out, "--prompt", "the", "--length", 10, "--seed", 0)
    assert sample.exit_code == 0 and sample.stdout.startswith("the")


@pytest.mark.parametrize("cell", ["gru", "rnn"])
def test_other_cells(run_cli, corpus, tmp_path, cell):
    out = tmp_path / cell
    result = train(run_cli, corpus, out, "--max-steps", 5, "--cell", cell, "--tie-weights")
    assert result.exit_code == 0, result.output
    assert run_cli("generate", out, "--length", 5).exit_code == 0


def test_resume_continues_to_a_longer_budget(run_cli, trained, corpus):
    result = train(run_cli, corpus, trained, "--max-steps", 15, "--resume")
    assert result.exit_code == 0, result.output
    info = json.loads(run_cli("info", Path(trained) / "last.ckpt", "--json").stdout)
    assert info["steps"] == 15


def test_resume_keeps_stored_model_options(run_cli, trained, corpus):
    result = train(run_cli, corpus, trained, "--max-steps", 12, "--resume", "--lr", "0.5")
    assert result.exit_code == 0, result.output
    assert "--lr ignored: a resumed run keeps its stored settings" in result.stderr


# -- bad input: one line, exit code 1, nothing lost ---------------------------------------


def error_line(result) -> str:
    assert result.exit_code == 1, result.output
    # the command ended by exiting, not by an exception CliRunner caught
    assert isinstance(result.exception, SystemExit), result.exception
    return result.stderr.strip().splitlines()[-1]


def test_non_utf8_corpus(run_cli, tmp_path):
    path = tmp_path / "bad.txt"
    path.write_bytes(b"fine line\n" * 3 + b"caf\xe9\n")
    result = train(run_cli, path, tmp_path / "run", "--max-steps", 5)
    assert error_line(result) == (
        f"Error: {path}:4: not valid UTF-8 (byte 0xe9 at column 4); "
        "convert the file to UTF-8, e.g. with iconv -t utf-8"
    )


@pytest.mark.parametrize(
    ("content", "what"), [("", "is empty"), (" \n\t\n\n", "holds only whitespace")]
)
def test_empty_corpus(run_cli, tmp_path, content, what):
    path = tmp_path / "empty.txt"
    path.write_text(content)
    result = train(run_cli, path, tmp_path / "run", "--max-steps", 5)
    assert error_line(result) == f"Error: {path}: the file {what}; give a text file with content"


def test_corpus_shorter_than_one_window(run_cli, tmp_path):
    path = tmp_path / "short.txt"
    path.write_text("just a few words here\n" * 2)
    result = run_cli(
        "train",
        "generator",
        "--train",
        path,
        "--valid",
        path,
        "--out",
        tmp_path / "run",
        "--max-steps",
        5,
    )
    assert error_line(result) == (
        f"Error: {path}: 44 training tokens are fewer than one batch window needs "
        "(64 x 64 + 1 = 4097); lower --batch-size or --seq-len"
    )


def test_missing_file(run_cli, tmp_path):
    result = train(run_cli, tmp_path / "nope.txt", tmp_path / "run", "--max-steps", 5)
    assert error_line(result) == f"Error: {tmp_path / 'nope.txt'}: no such file"


def test_existing_run_is_not_overwritten(run_cli, trained, corpus):
    before = (Path(trained) / "best.ckpt").read_bytes()
    result = train(run_cli, corpus, trained, "--max-steps", 5)
    assert error_line(result) == (
        f"Error: {trained} already holds a run (best.ckpt, last.ckpt, metrics.jsonl); "
        "add --resume to continue it or --force to start over"
    )
    assert (Path(trained) / "best.ckpt").read_bytes() == before
    empty = corpus.with_name("empty.txt")
    empty.write_text("")
    bad = train(run_cli, empty, trained, "--max-steps", 5, "--force")
    assert error_line(bad).endswith("the file is empty; give a text file with content")
    assert (Path(trained) / "best.ckpt").read_bytes() == before  # --force lost nothing yet
    forced = train(run_cli, corpus, trained, "--max-steps", 5, "--force")
    assert forced.exit_code == 0, forced.output


def test_resume_without_a_run(run_cli, corpus, tmp_path):
    result = train(run_cli, corpus, tmp_path / "fresh", "--max-steps", 5, "--resume")
    assert error_line(result) == (
        f"Error: {tmp_path / 'fresh'}: nothing to resume (no last.ckpt); drop --resume"
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--hidden-size", "-5"),
            "Invalid value for '--hidden-size': -5 is not in the range 1<=x<=2147483647.",
        ),
        (("--dropout", "1"), "Invalid value for '--dropout': 1.0 is not in the range 0<=x<1."),
        (
            ("--max-time", "10q"),
            "Invalid value for '--max-time': cannot read '10q' as a duration; "
            "use a form like 90s, 10m or 2h",
        ),
        (
            ("--cell", "tree"),
            "Invalid value for '--cell': 'tree' is not one of 'lstm', 'gru', 'rnn'.",
        ),
        (  # more epochs than --max-steps takes steps: its ETA overflowed the clock
            ("--max-epochs", "1e15"),
            "Invalid value for '--max-epochs': 1000000000000000.0 is not in the range "
            "0<x<=2147483647.",
        ),
    ],
)
def test_nonsense_training_options(run_cli, corpus, tmp_path, args, message):
    result = run_cli("train", "generator", "--train", corpus, "--out", tmp_path / "r", *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("--temperature", "-1"),
            "Invalid value for '--temperature': -1.0 is not in the range x>=0.",
        ),
        (("--top-p", "1.5"), "Invalid value for '--top-p': 1.5 is not in the range 0<x<=1."),
        (("--top-p", "0"), "Invalid value for '--top-p': 0.0 is not in the range 0<x<=1."),
        (
            ("--length", "0"),
            "Invalid value for '--length': 0 is not in the range 1<=x<=2147483647.",
        ),
    ],
)
def test_nonsense_sampling_options(run_cli, trained, args, message):
    result = run_cli("generate", trained, *args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == f"Error: {message}"


def test_checkpoint_of_another_task(run_cli, trained, tmp_path):
    ckpt = torch.load(Path(trained) / "best.ckpt", weights_only=True)
    ckpt["task"] = "translator"
    path = tmp_path / "translator.ckpt"
    torch.save(ckpt, path)
    result = run_cli("generate", path)
    assert error_line(result) == (
        f"Error: {path}: this is a translator checkpoint, not a generator checkpoint; "
        "use `seqtool translate` with it"
    )


def test_corrupt_checkpoint(run_cli, trained, tmp_path):
    path = tmp_path / "cut.ckpt"
    path.write_bytes((Path(trained) / "best.ckpt").read_bytes()[:1000])
    assert error_line(run_cli("generate", path)).startswith(
        f"Error: {path}: not a seqtool checkpoint, or truncated or corrupt"
    )


# -- processes ------------------------------------------------------------------------------


def test_help_does_not_import_torch():
    """Neither the top-level help nor an inference command's (which imports torch before
    it runs, with the collector off)."""
    code = (
        "import sys; from seqtool.cli import cli\n"
        "for args in ([], ['generate'], ['classify'], ['translate'], ['evaluate'], ['inspect']):\n"
        "    try:\n        cli([*args, '--help'])\n    except SystemExit:\n        pass\n"
        "print('torch' in sys.modules, 'sentencepiece' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().endswith("False False")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_signal_saves_last_checkpoint_and_exits_130(corpus, tmp_path, signum):
    out = tmp_path / "run"
    command = [
        sys.executable,
        "-m",
        "seqtool",
        "train",
        "generator",
        "--train",
        str(corpus),
        "--out",
        str(out),
        "--force",  # starts a fresh run; the resume command must not repeat it
        *TINY,
        "--max-steps",
        "1000000",
        "--eval-every",
        "1000000",
    ]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = out / "metrics.jsonl"
    deadline = time.time() + 60
    while not (metrics.exists() and metrics.read_text()) and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signum)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Resume with:" in stderr and "--resume" in stderr
    assert "Traceback" not in stderr
    stopped = checkpoint.load(out / "last.ckpt")["progress"]["step"]
    # run the printed command, with a budget a few steps past where it stopped
    args = shlex.split(stderr.split("Resume with:")[1].strip().splitlines()[0])
    assert args[0] == "seqtool" and args[-1] == "--resume" and "--force" not in args
    args[args.index("--max-steps") + 1] = str(stopped + 3)
    resumed = subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env={**os.environ}
    )
    assert resumed.returncode == 0, resumed.stderr
    assert checkpoint.load(out / "last.ckpt")["progress"]["step"] == stopped + 3


def test_a_new_run_on_the_same_corpus_reuses_tokenizer_and_cache(run_cli, corpus, tmp_path):
    out = tmp_path / "run"
    args = ["train", "generator", "--train", corpus, "--out", out, "--max-steps", 2, *TINY]
    assert run_cli(*args).exit_code == 0
    cache = out / "data" / "train.ids"
    built = cache.stat().st_mtime_ns
    again = run_cli(*args, "--force")
    assert again.exit_code == 0
    assert cache.stat().st_mtime_ns == built  # mapped again, not rebuilt
    corpus.write_text(corpus.read_text() + "one more line\n")
    assert run_cli(*args, "--force").exit_code == 0
    assert cache.stat().st_mtime_ns != built  # the corpus changed: rebuilt


# -- inference processes: Ctrl-C, a reader that goes away, output as it comes ------------


def seqtool_process(*args, stdin=subprocess.DEVNULL) -> subprocess.Popen:
    """seqtool in a child that gets Ctrl-C as a terminal's would: a suite started in the
    background (`make test &`) passes on SIGINT ignored, and Python then never raises
    KeyboardInterrupt."""
    command = [sys.executable, "-m", "seqtool", *map(str, args)]
    return subprocess.Popen(
        command,
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )


def read_stdout(proc: subprocess.Popen, until, timeout: float = 60.0) -> bytes:
    """What the process writes to stdout until `until(data)` holds; fails after `timeout`
    seconds instead of hanging."""
    fd, data, deadline = proc.stdout.fileno(), b"", time.monotonic() + timeout
    while not until(data):
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        assert ready, f"no more output within {timeout}s after {data!r}"
        chunk = os.read(fd, 4096)
        assert chunk, f"stdout ended after {data!r}: {proc.stderr.read().decode()}"
        data += chunk
    return data


def typed_at_a_terminal(*args, lines: list[str]) -> tuple[list[str], int, str]:
    """`seqtool ARGS` reading a terminal where `lines` are typed one by one, each only
    after the answer to the one before has arrived, then Ctrl-D: -> (the answers, the
    exit code, stderr)."""
    primary, secondary = pty.openpty()
    proc = seqtool_process(*args, stdin=secondary)
    os.close(secondary)
    try:
        answers = []
        for line in lines:
            os.write(primary, line.encode() + b"\n")
            # arrives while the terminal is still open: nothing waits for more lines
            answers.append(read_stdout(proc, lambda data: data.endswith(b"\n")).decode())
        os.write(primary, b"\x04")  # Ctrl-D ends
        _, stderr = proc.communicate(timeout=60)
    finally:
        os.close(primary)
        proc.kill()
    return answers, proc.returncode, stderr.decode()


def interrupt(proc: subprocess.Popen) -> tuple[bytes, str]:
    """Ctrl-C; -> (the rest of stdout, stderr)."""
    proc.send_signal(signal.SIGINT)
    rest, stderr = proc.communicate(timeout=30)
    return rest, stderr.decode()


def test_ctrl_c_in_generate_exits_130_keeping_the_output(run_cli, trained):
    proc = seqtool_process("generate", trained, "--length", 10**9, "--seed", 0)
    first = read_stdout(proc, lambda data: len(data) >= 20)
    rest, stderr = interrupt(proc)
    assert proc.returncode == 130, stderr
    assert stderr == ""  # no traceback, no "Aborted!"
    printed = (first + rest).decode()
    # what was printed before Ctrl-C is the start of the text a run of that length gives
    whole = run_cli("generate", trained, "--length", len(printed), "--seed", 0).stdout
    assert whole == printed + "\n"


@pytest.mark.parametrize("samples", ["1", "4"])
def test_generate_into_a_closed_pipe_stops_quietly(trained, samples):
    proc = seqtool_process(
        "generate", trained, "--length", 10**6, "--num-samples", samples, "--seed", 0
    )
    # the first sample's text comes at once, though all of them hold 4 million characters
    assert len(read_stdout(proc, lambda data: len(data) >= 100, timeout=30)) >= 100
    proc.stdout.close()  # as `| head -c 100` does
    assert proc.wait(timeout=10) == 141
    stderr = proc.stderr.read().decode()
    assert [line for line in stderr.splitlines() if "sample 1" not in line] == []


def test_main_freezes_what_is_left_for_the_exit(monkeypatch):
    """The interpreter's last garbage collection would traverse every object torch's
    import made (0.3 s of each command here); main() freezes them first."""
    from seqtool.cli import main

    monkeypatch.setattr(sys, "argv", ["seqtool", "--version"])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as stop:
            main()
        assert stop.value.code == 0
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_inference_commands_freeze_what_importing_torch_made(trained, run_cli):
    gc.unfreeze()
    try:
        result = run_cli("generate", trained, "--length", 5, "--seed", 1)
        assert result.exit_code == 0, result.output
        assert gc.get_freeze_count() > 0 and gc.isenabled()
    finally:
        gc.unfreeze()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["info"], ["generate", "--length", 100_000]])
def test_output_that_cannot_be_written_is_one_error_line(trained, command):
    with open("/dev/full", "wb") as full:
        done = subprocess.run(
            [sys.executable, "-m", "seqtool", command[0], trained, *map(str, command[1:])],
            stdout=full, stderr=subprocess.PIPE, text=True, timeout=120,
        )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr == "Error: could not write the output (No space left on device)\n"


@pytest.mark.parametrize("value", ["8761h", "99999999999999h", "1" + "0" * 30])
def test_a_max_time_past_a_year_is_refused(run_cli, corpus, tmp_path, value):
    """The clock and the plan's step counts overflowed past it (a traceback before)."""
    out = tmp_path / "r"
    result = run_cli("train", "generator", "--train", corpus, "--out", out, "--max-time", value)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: Invalid value for '--max-time': {value!r} is longer than a year, the most "
        "--max-time takes"
    )
    assert not out.exists()


@pytest.mark.parametrize("done", [1e-15, 1e-320])
def test_an_eta_past_a_year_is_shown_as_such(done):
    """timedelta overflowed (OverflowError at the first log line of --max-epochs 1e15)."""
    from seqtool.ui import log_line

    record = {"step": 1, "epoch": 0.0, "loss": 1.0, "lr": 1e-3, "elapsed": 1.0}
    assert log_line(record, "", done).endswith("elapsed 0:00:01  ETA over a year")


def test_a_file_named_data_in_the_run_directory_is_kept(run_cli, corpus, tmp_path):
    """The generator's token cache goes in RUN_DIR/data: FileExistsError before."""
    out = tmp_path / "run"
    out.mkdir()
    (out / "data").write_text("keep")
    result = train(run_cli, corpus, out, "--max-steps", 2)
    assert error_line(result) == (
        f"Error: {out / 'data'}: a file is in the way; seqtool keeps its tokenizer cache in a "
        "folder here (move the file away)"
    )
    assert (out / "data").read_text() == "keep"


def test_a_data_name_with_glob_characters_is_taken_literally(run_cli, tmp_path):
    """A ValueError from glob (`**`), a traceback, before."""
    path = tmp_path / "x**y"
    result = run_cli("train", "translator", "--train", path, "--out", tmp_path / "r")
    assert error_line(result) == f"Error: {path}: no such file"


def test_a_config_value_gets_the_utf8_check_of_an_argument(run_cli, corpus, tmp_path):
    """YAML's "\\ud800" is a lone surrogate, as bytes that are not UTF-8 in an argument
    are: it reached os.stat (UnicodeEncodeError) before."""
    config = tmp_path / "c.yaml"
    config.write_text('out: "run\\ud800"\n')
    result = run_cli("train", "generator", "--config", config, "--train", corpus, *TINY)
    assert error_line(result) == (
        f"Error: {config}: out 'run\\ud800' is not valid UTF-8 (at character 4); give "
        "arguments (and file names) in UTF-8"
    )
    assert [line for line in result.stderr.splitlines() if line.startswith("Error")] == [
        error_line(result)
    ]


def test_a_missing_or_empty_file_name_is_said_so(run_cli, corpus, tmp_path):
    """Both were "Error: .: not a file" (Path("") is the current folder)."""
    result = run_cli("train", "--config")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: Option '--config' requires an argument."
    )
    empty = "Error: '': the file name is empty; give a file"
    assert error_line(run_cli("train", "--config=")) == empty
    assert error_line(train(run_cli, "", tmp_path / "r", "--max-steps", 2)) == empty


def shell(command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`seqtool ...` in bash, for the redirections of a real stdout."""
    seqtool = shlex.join([sys.executable, "-m", "seqtool"])
    return subprocess.run(
        ["bash", "-c", f"{seqtool} {command}"], capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
@pytest.mark.parametrize(
    "command", ["neighbours {run} e > /dev/full", "--help > /dev/full", "info --help > /dev/full"]
)
def test_neighbours_and_help_into_a_full_disk_are_one_error_line(trained, command):
    """Tracebacks (OSError: No space left on device) before."""
    done = shell(command.format(run=shlex.quote(str(trained))))
    assert (done.returncode, done.stderr) == (
        1,
        "Error: could not write the output (No space left on device)\n",
    )


def test_neighbours_into_a_closed_stdout_is_one_error_line(trained):
    """It exited 0, having written nothing, before."""
    done = shell(f"neighbours {shlex.quote(str(trained))} e >&-")
    assert (done.returncode, done.stderr) == (
        1,
        "Error: could not write the output (standard output is closed)\n",
    )


@pytest.mark.parametrize("args", [["neighbours", "{run}", "e"], ["--version"], ["--help"]])
def test_neighbours_and_help_into_a_closed_pipe_stop_quietly(trained, args):
    """exit code 1 before, not the 141 of the other commands."""
    proc = seqtool_process(*(a.format(run=trained) for a in args))
    proc.stdout.close()  # the reader is gone before anything is written: `| true`
    assert proc.wait(timeout=60) == 141
    assert proc.stderr.read() == b""
