"""What a user can get wrong on the command line: files that cannot be written, text
that is not what it seems, values that pass the options but not the code. Each ends in
one `Error:` line (exit 1, or 2 for click's usage errors) and loses nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TEXT, TINY

from seqtool.cli import cli

SMALL = ["--hidden-size", "8", "--embedding-size", "8", "--batch-size", "4", "--eval-every", "2"]


def invoke(*args, input: bytes | str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def error(result) -> str:
    """The one `Error:` line that ends a failed command (notes may come before it)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1
    return result.stderr.rstrip("\n").splitlines()[-1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny trained run of each task."""
    folder = tmp_path_factory.mktemp("runs")
    (folder / "text.txt").write_text(TEXT)
    (folder / "labels.tsv").write_text("".join(f"pos\tgood {i}\nneg\tbad {i}\n" for i in range(20)))
    (folder / "pairs.tsv").write_text(
        "".join(f"ein {i}\tone {i}\nzwei {i}\ttwo {i}\n" for i in range(20))
    )
    found = {}
    for task, data in (
        ("generator", "text.txt"),
        ("classifier", "labels.tsv"),
        ("translator", "pairs.tsv"),
    ):
        found[task] = folder / task
        result = invoke(
            "train", task, "--train", folder / data, "--out", found[task], "--max-steps", 2,
            *(TINY if task == "generator" else SMALL), "--tokenizer", "char", "--device", "cpu",
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    return found


# -- files that cannot be written ---------------------------------------------------------


LONG = "a" * 300  # longer than a file name may be: pathlib's exists() raises for it


@pytest.mark.parametrize(
    "args",
    [
        ("train", "generator", "--train", "LONG", "--out", "OUT"),
        ("train", "generator", "--config", "LONG.yaml", "--train", "TEXT", "--out", "OUT"),
        ("classify", "C", "LONG"),
        ("translate", "T", "LONG"),
        ("evaluate", "T", "--data", "LONG"),
        ("evaluate", "T", "--data", "LONG", "--src-lang", "de", "--tgt-lang", "en"),
        ("plot", "LONG", "--out", "OUT"),
        ("plot", "G", "--out", "DIR/LONG.png"),
        ("translate", "T", "--text", "ein 1", "--attention-plot", "DIR/LONG.png"),
        ("inspect", "G", "--text", "a", "--html", "DIR/LONG.html"),
        ("average", "G", "G", "--out", "DIR/LONG.ckpt"),
    ],
)
def test_a_file_name_too_long_is_one_line(runs, tmp_path, args):
    folder = runs["generator"].parent
    places = {"TEXT": folder / "text.txt", "OUT": tmp_path / "out", "G": runs["generator"],
              "C": runs["classifier"], "T": runs["translator"]}  # fmt: skip
    args = [str(places.get(a, a)).replace("LONG", LONG).replace("DIR", str(tmp_path)) for a in args]
    assert "File name too long" in error(invoke(*args))


@pytest.mark.parametrize(
    "task, text, says",
    [
        ("classifier", "pos\tgood\n", "data.txt: too few examples to train on"),
        ("generator", "a", "data.txt: too short to hold a tenth out; give --valid too"),
        ("translator", "ein\tone\tx\n" * 20, "data.txt:1: a second tab in the line; write it as"),
        # every label once: no line can be held out without losing its label
        ("classifier", "".join(f"l{i}\tw {i}\n" for i in range(1000)), "to hold lines of it out"),
    ],
)
def test_training_data_too_small_or_of_three_columns_is_one_short_line(tmp_path, task, text, says):
    """Sentencepiece's own INTERNAL error came out for one example or one character; a
    third column was read as part of the target; 1,000 labels were all listed."""
    data = tmp_path / "data.txt"
    data.write_text(text)
    result = invoke("train", task, "--train", data, "--out", tmp_path / "run", "--max-steps", 1)
    line = error(result)
    assert says in line and len(line) < 300 + len(str(tmp_path)), line


def test_a_pipe_or_device_is_written_to_and_a_link_not_followed(runs, tmp_path):
    """Output went to a temporary file renamed over the target: run as root, `--html
    /dev/null` put a plain file in place of /dev/null. A FIFO stands in for a device. A
    link to a plain file is replaced, its target left alone."""
    import os
    import stat
    import threading

    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    got = []
    reader = threading.Thread(target=lambda: got.append(fifo.read_bytes()), daemon=True)
    reader.start()
    result = invoke("inspect", runs["generator"], "--text", "a b", "--html", fifo)
    reader.join(60)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(fifo.stat().st_mode) and got[0].lstrip().startswith(b"<!DOCTYPE html>")
    target, link = tmp_path / "report.html", tmp_path / "link.html"
    target.write_text("old")
    link.symlink_to(target)
    assert invoke("inspect", runs["generator"], "--text", "a b", "--html", link).exit_code == 0
    assert not link.is_symlink() and target.read_text() == "old"
    assert link.read_text().lstrip().startswith("<!DOCTYPE html>")
    os.mkfifo(tmp_path / "pipe2")  # a link to a pipe outside /dev is not followed either
    (tmp_path / "link2.html").symlink_to(tmp_path / "pipe2")
    html = tmp_path / "link2.html"
    assert invoke("inspect", runs["generator"], "--text", "a", "--html", html).exit_code == 0
    assert stat.S_ISFIFO((tmp_path / "pipe2").stat().st_mode)
    assert not (tmp_path / "link2.html").is_symlink()


@pytest.mark.parametrize("task", ["classifier", "translator"])
def test_input_from_a_pipe_is_streamed_like_a_file(runs, tmp_path, task):
    """INPUT may be a pipe (`<(zcat test.gz)`) or a device: read once, as stdin is. Before,
    anything but a regular file was refused as "not a file"."""
    import os
    import threading

    command = "classify" if task == "classifier" else "translate"
    text = "".join(f"gut {i}\nzwei {i}\n\n" for i in range(30))
    (tmp_path / "in.txt").write_text(text)
    from_file = invoke(command, runs[task], tmp_path / "in.txt")
    assert from_file.exit_code == 0 and from_file.stdout.count("\n") == 90, from_file.output
    fifo = tmp_path / "in.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text(text), daemon=True)
    writer.start()
    from_pipe = invoke(command, runs[task], fifo)
    writer.join(60)
    assert from_pipe.exit_code == 0, from_pipe.output
    assert from_pipe.stdout == from_file.stdout
    # a device that never ends a line: the line limit, one line
    line = error(invoke(command, runs[task], "/dev/zero"))
    assert line == (
        "Error: /dev/zero:1: the line is longer than 1,048,576 characters; "
        "break the text into lines"
    )
    if task == "classifier":  # translate takes a directory for another model
        assert error(invoke(command, runs[task], tmp_path)) == f"Error: {tmp_path}: not a file"


def test_inspect_html_into_a_missing_folder(runs, tmp_path):
    page = tmp_path / "nowhere" / "report.html"
    result = invoke("inspect", runs["generator"], "--text", "the fox", "--html", page)
    assert error(result) == (f"Error: {page}: could not write the report (no folder {page.parent})")


@pytest.mark.parametrize("name", ["nowhere/curves.png", "curves.xyz"])
def test_plot_into_a_missing_folder_or_an_unknown_format(runs, tmp_path, name):
    pytest.importorskip("matplotlib")
    out = tmp_path / name
    message = error(invoke("plot", runs["generator"], "--out", out))
    if name.endswith(".xyz"):
        assert message.startswith(
            f"Error: {out}: matplotlib cannot write .xyz pictures; use one of "
        )
        assert ".png" in message
    else:
        assert message == f"Error: {out}: could not write the picture (no folder {out.parent})"
    assert list(tmp_path.iterdir()) == []


def test_attention_plot_into_an_unwritable_place(runs):
    pytest.importorskip("matplotlib")
    out = "/dev/null/attention.png"  # a file is no folder, whoever runs this
    result = invoke("translate", runs["translator"], "--text", "ein 1", "--attention-plot", out)
    assert error(result) == f"Error: {out}: could not write the picture (Not a directory)"


def test_average_into_a_missing_folder(runs, tmp_path):
    out = tmp_path / "nowhere" / "mean.ckpt"
    result = invoke("average", runs["generator"], runs["generator"], "--out", out)
    assert error(result) == (
        f"Error: {out}: could not write the checkpoint (no folder {out.parent})"
    )


# -- values that pass the options but not the code ------------------------------------------


def train_args(runs, task: str, out, *extra):
    data = {"generator": "text.txt", "classifier": "labels.tsv", "translator": "pairs.tsv"}[task]
    return (
        "train", task, "--train", runs[task].parent / data, "--out", out, "--max-steps", 1,
        *(TINY if task == "generator" else SMALL), "--tokenizer", "char", "--device", "cpu",
        *extra,
    )  # fmt: skip


@pytest.mark.parametrize("task", ["classifier", "translator"])
def test_the_largest_seed_trains(runs, tmp_path, task):
    result = invoke(*train_args(runs, task, tmp_path / "run", "--seed", 2**63 - 1))
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "RUN", "--seed", 2**64),
        ("generate", "RUN", "--seed", -1),
        ("generate", "RUN", "--temperature", "nan"),
        ("generate", "RUN", "--top-p", "nan"),
        ("translate", "RUN", "--text", "x", "--max-length-ratio", "inf"),
        ("translate", "RUN", "--text", "x", "--length-penalty", "nan"),
        ("train", "generator", "--train", "x", "--out", "y", "--weight-decay", "nan"),
        ("train", "generator", "--train", "x", "--out", "y", "--lr", "inf"),
        ("train", "translator", "--train", "x", "--out", "y", "--ema", 1),
        ("train", "translator", "--train", "x", "--out", "y", "--ema", "nan"),
        ("train", "classifier", "--train", "x", "--out", "y", "--word-dropout", 1),
        ("train", "classifier", "--train", "x", "--out", "y", "--word-dropout", "nan"),
        ("train", "translator", "--train", "x", "--out", "y", "--word-dropout", -0.1),
        # an unset shell variable: the current folder would have been the run directory
        ("train", "generator", "--train", "x", "--out", ""),
        ("train", "generator", "--train", "x", "--out", "y", "--seed", 2**63),
        ("train", "generator", "--train", "x", "--out", "y", "--hidden-size", 2**62),
        # counts built in a loop: 2**31 - 1 of them looped for hours
        ("train", "generator", "--train", "x", "--out", "y", "--layers", 65),
        ("train", "classifier", "--train", "x", "--out", "y", "--ensemble", 65),
        ("train", "translator", "--train", "x", "--out", "y", "--vocab-size", 10**6 + 1),
        ("train", "generator", "--train", "x", "--out", "y", "--threads", 1025),
        ("generate", "RUN", "--threads", 2**31 - 1),
    ],
)
def test_values_out_of_reach_are_usage_errors(runs, args):
    args = [runs["generator"] if a == "RUN" else a for a in args]
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert "Invalid value for" in result.stderr


def test_a_vocabulary_too_small_for_the_special_pieces_says_what_is_used(runs, tmp_path):
    result = invoke(*train_args(runs, "generator", tmp_path / "run", "--vocab-size", 1))
    assert result.exit_code == 0, result.output
    assert "--vocab-size 1 is too small for this corpus; using 260\n" in result.stderr


def test_a_model_too_large_to_allocate_names_the_options(runs, tmp_path):
    result = invoke(*train_args(runs, "generator", tmp_path / "run", "--hidden-size", 10**6))
    assert (
        error(result) == "Error: out of memory; lower --hidden-size, --embedding-size or --layers"
    )


@pytest.mark.parametrize("command", ["translate", "evaluate"])
def test_a_beam_too_large_to_allocate_names_the_option(runs, command):
    pairs = runs["generator"].parent / "pairs.tsv"
    data = ["--text", "ein 1"] if command == "translate" else ["--data", pairs]
    result = invoke(command, runs["translator"], *data, "--beam-size", 2**31 - 1)
    assert error(result) == "Error: out of memory; lower --beam-size or --batch-size"


def test_a_length_penalty_past_a_floats_range_scores_every_hypothesis_0(runs):
    from seqtool.decoding import length_penalty

    assert length_penalty(10, 1e308) == float("inf")  # it was an OverflowError
    result = invoke("translate", runs["translator"], "--text", "ein 1", "--length-penalty", 1e308)
    assert result.exit_code == 0, result.output


def test_counts_in_a_crafted_checkpoint_or_call_are_bounded():
    """What the options bound, the configs a checkpoint is read into bound too."""
    import seqtool
    from seqtool.config import ClassifierConfig, GeneratorConfig, TokenizerConfig, TrainConfig
    from seqtool.errors import ConfigError

    for make, says in (
        (lambda: GeneratorConfig(vocab_size=10, num_layers=65), "num_layers must be at most 64"),
        (lambda: ClassifierConfig(10, ("a", "b"), members=65), "members must be at most 64"),
        (lambda: TokenizerConfig("unigram", 10**6 + 1), "--vocab-size must be in"),
        (lambda: TrainConfig(threads=1025), "--threads is at most 1024"),
        (lambda: seqtool.load("no-such-run", threads=0), "--threads 0: this machine has"),
    ):
        with pytest.raises(ConfigError, match=says):
            make()


def test_more_threads_than_cpus_is_one_line(runs):
    """A thousand torch threads failed to start in the middle of the first step."""
    import os

    cpus = os.cpu_count()
    result = invoke("generate", runs["generator"], "--length", 3, "--threads", cpus + 1)
    says = f"Error: --threads {cpus + 1}: this machine has {cpus} CPUs; give 1 to {cpus}"
    assert error(result) == says


@pytest.mark.parametrize("task", ["classifier", "translator"])
def test_resuming_a_checkpoint_from_before_task_options(runs, tmp_path, task):
    import shutil

    import torch

    out = tmp_path / "run"
    shutil.copytree(runs[task], out)
    ckpt = torch.load(out / "last.ckpt", weights_only=True)
    del ckpt["task_options"]
    torch.save(ckpt, out / "last.ckpt")
    args = train_args(runs, task, out, "--resume")
    result = invoke(
        *args[: args.index("--max-steps")], "--max-steps", 3, *args[args.index("--max-steps") + 2 :]
    )
    assert result.exit_code == 0, result.output
    assert torch.load(out / "last.ckpt", weights_only=True)["progress"]["step"] == 3


# -- checkpoints that are not what they claim -------------------------------------------------


@pytest.mark.parametrize(
    "key, value, says",
    [
        ("model_state", [1, 2], "model_state is a list, not a dict"),
        ("model_state", {"w": 1.0}, "model_state['w'] is a float"),
        ("progress", "step 5", "progress is a str, not a dict"),
        ("metrics", {"loss": "TENSOR"}, "metrics['loss'] is a Tensor"),
        ("task", ["generator"], "unknown task ['generator']"),
        ("tokenizers", {"text": None}, "tokenizers['text'] is a NoneType"),
        ("averaged", [1], "averaged holds more than paths"),
    ],
)
@pytest.mark.parametrize("command", ["info", "generate"])
def test_a_damaged_checkpoint_is_one_line_in_every_command(
    runs, tmp_path, key, value, says, command
):
    import torch

    ckpt = torch.load(runs["generator"] / "best.ckpt", weights_only=True)
    ckpt[key] = {"loss": torch.ones(1)} if value == {"loss": "TENSOR"} else value
    path = tmp_path / "damaged.ckpt"
    torch.save(ckpt, path)
    assert error(invoke(command, path)) == f"Error: {path}: not a seqtool checkpoint ({says})"


@pytest.mark.parametrize("task", ["generator", "classifier", "translator"])
def test_weights_of_nan_or_inf_are_one_line(runs, tmp_path, task):
    """A translator of nan weights ended its beam search with no hypothesis: IndexError."""
    import torch

    ckpt = torch.load(runs[task] / "best.ckpt", weights_only=True)
    name = next(iter(ckpt["model_state"]))
    ckpt["model_state"][name] = torch.full_like(ckpt["model_state"][name], float("nan"))
    path = tmp_path / "nan.ckpt"
    torch.save(ckpt, path)
    text = {"generator": ["--length", 3], "classifier": ["--text", "a"]}.get(task, ["--text", "a"])
    command = {"generator": "generate", "classifier": "classify", "translator": "translate"}[task]
    says = f"Error: {path}: the weights hold nan or inf ({name}): a damaged file"
    assert error(invoke(command, path, *text)) == says


# -- text that is not what it seems --------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("generate", "generator", "--prompt", "caf\udce9"),
        ("classify", "classifier", "--text", "caf\udce9"),
        ("translate", "translator", "--text", "caf\udce9"),
        ("inspect", "generator", "--text", "caf\udce9"),
    ],
)
def test_arguments_that_are_not_utf8_are_refused(runs, args):
    command, task, *rest = args
    assert error(invoke(command, runs[task], *rest)) == (
        "Error: the argument 'caf\\xe9' is not valid UTF-8 (at character 4); "
        "give arguments (and file names) in UTF-8"
    )


def test_a_byte_order_mark_and_crlf_are_no_text(tmp_path):
    from seqtool.data import read_labeled, read_lines

    tsv, fasttext = tmp_path / "a.tsv", tmp_path / "a.txt"
    tsv.write_bytes(b"\xef\xbb\xbfpos\tgood\r\nneg\tbad\r\n")
    fasttext.write_bytes(b"\xef\xbb\xbf__label__pos good\r\n__label__neg bad\r\n")
    for path in (tsv, fasttext):
        examples, _ = read_labeled(path)
        assert [(e.labels, e.text) for e in examples] == [(("pos",), "good"), (("neg",), "bad")]
    assert list(read_lines(tsv)) == [(1, "pos\tgood"), (2, "neg\tbad")]


def test_a_byte_order_mark_on_stdin_is_no_text(runs):
    plain = invoke("classify", runs["classifier"], "--json", input=b"good 1\r\n")
    marked = invoke("classify", runs["classifier"], "--json", input=b"\xef\xbb\xbfgood 1\r\n")
    assert marked.exit_code == 0 and marked.stdout == plain.stdout


def test_bad_utf8_after_a_byte_order_mark_names_its_column(tmp_path):
    from seqtool.data import read_labeled
    from seqtool.errors import DataError

    path = tmp_path / "a.tsv"
    path.write_bytes(b"\xef\xbb\xbfpos\tcaf\xe9\n")
    with pytest.raises(DataError) as err:
        read_labeled(path)
    assert str(err.value) == (
        f"{path}:1: not valid UTF-8 (byte 0xe9 at column 8); "
        "convert the file to UTF-8, e.g. with iconv -t utf-8"
    )


def test_an_endless_line_on_stdin_is_refused(runs):
    import subprocess
    import sys

    with open("/dev/zero", "rb") as zeros:
        result = subprocess.run(
            [sys.executable, "-m", "seqtool", "classify", runs["classifier"], "--device", "cpu"],
            stdin=zeros,
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "Error: <stdin>:1: the line is longer than 1,048,576 characters; "
        "break the text into lines\n"
    )


@pytest.mark.parametrize("case", ["stdout closed", "ascii stdout", "torch cannot load"])
def test_a_process_that_cannot_write_or_load_is_one_line(runs, tmp_path, case):
    """stdout closed (`>&-`) or in an encoding without the text's characters, and torch
    that cannot be mapped (`ulimit -v`, stood for by a torch that raises as it does):
    tracebacks before (AttributeError, UnicodeEncodeError, ImportError)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ)
    command = (f'"{sys.executable}" -m seqtool generate "{runs["generator"]}" '
               "--length 5 --prompt é --device cpu")  # fmt: skip
    if case == "stdout closed":
        command += " >&-"
    elif case == "ascii stdout":
        env["PYTHONIOENCODING"] = "ascii"
    else:
        (tmp_path / "torch").mkdir()
        (tmp_path / "torch" / "__init__.py").write_text(
            'raise ImportError("libtorch_cpu.so: failed to map segment from shared object")\n'
        )
        env["PYTHONPATH"] = str(tmp_path)
    result = subprocess.run(
        ["bash", "-c", command], env=env, capture_output=True, text=True, timeout=120
    )
    says = {
        "stdout closed": "could not write the output (standard output is closed)",
        "ascii stdout": "could not write the output (its encoding, ascii, has no '\\xe9'; "
        "set PYTHONIOENCODING=utf-8)",
        "torch cannot load": "could not load what seqtool needs (libtorch_cpu.so: failed to "
        "map segment from shared object)",
    }
    assert (result.returncode, result.stderr) == (1, f"Error: {says[case]}\n")


def test_an_unreadable_input_file_is_one_line(runs, tmp_path, monkeypatch):
    path = tmp_path / "in.txt"
    path.write_text("good 1\n")
    opened = Path.open

    def refuse(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied")
        return opened(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)  # root reads any file whatever its mode
    for args in (
        ("classify", runs["classifier"], path),
        ("evaluate", runs["classifier"], "--data", path),
    ):
        assert error(invoke(*args)) == f"Error: {path}: cannot read the file (Permission denied)"


def test_markup_in_a_run_directory_is_printed_as_written(runs, tmp_path):
    out = tmp_path / "[/x]" / "[bold]run"
    result = invoke(*train_args(runs, "generator", out))
    assert result.exit_code == 0, result.output
    assert f"saved {out}/best.ckpt" in result.stderr


@pytest.mark.parametrize("mark", ["\n", "\r", "\x1b[2J", "\u2028"])
def test_a_control_character_in_a_name_is_shown_not_sent(runs, tmp_path, mark):
    """A line break in a file name split the one Error line in two, and a terminal's
    escape sequence in it was obeyed: names are printed with such characters escaped."""
    shown = ascii(mark)[1:-1]
    name = tmp_path / f"a{mark}b"
    assert (
        error(invoke("info", name))
        == f"Error: {tmp_path}/a{shown}b: no such run directory or checkpoint file"
    )
    for args, says in (
        (("train", "generator", "--train", name, "--max-time", f"1{mark}2"), f"'1{shown}2'"),
        ((f"--x{mark}y",), f"Error: No such option '--x{shown}y'."),
    ):
        result = invoke(*args)  # a usage error: exit 2, the error on the last line
        assert result.exit_code == 2 and says in result.stderr.rstrip("\n").splitlines()[-1]
    # a warning names the file, and the closing line of training the run
    lines = tmp_path / f"in{mark}.txt"
    lines.write_text("pos\tgood 1\n\nneg\tbad 2\n")
    result = invoke("evaluate", runs["classifier"], "--data", lines)
    assert result.exit_code == 0, result.output
    assert f"in{shown}.txt: skipped 1 empty lines" in result.stderr
    out = tmp_path / f"run{mark}"
    result = invoke(*train_args(runs, "generator", out))
    assert result.exit_code == 0, result.output
    assert f"saved {tmp_path}/run{shown}/best.ckpt" in result.stderr
    if mark != "\n":
        assert mark not in result.stderr


def test_a_removed_current_folder_is_one_line(runs, tmp_path, monkeypatch):
    """torch's oneMKL aborted the process when the current folder had been removed."""
    gone = tmp_path / "gone"
    gone.mkdir()
    monkeypatch.chdir(gone)
    gone.rmdir()
    line = error(invoke("info", runs["generator"]))
    assert (
        line == "Error: the current folder no longer exists (it was removed); cd to one that does"
    )


@pytest.mark.parametrize(
    "env, says",
    [
        ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not a whole number from 1 to 65,536"),
        ({"WORLD_SIZE": "2"}, "WORLD_SIZE is 2 but RANK, MASTER_ADDR, MASTER_PORT not set"),
        ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK='2' is not a whole number from 0 to 1"),
        ({"WORLD_SIZE": "2", "RANK": "0", "SEQTOOL_DIST_TIMEOUT": "nan"},
         "SEQTOOL_DIST_TIMEOUT='nan' is not a whole number from 1 to 604,800 (seconds)"),
        ({"WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": "abc"},
         "MASTER_PORT='abc' is not a whole number from 1 to 65,535"),
        # the other process never starts: torch's store timed out with a traceback
        ({"WORLD_SIZE": "2", "RANK": "0", "SEQTOOL_DIST_TIMEOUT": "1"},
         "the 2 processes did not all join at 127.0.0.1:29555 in 1 s ("),
    ],
)  # fmt: skip
def test_torchruns_environment_that_cannot_work_is_one_line(runs, tmp_path, monkeypatch, env, says):
    """int() of these raised a ValueError traceback, and torch's own rendezvous another."""
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    if "RANK" in env:
        env = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29555", **env}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert says in error(invoke(*train_args(runs, "generator", tmp_path / "run")))
    assert not (tmp_path / "run").exists()


def test_an_ensemble_past_its_bound_is_refused_before_any_is_read(runs):
    """Every member is held in memory: a list of thousands was loaded one by one."""
    args = [runs["translator"]] * 65
    assert error(invoke("translate", *args, "--text", "ein 1")) == (
        "Error: 65 runs: an ensemble holds at most 64"
    )


def test_markup_in_a_translation_is_printed_as_written():
    from types import SimpleNamespace

    from rich.console import Console

    from seqtool.plot import translation_table

    console = Console(record=True, width=40)
    console.print(translation_table(SimpleNamespace(text="a [/] b [red]c", target=[])))
    assert "a [/] b [red]c" in console.export_text()


def test_show_attention_of_an_empty_sentence(runs):
    result = invoke("translate", runs["translator"], "--text", " ", "--show-attention")
    assert error(result) == (
        "Error: --show-attention and --attention-plot draw one sentence: give it with --text"
    )


@pytest.mark.parametrize(
    "command, target",
    [
        (("info", "RUN"), "seqtool.inference.info"),
        (("average", "RUN", "RUN", "--out", "OUT"), "seqtool.averaging.write"),
        (("plot", "RUN", "--out", "OUT"), "seqtool.plot.curves"),
    ],
)
def test_ctrl_c_in_any_command_exits_130(runs, tmp_path, monkeypatch, command, target):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(target, interrupted)
    if target.endswith("curves"):
        pytest.importorskip("matplotlib")
    args = [{"RUN": runs["generator"], "OUT": tmp_path / "out.png"}.get(a, a) for a in command]
    result = invoke(*args)
    assert result.exit_code == 130, result.output
    assert "Aborted" not in result.output


# -- every subcommand against a table of hostile arguments ----------------------------------

# values no number, path or choice takes: each must end in an Error line (1) or a usage
# error (2); text (W below) takes all but the first. 1e400 is huge: inf as a float, and
# no int
REFUSED = ["caf\udce9", "nan", "-1", "1e400", "/dev/null/x"]
# values some places take: they may also work (0)
ODD = ["[/x]", ""]

# each command with its other arguments; V is where a hostile value goes, one place at a
# time, W where it is text (a prompt, a sentence, a pattern), F a file to write (any name
# but one in no folder)
TABLE = {
    "generate": [
        ["V"], ["G", "--prompt", "W"], ["G", "--length", "V"], *(
            ["G", "--length", "9", option, "V"]
            for option in ("--temperature", "--top-k", "--top-p", "--num-samples", "--seed")
        ),
    ],
    "classify": [
        ["V", "--text", "a"], ["C", "V"], ["C", "--text", "W"],
        ["C", "--text", "a", "--top-k", "V"], ["C", "--text", "a", "--threshold", "V"],
        ["C", "--text", "a", "--batch-size", "V"],
    ],
    "translate": [
        ["V", "--text", "a"], ["T", "V"], ["T", "--text", "W"],
        ["T", "--text", "ein 1", "--beam-size", "V"], ["T", "--text", "a", "--n-best", "V"],
        ["T", "--text", "a", "--length-penalty", "V"],
        ["T", "--text", "a", "--max-length-ratio", "V"], ["T", "--text", "a", "--batch-size", "V"],
        ["T", "--text", "ein 1", "--attention-plot", "F"],
    ],
    "evaluate": [
        ["V", "--data", "LABELS"], ["C", "--data", "V"],
        ["C", "--data", "LABELS", "--batch-size", "V"],
        ["C", "--data", "LABELS", "--threshold", "V"],
        ["T", "--data", "PAIRS", "--beam-size", "V"],
    ],
    "info": [["V"]],
    "inspect": [
        ["V", "--text", "a"], ["G", "V"], ["G", "--text", "W"], ["G", "--text", "a", "--unit", "W"],
        ["G", "--text", "a b", "--find", "W"], ["G", "--text", "a", "--layer", "V"],
        ["G", "--text", "a", "--top-k", "V"], ["G", "--text", "a", "--html", "F"],
        ["T", "--text", "W"],
    ],
    "plot": [["V", "--out", "OUT"], ["G", "--out", "F"], ["G", "--out", "OUT", "--x", "V"]],
    "neighbours": [["V", "a"], ["G", "W"], ["G", "a", "--top-k", "V"]],
    "average": [["V", "G", "--out", "OUT"], ["G", "G", "--out", "F"]],
    "serve": [["V"], *(["G", option, "V"] for option in (
        "--port", "--max-batch", "--max-wait-ms", "--stream-interval-ms", "--grace-seconds",
        "--max-length-ratio",
    ))],
    "train generator": [
        ["--train", "V", "--out", "OUT"], ["--train", "TEXT", "--out", "F"],
        *(["--train", "TEXT", "--out", "OUT", option, "V"] for option in (
            "--hidden-size", "--lr", "--dropout", "--weight-decay", "--clip", "--seed",
            "--max-time", "--vocab-size", "--max-steps", "--seq-len", "--max-epochs", "--ema",
        )),
    ],
    "train classifier": [
        ["--train", "V", "--out", "OUT"], ["--train", "LABELS", "--valid", "V", "--out", "OUT"],
        ["--train", "LABELS", "--out", "OUT", "--max-length", "V"],
        ["--train", "LABELS", "--out", "OUT", "--word-dropout", "V"],
    ],
    "train translator": [
        ["--train", "V", "--out", "OUT"], ["--train", "PAIRS", "--out", "OUT", "--src-lang", "W"],
        ["--train", "PAIRS", "--out", "OUT", "--label-smoothing", "V"],
        ["--train", "PAIRS", "--out", "OUT", "--batch-tokens", "V"],
        ["--train", "PAIRS", "--out", "OUT", "--word-dropout", "V"],
    ],
}  # fmt: skip
CASES = [
    (command, args, value)
    for command, rows in TABLE.items()
    for args in rows
    for value in REFUSED + ODD
]


@pytest.mark.parametrize(
    "command, args, value", CASES, ids=[f"{c} {' '.join(a)} {v!r}" for c, a, v in CASES]
)
def test_no_traceback_for_any_hostile_argument(runs, tmp_path, monkeypatch, command, args, value):
    folder = runs["generator"].parent
    places = {
        "G": runs["generator"], "C": runs["classifier"], "T": runs["translator"],
        "TEXT": folder / "text.txt", "LABELS": folder / "labels.tsv", "PAIRS": folder / "pairs.tsv",
        "OUT": tmp_path / "out.png", "V": value, "W": value, "F": value,
    }  # fmt: skip
    monkeypatch.chdir(tmp_path)  # where files named by the table are written
    if command.startswith("train"):
        places["OUT"] = tmp_path / "run"
        args = ["--max-steps", "1", *SMALL, "--device", "cpu", *args]  # the row's win
    result = invoke(*command.split(), *(places.get(a, a) for a in args), input=b"a\n")
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert "Traceback" not in result.stderr
    refused = (
        value == REFUSED[0]
        or ("V" in args and value in REFUSED)
        or ("F" in args and value == "/dev/null/x")
    )
    assert result.exit_code in ((1, 2) if refused else (0, 1, 2)), result.output
    if result.exit_code == 1:
        assert result.stderr.count("Error:") == 1
        assert result.stderr.splitlines()[-1].startswith("Error: "), result.stderr


def test_info_shows_a_crafted_checkpoints_control_characters_instead_of_sending_them(
    trained, run_cli, tmp_path
):
    """A string field of a stranger's checkpoint (here `sizing`) with a terminal escape
    sequence: `info` prints it escaped, so it cannot drive the terminal."""
    import torch

    ckpt = torch.load(trained / "best.ckpt", weights_only=True)
    ckpt["sizing"] = "\x1b[2J\x1b[31mred\x07 line"
    torch.save(ckpt, tmp_path / "crafted.ckpt")
    result = run_cli("info", tmp_path / "crafted.ckpt")
    assert result.exit_code == 0, result.output
    assert "\\x1b[2J\\x1b[31mred\\x07 line" in result.stdout
    assert "\x1b" not in result.stdout and "\x07" not in result.stdout


# -- checkpoints crafted to pass the structure checks ------------------------------------


def crafted(runs, tmp_path, task: str, edit) -> Path:
    """A copy of the task's tiny run with `edit(ckpt)` applied, saved as crafted.ckpt."""
    import torch

    ckpt = torch.load(runs[task] / "best.ckpt", weights_only=True)
    edit(ckpt)
    path = tmp_path / "crafted.ckpt"
    torch.save(ckpt, path)
    return path


def other_tokenizer(ckpt, name="text"):
    from seqtool.tokenizer import Tokenizer

    tok, _ = Tokenizer.train(["ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!@#$%^&*()_+{}|<>?~" * 5])
    ckpt["tokenizers"][name] = tok.proto


@pytest.mark.parametrize(
    "task, name, command",
    [
        ("generator", "text", ["generate", "--prompt", "~~"]),
        ("classifier", "text", ["classify", "--text", "~~"]),
        ("translator", "src", ["translate", "--text", "~~"]),
        ("translator", "tgt", ["translate", "--text", "~~"]),
    ],
)
def test_a_tokenizer_of_another_size_than_the_model_is_one_line(
    runs, tmp_path, task, name, command
):
    """The model would be handed ids it has no row for (an IndexError), or answer with
    ids the tokenizer has no piece for."""
    path = crafted(runs, tmp_path, task, lambda c: other_tokenizer(c, name))
    says = error(invoke(command[0], path, *command[1:]))
    assert (
        says.startswith(f"Error: {path}: the tokenizer {name} holds ") and "a damaged file" in says
    )


def test_weights_stored_in_fewer_values_than_their_shape_are_refused(runs, tmp_path):
    """An expanded tensor is a few bytes in the file and its whole shape in memory."""
    import torch

    def expand(ckpt):
        state = ckpt["model_state"]
        state["embedding.weight"] = torch.zeros(1).expand(state["embedding.weight"].shape)

    path = crafted(runs, tmp_path, "generator", expand)
    for command in (["generate", path], ["average", path, path, "--out", tmp_path / "a.ckpt"]):
        assert error(invoke(*command)) == (
            f"Error: {path}: not a seqtool checkpoint (model_state['embedding.weight'] is not "
            "a tensor stored whole)"
        )
    assert not (tmp_path / "a.ckpt").exists()


@pytest.mark.parametrize("kind", ["float64", "complex"])
def test_weights_that_are_not_real_numbers_of_the_models_range_are_refused(runs, tmp_path, kind):
    """1e300 is finite in float64 and inf in the model's float32; a complex tensor is
    not a floating one, so a check of the stored values let both through."""
    import torch

    def damage(ckpt):
        shape = ckpt["model_state"]["out.weight"].shape
        ckpt["model_state"]["out.weight"] = (
            torch.full(shape, 1e300, dtype=torch.float64)
            if kind == "float64"
            else torch.full(shape, complex(float("nan"), 0))
        )

    path = crafted(runs, tmp_path, "generator", damage)
    says = error(invoke("generate", path, "--length", 3))
    assert says == (
        f"Error: {path}: the weights hold nan or inf (out.weight): a damaged file"
        if kind == "float64"
        else f"Error: {path}: the weights do not match the model config (first difference: "
        "out.weight holds torch.complex64 values)"
    )


def test_a_shortlist_of_the_wrong_dimensions_is_one_line(runs, tmp_path):
    def damage(ckpt):
        ckpt["shortlist"]["targets"] = ckpt["shortlist"]["targets"][:, None]

    path = crafted(runs, tmp_path, "translator", damage)
    says = error(invoke("translate", path, "--text", "ein 1", "--shortlist"))
    assert says == f"Error: {path}: the vocabulary shortlist is damaged"


def test_labels_with_control_characters_are_refused(runs, tmp_path):
    """classify writes one line per input line, labels in columns."""

    def damage(ckpt):
        ckpt["model_config"]["labels"] = ["po\ns\x1b[31m", "ne\tg"]

    path = crafted(runs, tmp_path, "classifier", damage)
    assert error(invoke("classify", path, "--text", "good 1")) == (
        f"Error: {path}: model_config is invalid (the label 'po\\ns\\x1b[31m' holds a control "
        "character)"
    )


def test_data_nested_too_deeply_to_save_is_one_line(runs, tmp_path):
    """weights_only loading reads deep nesting iteratively; saving it recurses."""
    import sys
    import threading

    def build():
        sys.setrecursionlimit(1_000_000)
        deep: list = []
        for _ in range(50_000):
            deep = [deep]
        crafted(runs, tmp_path, "generator", lambda c: c.update(extra=deep))

    limit = sys.getrecursionlimit()
    size = threading.stack_size(1 << 29)
    try:
        thread = threading.Thread(target=build)
        thread.start()
        thread.join()
    finally:
        threading.stack_size(size)
        sys.setrecursionlimit(limit)
    out = tmp_path / "avg.ckpt"
    says = error(invoke("average", runs["generator"], tmp_path / "crafted.ckpt", "--out", out))
    assert says == f"Error: {out}: not saved: it would hold data nested too deeply to write"
    assert not out.exists()


def test_a_pipe_given_as_a_checkpoint_is_refused_without_waiting(runs, tmp_path):
    import os

    os.mkfifo(tmp_path / "fifo.ckpt")
    says = error(invoke("info", tmp_path / "fifo.ckpt"))
    assert says == f"Error: {tmp_path / 'fifo.ckpt'}: not a regular file, so not a checkpoint"


def _set(key, value):
    return lambda ckpt: ckpt.__setitem__(key, value)


def _weights(key, value):
    return lambda ckpt: ckpt["model_state"].__setitem__(key, value)


@pytest.mark.parametrize(
    "damage, says",
    [
        (
            _set("rng", {}),
            "its training state is damaged, so the run cannot resume from it ('cpu')",
        ),
        (_set("optimizer", {}), "its training state is damaged"),
        (_set("task_state", {"hidden": [7]}), "task_state's hidden is not the lstm's state"),
        (lambda c: c.update(rng=[c["rng"]], task_state=[]), "its training state is damaged"),
        (lambda c: c.pop("tokenizer_config"), "holds no tokenizer_config to resume with"),
        (_weights("out.bias", [0.0] * 3), "the weights do not match the model config"),
        (lambda c: c["model_config"].update(hidden_size=30000), "do not match the model config"),
    ],
)
def test_resuming_a_damaged_last_checkpoint_is_one_line(runs, tmp_path, damage, says):
    """The resume state is read only by a resumed run; the model it describes is checked
    against the weights before it is built (a crafted size is never allocated)."""
    import shutil

    import torch

    run = tmp_path / "run"
    shutil.copytree(runs["generator"], run)
    ckpt = torch.load(run / "last.ckpt", weights_only=True)
    damage(ckpt)
    for key in ("task_state", "model_state"):  # lists stand for tensors in the table
        for name, value in ckpt[key].items() if isinstance(ckpt[key], dict) else ():
            ckpt[key][name] = torch.tensor(value) if isinstance(value, list) else value
    torch.save(ckpt, run / "last.ckpt")
    before = (run / "last.ckpt").read_bytes()
    line = error(invoke(*train_args(runs, "generator", run, "--resume", "--max-steps", 4)))
    assert line.startswith(f"Error: {run / 'last.ckpt'}: ") and says in line, line
    assert (run / "last.ckpt").read_bytes() == before  # nothing of the run is touched


def test_library_values_out_of_range_are_config_errors(runs):
    """The command line bounds these with its option types; the library checks them."""
    import seqtool
    from seqtool.errors import ConfigError

    generator = seqtool.load(runs["generator"], device="cpu")
    translator = seqtool.load(runs["translator"], device="cpu")
    classifier = seqtool.load(runs["classifier"], device="cpu")
    calls = [
        (lambda: generator.generate("a", seed=2**64), "seed 18446744073709551616 must be in"),
        (lambda: list(generator.stream("a", seed=-1)), "seed -1 must be in [0, 2**63)"),
        (lambda: generator.generate("a", length=10**12), "length must be in [1, 2147483647]"),
        (lambda: translator.translate("ein 1", beam_size=10**30), "beam_size must be in [1, "),
        (lambda: classifier.evaluate([("good 1", "pos")], batch_size=-1), "batch_size must be"),
        (lambda: seqtool.load(runs["generator"], device="CPU"), "device 'CPU': give auto, cpu"),
        (lambda: seqtool.load(runs["generator"], device="meta"), "device 'meta': give auto"),
        (lambda: seqtool.load(runs["generator"], threads=1.5), "threads 1.5: give a whole number"),
        (lambda: generator.neighbours("a", top_k=-1), "top_k -1: give 1 or more"),
        (lambda: translator.neighbours("e", top_k=0), "top_k 0: give 1 or more"),
        (lambda: generator.inspect("abc", top_k=-1), "top_k -1: give 0 (none) or more"),
    ]
    for call, says in calls:
        with pytest.raises(ConfigError) as caught:
            call()
        assert str(caught.value).startswith(says), str(caught.value)


def test_a_label_of_one_line_is_not_held_out(runs, tmp_path):
    """Without --valid a random tenth is held out; a label whose every line it drew
    could not be learned, and its validation lines were an error (seeds 0-2 of this
    data each drew one)."""
    data = tmp_path / "rare.tsv"
    data.write_text((runs["classifier"].parent / "labels.tsv").read_text()
                    + "".join(f"rare{i}\tsomething {i}\n" for i in range(10)))  # fmt: skip
    backs = []
    for seed in (0, 1, 2):
        result = invoke("train", "classifier", "--train", data, "--out", tmp_path / str(seed),
                        "--max-steps", 1, *SMALL, "--ensemble", 1, "--seed", seed)  # fmt: skip
        assert result.exit_code == 0, result.output
        held = re.search(r"random 10% of \S+ \((\d+) lines(; (\d+) put back)?", result.stderr)
        assert held, result.stderr
        assert int(held[1]) + int(held[3] or 0) == 5  # a tenth of 50 drawn
        backs.append(int(held[3] or 0))
    assert any(backs)


def test_escape_sequences_in_the_training_data_are_shown_not_sent(runs, tmp_path):
    """The translations shown at each evaluation are the data's text."""
    data = tmp_path / "pairs.tsv"
    data.write_text("".join(f"ein \x1b[31m{i}\tone \x1b]0;x\x07{i}\n" for i in range(20)))
    result = invoke(*train_args(runs, "translator", tmp_path / "run", "--max-steps", 2,
                                "--train", data))  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "src ein \\x1b[31m" in result.stderr and "\\x1b]0;x\\x07" in result.stderr
    assert "\x1b" not in result.stderr and "\x07" not in result.stderr


def test_a_config_from_a_pipe_is_read_once(runs, tmp_path):
    """`seqtool train --config <(...)` read the pipe for the task, then found it empty."""
    import shlex
    import subprocess
    import sys

    config = tmp_path / "config.yaml"
    config.write_text(f"task: generator\ntrain: {runs['generator'].parent / 'text.txt'}\n"
                      + "".join(f"{k}: {v}\n" for k, v in zip(TINY[::2], TINY[1::2], strict=True)
                                ).replace("--", "") + "max-steps: 1\n")  # fmt: skip
    python, out = shlex.quote(sys.executable), shlex.quote(str(tmp_path / "run"))
    command = f"{python} -m seqtool train --config <(cat {shlex.quote(str(config))}) --out {out}"
    done = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "run" / "best.ckpt").exists()


def test_true_in_a_config_is_no_number(runs, tmp_path):
    """click read YAML's true as 1: a model of one unit."""
    config = tmp_path / "config.yaml"
    config.write_text("hidden-size: true\n")
    result = invoke("train", "generator", "--config", config, "--train", "x", "--out", "y")
    assert error(result) == f"Error: {config}: hidden-size is True; give a value"


@pytest.mark.parametrize("command", ["classify", "translate", "inspect"])
def test_a_file_and_text_together_are_a_usage_error(runs, command):
    """The file was left unread without a word."""
    run = runs[{"classify": "classifier", "translate": "translator"}.get(command, "generator")]
    data = runs["classifier"].parent / "labels.tsv"
    result = invoke(command, run, data, "--text", "good 1")
    assert result.exit_code == 2 and f"({data}), not both" in result.stderr


def test_results_into_a_file_keep_whole_values_whatever_columns_says(runs, monkeypatch):
    """rich sized the tables to $COLUMNS even into a file: 0 printed nothing, 24 cut."""
    import importlib

    from seqtool import ui

    for columns in ("0", "24"):
        monkeypatch.setenv("COLUMNS", columns)
        importlib.reload(ui)
        result = invoke("info", runs["generator"])
        assert result.exit_code == 0 and str(runs["generator"] / "best.ckpt") in result.stdout
    monkeypatch.delenv("COLUMNS")
    importlib.reload(ui)


@pytest.mark.parametrize("length", [251, 255])
def test_a_file_name_of_up_to_255_bytes_is_written(runs, tmp_path, length):
    """The temporary name adds `.` and `.tmp`: a legal name was refused as too long."""
    out = tmp_path / ("a" * (length - 5) + ".ckpt")
    result = invoke("average", runs["generator"], runs["generator"] / "last.ckpt", "--out", out)
    assert result.exit_code == 0, result.output
    html = tmp_path / ("b" * (length - 5) + ".html")
    result = invoke("inspect", runs["generator"], "--text", "abc", "--html", html)
    assert result.exit_code == 0, result.output
    assert out.exists() and html.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, html.name])


def test_running_out_of_memory_in_python_code_is_one_line(runs, run_cli, monkeypatch):
    """A MemoryError from Python code (torch's own allocations are caught where they
    happen, naming the options that size them) is one line and exit code 1."""
    import seqtool.inference

    def too_much(*args, **kwargs):
        raise MemoryError

    monkeypatch.setattr(seqtool.inference, "info", too_much)
    result = run_cli("info", runs["generator"])
    assert (result.exit_code, result.stderr) == (
        1,
        "Error: out of memory: the input or the sizes given need more than this machine has\n",
    )
