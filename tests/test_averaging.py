import json
import shutil
import subprocess
import sys

import pytest
import torch

import seqtool
from seqtool import averaging, checkpoint
from seqtool.config import TokenizerConfig, TrainConfig
from seqtool.errors import CheckpointError, TrainingInterrupted
from seqtool.tasks import TrainRequest, translator
from seqtool.training import Trainer
from tests.test_cli import error_line
from tests.test_training import StopAt
from tests.test_translator import TINY, date_lines, write_dates


def copies(source, tmp_path, count, change=lambda ckpt, i: None):
    """`count` checkpoints of one model with different weights: copies of `source` with
    noise added to each tensor, then `change(ckpt, i)` applied to the i-th."""
    paths = []
    for i in range(count):
        ckpt = checkpoint.load(source)
        state = ckpt["model_state"]
        for key, tensor in state.items():
            state[key] = tensor + torch.randn_like(tensor) * (i + 1)
        change(ckpt, i)
        del ckpt["path"]
        paths.append(tmp_path / f"c{i}.ckpt")
        checkpoint.save(paths[-1], ckpt)
    return paths


def mean_of(paths):
    states = [checkpoint.load(p)["model_state"] for p in paths]
    return {
        key: torch.stack([s[key].double() for s in states]).mean(0).to(tensor.dtype)
        for key, tensor in states[-1].items()
        if tensor.is_floating_point()
    }


@pytest.fixture(scope="module")
def averaged_run(tmp_path_factory):
    """A translator trained with --average-last 2: evaluations at steps 2, 4 and 6."""
    from click.testing import CliRunner

    from seqtool.cli import cli

    tmp = tmp_path_factory.mktemp("averaged")
    train, valid = write_dates(tmp)
    args = ["train", "translator", "--train", train, "--valid", valid, "--out", tmp / "run"]
    args += ["--max-steps", 6, *TINY, "--eval-every", 2, "--average-last", 2]
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return tmp / "run", valid, result.stderr


# -- the mean -----------------------------------------------------------------------------


def test_average_is_the_mean_of_the_weights(trained, tmp_path):
    def count(ckpt, i):  # an integer buffer, as BatchNorm's num_batches_tracked
        ckpt["model_state"]["counter"] = torch.tensor([i], dtype=torch.long)

    paths = copies(trained / "best.ckpt", tmp_path, 3, count)
    payload = averaging.average(paths)
    state = payload["model_state"]
    expected = mean_of(paths)
    assert set(state) == set(expected) | {"counter"}
    for key, value in expected.items():
        assert state[key].dtype == value.dtype
        torch.testing.assert_close(state[key], value, rtol=0, atol=0)
    last = checkpoint.load(paths[-1])
    assert torch.equal(state["counter"], last["model_state"]["counter"])  # integers: the last's
    assert payload["averaged"] == [str(p) for p in paths]
    assert payload["model_config"] == last["model_config"]
    assert payload["progress"] == last["progress"]


def test_written_average_loads_and_runs(trained, tmp_path, run_cli):
    paths = copies(trained / "best.ckpt", tmp_path, 2)
    out = tmp_path / "mean.ckpt"
    result = run_cli("average", *paths, "--out", out)
    assert result.exit_code == 0, result.output
    assert f"saved {out}: the mean of 2 checkpoints" in result.stderr
    written = checkpoint.load(out)
    # what only last.ckpt holds for --resume is not carried into the average
    assert not {"optimizer", "scaler", "rng", "task_state"} & set(written)
    assert written["averaged"] == [str(p) for p in paths]
    model = seqtool.load(out, device="cpu")
    assert model.task == "generator"
    assert model.info["averaged"] == [str(p) for p in paths]
    assert json.loads(run_cli("info", out, "--json").stdout)["averaged"] == [str(p) for p in paths]
    shown = run_cli("info", out).stdout
    assert "averaged from" in shown  # one row per file (long paths wrap in the table)


def test_a_run_directory_stands_for_its_best_checkpoint(trained, tmp_path):
    payload = averaging.average([trained, trained / "last.ckpt"])
    assert payload["averaged"] == [str(trained / "best.ckpt"), str(trained / "last.ckpt")]


def test_help_answers_without_torch():
    code = (
        "import sys\n"
        "from seqtool.cli import cli\n"
        "for args in (['average'], ['train', 'translator']):\n"
        "    try:\n"
        "        cli([*args, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "average [OPTIONS] CKPT CKPT..." in out.stdout
    assert "seqtool average runs/de-en/recent/*.ckpt --out" in out.stdout
    assert "--average-last N" in out.stdout
    assert out.stdout.strip().splitlines()[-1] == "False"


# -- refused ------------------------------------------------------------------------------


def test_mismatched_shapes_are_refused(trained, tmp_path, run_cli):
    key = next(iter(checkpoint.load(trained / "best.ckpt")["model_state"]))

    def reshape(ckpt, i):
        if i == 1:
            ckpt["model_state"][key] = torch.zeros(3, 3)

    first, other = copies(trained / "best.ckpt", tmp_path, 2, reshape)
    shape = list(checkpoint.load(first)["model_state"][key].shape)
    out = tmp_path / "mean.ckpt"
    result = run_cli("average", first, other, "--out", out)
    assert error_line(result) == (
        f"Error: {other} cannot be averaged with {first}: weight {key} shape [3, 3] vs "
        f"{shape}; average checkpoints of one model (the same task, configs and tokenizers)"
    )
    assert result.stderr.count("\n") == 1
    assert not out.exists()


def test_another_model_config_is_refused(trained, tmp_path, run_cli):
    def grow(ckpt, i):
        ckpt["model_config"]["hidden_size"] += i

    first, other = copies(trained / "best.ckpt", tmp_path, 2, grow)
    hidden = checkpoint.load(first)["model_config"]["hidden_size"]
    result = run_cli("average", first, other, "--out", tmp_path / "mean.ckpt")
    assert f"cannot be averaged with {first}: hidden_size {hidden + 1} vs {hidden};" in (
        error_line(result)
    )


def test_another_task_is_refused(trained, averaged_run, tmp_path, run_cli):
    run, _, _ = averaged_run
    result = run_cli("average", trained, run, "--out", tmp_path / "mean.ckpt")
    assert error_line(result) == (
        f"Error: {run / 'best.ckpt'} cannot be averaged with {trained / 'best.ckpt'}: task "
        "translator vs generator; average checkpoints of one model (the same task, configs "
        "and tokenizers)"
    )


def test_another_tokenizer_is_refused(trained, tmp_path):
    def retokenize(ckpt, i):
        ckpt["tokenizers"]["text"] += b"\0" * i

    paths = copies(trained / "best.ckpt", tmp_path, 2, retokenize)
    with pytest.raises(CheckpointError, match="tokenizer text differs"):
        averaging.average(paths)


def test_one_checkpoint_or_an_input_as_output_is_refused(trained, run_cli):
    result = run_cli("average", trained, "--out", trained / "mean.ckpt")
    assert error_line(result) == "Error: averaging needs two checkpoints or more; got 1"
    best = trained / "best.ckpt"
    before = best.read_bytes()
    result = run_cli("average", trained, trained / "last.ckpt", "--out", best)
    assert error_line(result) == (
        f"Error: {best} is one of the checkpoints to average; give another --out"
    )
    assert best.read_bytes() == before


def test_an_existing_output_is_replaced_only_with_force(trained, run_cli, tmp_path):
    """Another run's best.ckpt given as --out was replaced without a word."""
    victim = tmp_path / "other" / "best.ckpt"
    victim.parent.mkdir()
    victim.write_bytes(b"another run's weights")
    args = ("average", trained / "best.ckpt", trained / "last.ckpt", "--out", victim)
    assert error_line(run_cli(*args)) == (
        f"Error: {victim} already exists; give --force to replace it, or another --out"
    )
    assert victim.read_bytes() == b"another run's weights"
    result = run_cli(*args, "--force")
    assert result.exit_code == 0, result.output
    assert checkpoint.load(victim)["averaged"]


# -- --average-last -----------------------------------------------------------------------


def test_average_last_writes_an_averaged_checkpoint(averaged_run, run_cli):
    run, valid, stderr = averaged_run
    kept = sorted((run / "recent").glob("*.ckpt"))
    assert [checkpoint.load(p)["progress"]["step"] for p in kept] == [4, 6]
    averaged = checkpoint.load(run / "averaged.ckpt")
    assert averaged["averaged"] == [str(p) for p in kept]
    for key, value in mean_of(kept).items():
        torch.testing.assert_close(averaged["model_state"][key], value, rtol=0, atol=0)
    line = next(line for line in stderr.splitlines() if "averaged.ckpt" in line)
    assert line.startswith(f"saved {run / 'averaged.ckpt'}: the mean of the last 2 evaluations")
    assert f"valid bleu {averaged['metrics']['bleu']:.4f}, best.ckpt " in line
    result = run_cli("translate", run / "averaged.ckpt", input="3 March 1987\n1.2.1999\n")
    assert result.exit_code == 0, result.output
    assert len(result.stdout.split("\n")) == 3
    result = run_cli("evaluate", run / "averaged.ckpt", "--data", valid, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["sentences"] == 20


def test_force_clears_the_kept_weights(averaged_run, tmp_path, run_cli):
    run, valid, _ = averaged_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    result = run_cli(
        "train", "translator", "--train", valid, "--valid", valid, "--out", copy, "--force",
        "--max-steps", 2, *TINY, "--eval-every", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert not (copy / "recent").exists() and not (copy / "averaged.ckpt").exists()


def test_resumed_run_averages_the_weights_kept_before_it_stopped(tmp_path):
    """Stopped at step 5 (weights of steps 2 and 4 kept), resumed to 6: the same
    averaged.ckpt as an uninterrupted run, the mean of steps 4 and 6."""
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    train.write_text("".join(date_lines(200, 0)))
    valid.write_text("".join(date_lines(10, 1)))
    cfg = TrainConfig(
        batch_size=16, batch_tokens=200, max_steps=6, eval_every=2, device="cpu",
        precision="fp32", average_last=2,
    )  # fmt: skip
    model = {"embedding_size": 8, "hidden_size": 8}

    def task(run_dir, resume=None):
        request = TrainRequest(
            str(train), str(valid), run_dir, TokenizerConfig("char"), model, cfg, resume
        )
        return translator.prepare(request, lambda message: None)

    Trainer(task(tmp_path / "a"), cfg, tmp_path / "a").fit()
    first = Trainer(task(tmp_path / "b"), cfg, tmp_path / "b", callbacks=StopAt(5))
    with pytest.raises(TrainingInterrupted):
        first.fit()
    assert not (tmp_path / "b" / "averaged.ckpt").exists()
    ckpt = checkpoint.load(tmp_path / "b" / "last.ckpt")
    Trainer(task(tmp_path / "b", ckpt), cfg, tmp_path / "b", resume=ckpt).fit()
    whole, resumed = (checkpoint.load(tmp_path / r / "averaged.ckpt") for r in ("a", "b"))
    assert [checkpoint.load(p)["progress"]["step"] for p in resumed["averaged"]] == [4, 6]
    for key, value in whole["model_state"].items():
        torch.testing.assert_close(resumed["model_state"][key], value, rtol=0, atol=0)


def test_generators_and_classifiers_average_their_last_evaluations(corpus, tmp_path, run_cli):
    """--average-last is a training option of every task: a generator's and an ensemble
    classifier's averaged.ckpt is the mean of the kept weights, and their commands run it."""
    from tests.conftest import TINY as GEN_TINY
    from tests.test_classifier import sentiment_lines, train_classifier

    gen = tmp_path / "gen"
    result = run_cli(
        "train", "generator", "--train", corpus, "--out", gen, "--max-steps", 10, *GEN_TINY,
        "--average-last", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    train.write_text("\n".join(sentiment_lines(100, 0)) + "\n")
    valid.write_text("\n".join(sentiment_lines(20, 1)) + "\n")
    clf = tmp_path / "clf"
    result = train_classifier(
        run_cli, (train, valid), clf, "--max-steps", 10, "--eval-every", 5, "--ensemble", 2,
        "--average-last", 2,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    for run in (gen, clf):
        kept = sorted((run / "recent").glob("*.ckpt"))
        assert [checkpoint.load(p)["progress"]["step"] for p in kept] == [5, 10]
        averaged = checkpoint.load(run / "averaged.ckpt")
        for key, value in mean_of(kept).items():
            torch.testing.assert_close(averaged["model_state"][key], value, rtol=0, atol=0)
    result = run_cli("generate", gen / "averaged.ckpt", "--length", 20, "--seed", 1)
    assert result.exit_code == 0 and len(result.stdout) >= 20, result.output
    result = run_cli("classify", clf / "averaged.ckpt", input="good film\n")
    assert result.exit_code == 0 and result.stdout.split()[0] in ("pos", "neg"), result.output
