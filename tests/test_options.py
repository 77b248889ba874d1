"""One path from an option to the library: `seqtool.train` and the command line give
the same run, config files repeat a run, old option names still work (with a warning),
and an inference method refuses another task's options with one message."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import seqtool
from seqtool.cli import cli
from tests.conftest import TEXT, TINY
from tests.test_classifier import sentiment_lines
from tests.test_cli import error_line
from tests.test_translator import TINY as TINY_TRANSLATOR
from tests.test_translator import write_dates


def run_cli(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def as_keywords(args: list) -> dict:
    """--hidden-size 8 --no-bidirectional -> {"hidden_size": 8, "bidirectional": False}"""
    found, i = {}, 0
    while i < len(args):
        name = str(args[i])[2:].replace("-", "_")
        if name.startswith("no_"):
            found[name[3:]] = False
            i += 1
        else:
            value = str(args[i + 1])
            found[name] = int(value) if value.isdigit() else value
            i += 2
    return found


def weights(run: Path, name: str = "best.ckpt") -> dict[str, torch.Tensor]:
    return torch.load(run / name, weights_only=True)["model_state"]


def same_weights(a: Path, b: Path, name: str = "best.ckpt") -> bool:
    first, second = weights(a, name), weights(b, name)
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, list]:
    """The data and options of a tiny run of each task."""
    root = tmp_path_factory.mktemp("options")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT * 3)
    train, valid = root / "train.tsv", root / "valid.tsv"
    train.write_text("\n".join(sentiment_lines(200, 0)) + "\n")
    valid.write_text("\n".join(sentiment_lines(50, 1)) + "\n")
    dates = write_dates(root)
    return {
        "generator": ["--train", corpus, "--max-steps", 6, *TINY],
        "classifier": [
            "--train", train, "--valid", valid, "--max-steps", 6, "--ensemble", 2,
            "--hidden-size", 8, "--embedding-size", 8, "--batch-size", 8, "--eval-every", 3,
        ],
        "translator": [
            "--train", dates[0], "--valid", dates[1], "--max-steps", 6, *TINY_TRANSLATOR,
        ],
    }  # fmt: skip


@pytest.mark.parametrize("task", ["generator", "classifier", "translator"])
def test_the_python_api_and_the_command_line_train_the_same_model(task, data, tmp_path):
    result = run_cli("train", task, *data[task], "--out", tmp_path / "cli")
    assert result.exit_code == 0, result.output
    run = seqtool.train(task, **as_keywords(data[task]), out=tmp_path / "api")
    assert run.run_dir == tmp_path / "api" and run.progress.step == 6
    assert same_weights(tmp_path / "cli", tmp_path / "api")
    cli_info, api_info = seqtool.info(tmp_path / "cli"), seqtool.info(tmp_path / "api")
    for key in ("model_config", "train_config", "tokenizer_config"):
        assert cli_info[key] == api_info[key]


@pytest.mark.parametrize("task", ["generator", "classifier", "translator"])
def test_config_yaml_repeats_the_run(task, data, tmp_path):
    first = tmp_path / "first"
    assert run_cli("train", task, *data[task], "--out", first, "-q").exit_code == 0
    written = (first / "config.yaml").read_text()
    assert written.startswith(f"# seqtool train {task} ") and f"task: {task}\n" in written
    again = run_cli("train", "--config", first / "config.yaml", "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert same_weights(first, tmp_path / "again")


@pytest.mark.parametrize("name", ["a\nb.txt", "a\rb.txt", "a\u2028b.txt", "a\x1b[31mb.txt"])
def test_config_yaml_repeats_a_run_whose_file_name_holds_a_control_character(name, data, tmp_path):
    """A line break in a file name ended config.yaml's comment, and YAML refuses a
    control character even in a comment: the file no longer read back."""
    corpus = tmp_path / name
    corpus.write_text(TEXT * 3)
    first = tmp_path / "first"
    result = run_cli("train", "generator", "--train", corpus, *data["generator"][2:],
                     "--out", first, "-q")  # fmt: skip
    assert result.exit_code == 0, result.output
    again = run_cli("train", "--config", first / "config.yaml", "--out", tmp_path / "again")
    assert again.exit_code == 0, again.output
    assert same_weights(first, tmp_path / "again")


def test_the_command_line_wins_over_the_config_file(data, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("task: generator\nhidden-size: 12\nmax_steps: 3\nseed: 4\n")
    args = data["generator"][:2]  # --train only
    result = run_cli("train", "generator", *args, "--config", config, "--seed", 5,
                     "--out", tmp_path / "run", *TINY[2:])  # fmt: skip
    assert result.exit_code == 0, result.output
    info = seqtool.info(tmp_path / "run")
    assert info["model_config"]["hidden_size"] == 12 and info["steps"] == 3
    assert info["train_config"]["seed"] == 5


def test_a_toml_config(data, tmp_path):
    config = tmp_path / "run.toml"
    corpus = data["generator"][1]
    config.write_text(f'task = "generator"\ntrain = "{corpus}"\nhidden_size = 8\nmax_steps = 2\n')
    result = run_cli("train", "--config", config, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert seqtool.info(tmp_path / "run")["steps"] == 2


BOMB = (
    "["
    + ", ".join(
        ['&a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
        + [f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 10)]
    )
    + "]"
)


@pytest.mark.parametrize(
    "text, message",
    [
        ("task: generator\nhiden-size: 8\n", "'hiden_size' is not an option of train generator"),
        ("task: generator\ndropout: 2\n", "Invalid value for '--dropout'"),
        ("task: classifier\n", "is a config of a classifier, not of a generator"),
        ("task: generator\nhidden-size: [8\n", "cannot read the config"),
        ("- a list\n", "a config is a mapping of option names to values (YAML; TOML in a "),
        ("task: generator\nresume: true\n", "'resume' is not an option of train generator"),
        ("task: generator\nhidden-size: [8, 16]\n", "hidden-size is a list; give one value"),
        ("task: generator\nhidden-size: 8.5\n", "hidden-size is 8.5; give a whole number"),
        ("task: generator\ndevice: {a: 1}\n", "device is a dict; give one value"),
        ("task: [generator]\n", "task is a list; give generator"),
        # aliases: a 400-byte file whose value is a billion strings, never to be printed
        (f"task: generator\nseed: {BOMB}\n", "seed is a list; give one value"),
        (f"task: generator\nprecision: {BOMB}\n", "precision is a list; give one value"),
    ],
)
def test_a_bad_config_is_one_error_line(text, message, data, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text(text)
    result = run_cli(
        "train", "generator", "--config", config, *data["generator"], "--out", tmp_path / "run"
    )
    assert result.exit_code in (1, 2) and message in result.stderr.strip().splitlines()[-1]
    assert not (tmp_path / "run").exists()


def test_a_config_from_a_pipe_is_read_and_one_too_large_refused(data, tmp_path):
    """`--config <(...)` was refused as "not a file"; a corpus given as the config by
    mistake was read whole and parsed as YAML."""
    import os
    import threading

    fifo = tmp_path / "config.pipe"
    os.mkfifo(fifo)
    writer = threading.Thread(target=lambda: fifo.write_text("seed: 7\n"), daemon=True)
    writer.start()
    result = run_cli("train", "generator", "--config", fifo, *data["generator"],
                     "--out", tmp_path / "run", "-q")  # fmt: skip
    writer.join(60)
    assert result.exit_code == 0, result.output
    assert seqtool.info(tmp_path / "run")["train_config"]["seed"] == 7
    # a pipe has no .toml name: TOML through it is read as YAML, and the error says so
    writer = threading.Thread(target=lambda: fifo.write_text("seed = 7\n"), daemon=True)
    writer.start()
    result = run_cli("train", "generator", "--config", fifo, *data["generator"],
                     "--out", tmp_path / "run3")  # fmt: skip
    writer.join(60)
    assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1].endswith(
        "(YAML; TOML in a file whose name ends in .toml)"
    )
    big = tmp_path / "corpus.yaml"
    big.write_text("a: 1\n" * 300_000)
    for config in (big, "/dev/zero"):
        result = run_cli("train", "generator", "--config", config, *data["generator"],
                         "--out", tmp_path / "run2")  # fmt: skip
        assert result.exit_code == 1 and result.stderr.strip().splitlines()[-1] == (
            f"Error: {config}: more than 1,048,576 bytes, too large for a config of option "
            "names and values; is it the right file?"
        )
    assert not (tmp_path / "run2").exists()


def test_a_config_without_a_task_names_the_fix(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("hidden-size: 8\n")
    result = run_cli("train", "--config", config)
    assert "no task in the config" in error_line(result)


def test_force_moves_the_old_config_aside_with_the_run(data, tmp_path):
    out = tmp_path / "run"
    assert run_cli("train", "generator", *data["generator"], "--out", out).exit_code == 0
    again = run_cli("train", "generator", *data["generator"], "--seed", 3, "--out", out, "--force")
    assert again.exit_code == 0, again.output
    assert "seed: 3" in (out / "config.yaml").read_text()
    assert not (out / ".replaced").exists()


def test_old_option_names_still_work_with_a_warning(data, tmp_path):
    result = run_cli(
        "train", "generator", *data["generator"], "--tie-weights", "--out", tmp_path / "a"
    )
    assert result.exit_code == 0, result.output
    assert "Warning: --tie-weights is deprecated and will be removed; use --tie-embeddings" in (
        result.stderr
    )
    assert seqtool.info(tmp_path / "a")["model_config"]["tie_embeddings"] is True
    top = run_cli("inspect", tmp_path / "a", "--text", "the", "--top", 2, "--json")
    assert top.exit_code == 0 and "use --top-k" in top.stderr
    near = run_cli("neighbours", tmp_path / "a", "e", "--k", 2)
    assert near.exit_code == 0 and len(near.stdout.splitlines()) == 2
    with pytest.warns(DeprecationWarning, match="k= is deprecated; use top_k="):
        assert len(seqtool.load(tmp_path / "a").neighbours("e", k=3)) == 3
    with pytest.warns(DeprecationWarning, match="tie_weights= is deprecated"):
        seqtool.train("generator", **as_keywords(data["generator"]), tie_weights=True,
                      out=tmp_path / "b")  # fmt: skip
    assert same_weights(tmp_path / "a", tmp_path / "b")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"hidden_sise": 8}, "train generator has no option 'hidden_sise'"),
        ({"hidden_size": 0}, "hidden_size=0: 0 is not in the range 1<=x<=2147483647."),
        ({"max_time": "soon"}, "max_time='soon': cannot read 'soon' as a duration"),
        ({"dropout": float("nan")}, "dropout=nan: nan is not a finite number."),
        ({"cell": "lstn"}, "cell='lstn': 'lstn' is not one of 'lstm', 'gru', 'rnn'."),
    ],
)
def test_the_python_api_checks_options_as_the_command_line_does(options, message, tmp_path):
    with pytest.raises(seqtool.ConfigError) as err:
        seqtool.train("generator", train="x.txt", out=tmp_path / "run", **options)
    assert str(err.value).startswith(message)
    assert not (tmp_path / "run").exists()


def test_the_python_api_needs_train_and_out_and_a_task():
    with pytest.raises(seqtool.ConfigError, match="train generator needs train="):
        seqtool.train("generator", out="x")
    with pytest.raises(seqtool.ConfigError, match="unknown task 'generater'"):
        seqtool.train("generater", train="x", out="y")


@pytest.fixture(scope="module")
def generator_run(data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("gen") / "run"
    assert run_cli("train", "generator", *data["generator"], "--out", out).exit_code == 0
    return out


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "RUN", "--data", "CORPUS", "--threshold", "0.3"], "--threshold"),
        (["evaluate", "RUN", "--data", "CORPUS", "--beam-size", "2"], "--beam-size"),
        (["neighbours", "RUN", "e", "--side", "target"], "--side"),
    ],
)
def test_an_option_of_another_task_is_refused_by_the_model(args, message, generator_run, data):
    args = [generator_run if a == "RUN" else data["generator"][1] if a == "CORPUS" else a
            for a in args]  # fmt: skip
    assert error_line(run_cli(*args)) == f"Error: {message}: a generator does not take it"
    model = seqtool.load(generator_run)
    with pytest.raises(seqtool.ConfigError, match="--threshold: a generator does not take it"):
        model.evaluate(data["generator"][1], threshold=0.3)


def test_evaluate_takes_lists_as_well_as_files(generator_run, data):
    model = seqtool.load(generator_run)
    corpus = Path(data["generator"][1])
    lines = corpus.read_text().splitlines()
    assert model.evaluate(lines) == model.evaluate(corpus)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(seqtool.DataError, match="evaluate: no text given"):
            model.evaluate([])


def test_a_resumed_run_validates_on_what_it_started_with(data, tmp_path):
    """Without --valid a run holds part of --train out: a resume that forgot --valid
    would train on other data, so it takes the stored one; another one is refused."""
    corpus = data["generator"][1]
    valid = tmp_path / "valid.txt"
    valid.write_text(TEXT)
    # a constant schedule: a 6-step run resumed to 12 steps is then a 12-step run
    base = ["train", "generator", *data["generator"][:2], *TINY, "--schedule", "constant"]
    whole = run_cli(*base, "--valid", valid, "--max-steps", 12, "--out", tmp_path / "whole")
    assert whole.exit_code == 0, whole.output
    half = run_cli(*base, "--valid", valid, "--max-steps", 6, "--out", tmp_path / "parts")
    assert half.exit_code == 0, half.output
    rest = run_cli(*base, "--max-steps", 12, "--out", tmp_path / "parts", "--resume")
    assert rest.exit_code == 0, rest.output
    assert f"validating on {valid}, as the run started" in rest.stderr
    assert same_weights(tmp_path / "whole", tmp_path / "parts", "last.ckpt")
    held = run_cli(*base, "--max-steps", 6, "--out", tmp_path / "held")
    assert held.exit_code == 0, held.output
    other = run_cli(*base, "--valid", valid, "--max-steps", 9, "--out", tmp_path / "held",
                    "--resume")  # fmt: skip
    assert error_line(other) == (
        f"Error: --valid {valid} is not what the run in {tmp_path / 'held'} started with "
        "(none: part of --train held out); resume with the same, or start over with --force"
    )
    assert corpus  # the training file is the same throughout
