import json
import re

import pytest
import torch

from seqtool.config import TokenizerConfig, TrainConfig
from seqtool.errors import TrainingError, TrainingInterrupted
from seqtool.tasks import TrainRequest
from seqtool.tasks.generator import prepare
from seqtool.training import Trainer

MODEL = {
    "cell": "lstm",
    "embedding_size": 8,
    "hidden_size": 16,
    "num_layers": 2,
    "dropout": 0.1,
    "tie_embeddings": False,
}


def make_task(corpus, run_dir, config, resume=None, model=MODEL):
    request = TrainRequest(
        str(corpus), None, run_dir, TokenizerConfig("char"), model, config, resume
    )
    return prepare(request, lambda message: None)


def config(**overrides):
    base = dict(
        batch_size=4,
        seq_len=16,
        eval_every=5,
        log_every=5,
        warmup_steps=3,
        max_steps=20,
        precision="fp32",
        device="cpu",
    )
    return TrainConfig(**{**base, **overrides})


class StopAt:
    def __init__(self, step):
        self.step = step

    def on_step(self, trainer):
        if trainer.progress.step == self.step:
            trainer.request_stop()


def test_loss_falls_and_files_are_written(corpus, tmp_path):
    cfg = config(max_steps=60, lr=1e-2)
    progress = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if r.get("split") == "valid"]
    logs = [r for r in records if "split" not in r]
    assert progress.step == 60 and len(evals) == 12 and len(logs) == 12
    assert logs[-1]["loss"] < logs[0]["loss"] - 0.4  # from the unigram start
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert {"loss", "perplexity", "bits_per_char"} <= evals[0].keys()
    assert (tmp_path / "best.ckpt").exists() and (tmp_path / "last.ckpt").exists()


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_interrupted_and_resumed_run_equals_uninterrupted_run(corpus, tmp_path, cell):
    from seqtool import checkpoint

    cfg = config(max_steps=80, eval_every=10)
    model = {**MODEL, "cell": cell}
    whole = Trainer(make_task(corpus, tmp_path / "a", cfg, model=model), cfg, tmp_path / "a")
    whole.fit()

    # stop at step 73: in the second epoch (66 batches each), mid-epoch (hidden state
    # carried) and between evaluations
    first = Trainer(
        make_task(corpus, tmp_path / "b", cfg, model=model),
        cfg,
        tmp_path / "b",
        callbacks=StopAt(73),
    )
    with pytest.raises(TrainingInterrupted, match="at step 73"):
        first.fit()
    ckpt = checkpoint.load(tmp_path / "b" / "last.ckpt")
    assert ckpt["progress"]["step"] == 73 and ckpt["progress"]["epoch"] == 1
    resumed = Trainer(
        make_task(corpus, tmp_path / "b", cfg, resume=ckpt), cfg, tmp_path / "b", resume=ckpt
    )
    resumed.fit()
    assert resumed.progress.step == 80
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


class Recorder:
    """The trained weights before the first step and after each."""

    def __init__(self):
        self.weights = []

    def on_start(self, trainer):
        self.on_step(trainer)

    def on_step(self, trainer):
        self.weights.append({k: v.clone() for k, v in trainer.model.named_parameters()})


def test_ema_validates_and_saves_the_moving_average(corpus, tmp_path):
    """With ema, checkpoints hold the average (its decay rising as Marian's does) and
    validation scores it; last.ckpt keeps the trained weights to resume from."""
    from seqtool import checkpoint

    cfg = config(max_steps=10, eval_every=10, lr=1e-2, ema=0.6)
    recorder = Recorder()
    trainer = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path, callbacks=recorder)
    trainer.fit()
    average = dict(recorder.weights[0])
    for step, weights in enumerate(recorder.weights[1:], start=1):
        decay = min(0.6, (step + 1) / (step + 10))
        average = {k: decay * v + (1 - decay) * weights[k] for k, v in average.items()}
    last = checkpoint.load(tmp_path / "last.ckpt")
    trained = dict(trainer.model.named_parameters())
    for name, value in average.items():
        torch.testing.assert_close(last["model_state"][name], value)
        torch.testing.assert_close(last["train_weights"][name], trained[name].detach())
    assert not torch.equal(last["model_state"]["out.weight"], last["train_weights"]["out.weight"])
    # the validation loss recorded is the average's: the same model scored again
    model = make_task(corpus, tmp_path / "again", cfg).model
    model.load_state_dict(last["model_state"])
    assert trainer._validate(model)["loss"] == pytest.approx(last["metrics"]["loss"], rel=1e-6)


def test_ema_saves_a_tied_weight_averaged_under_both_names(corpus, tmp_path):
    from seqtool import checkpoint

    cfg = config(max_steps=6, eval_every=6, lr=1e-2, ema=0.6)
    model = {**MODEL, "tie_embeddings": True}
    Trainer(make_task(corpus, tmp_path, cfg, model=model), cfg, tmp_path).fit()
    last = checkpoint.load(tmp_path / "last.ckpt")
    state, trained = last["model_state"], last["train_weights"]
    assert torch.equal(state["out.weight"], state["embedding.weight"])
    assert not torch.equal(state["out.weight"], trained["out.weight"])


def test_resuming_an_ema_run_needs_its_trained_weights(corpus, tmp_path):
    from seqtool import checkpoint
    from seqtool.errors import CheckpointError

    cfg = config(max_steps=5, ema=0.9)
    Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path).fit()
    ckpt = checkpoint.load(tmp_path / "last.ckpt")
    longer = config(max_steps=10, ema=0.9)
    for damage, message in (
        (lambda c: c.pop("train_weights"), "holds no train_weights to resume a run with --ema"),
        (lambda c: c["train_weights"].pop("out.weight"), "out.weight is missing"),
        (lambda c: c["train_weights"].update(x=torch.zeros(1)), "x is not in the model"),
    ):
        crafted = {**ckpt, "train_weights": dict(ckpt["train_weights"])}
        damage(crafted)
        with pytest.raises(CheckpointError, match=message):
            Trainer(make_task(corpus, tmp_path, longer, crafted), longer, tmp_path, resume=crafted)


def test_nan_loss_stops_with_an_error_and_keeps_the_checkpoint(corpus, tmp_path):
    cfg = config(max_steps=30, eval_every=5)
    trainer = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path)

    class Poison:
        def on_step(self, t):
            if t.progress.step == 12:
                with torch.no_grad():
                    t.model.out.bias.fill_(float("nan"))

    trainer.callbacks = Poison()
    saved = None
    with pytest.raises(TrainingError) as err:
        trainer.fit()
    assert str(err.value).startswith("the loss became nan at step 13; the last good checkpoint")
    saved = torch.load(tmp_path / "last.ckpt", weights_only=True)
    assert saved["progress"]["step"] == 10
    assert torch.isfinite(saved["model_state"]["out.bias"]).all()


def test_patience_stops_early(corpus, tmp_path):
    # a learning rate this small cannot improve the loss by much; lr 0 is refused, so
    # make every evaluation after the first count as worse by flipping the metric
    cfg = config(max_steps=100, eval_every=2, patience=2)
    task = make_task(corpus, tmp_path, cfg)
    task.higher_is_better = True  # loss falls, so "higher is better" never improves
    progress = Trainer(task, cfg, tmp_path).fit()
    assert progress.step == 6 and progress.best_step == 2


def test_time_budget_is_respected(corpus, tmp_path):
    cfg = config(max_steps=None, max_time=1.0, eval_every=1000)
    progress = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path).fit()
    assert 1.0 <= progress.elapsed < 5.0


def test_learning_rate_warms_up_then_decays(corpus, tmp_path):
    cfg = config(max_steps=100, warmup_steps=10, lr=1.0)
    trainer = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path)
    rates = []
    for step in range(100):
        trainer.progress.step = step
        rates.append(trainer.learning_rate())
    assert rates[0] == pytest.approx(0.1) and rates[9] == pytest.approx(1.0, rel=0.03)
    assert rates[-1] == pytest.approx(0.1, rel=0.01)
    assert all(a >= b for a, b in zip(rates[10:], rates[11:], strict=False))


def test_classifier_resume_equals_uninterrupted_run(tmp_path):
    from seqtool import checkpoint
    from seqtool.tasks import classifier
    from tests.test_classifier import sentiment_lines

    path = tmp_path / "train.tsv"
    path.write_text("\n".join(sentiment_lines(200, 0)) + "\n")
    cfg = config(max_steps=30, eval_every=10, batch_size=16)
    model = {"embedding_size": 8, "hidden_size": 8, "dropout": 0.2, "pooling": "attention"}

    def task(run_dir, resume=None):
        request = TrainRequest(
            str(path), None, run_dir, TokenizerConfig("unigram", 300), model, cfg, resume
        )
        return classifier.prepare(request, lambda message: None)

    whole = Trainer(task(tmp_path / "a"), cfg, tmp_path / "a")
    whole.fit()
    first = Trainer(task(tmp_path / "b"), cfg, tmp_path / "b", callbacks=StopAt(17))
    with pytest.raises(TrainingInterrupted):
        first.fit()
    ckpt = checkpoint.load(tmp_path / "b" / "last.ckpt")
    resumed = Trainer(task(tmp_path / "b", ckpt), cfg, tmp_path / "b", resume=ckpt)
    resumed.fit()
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)


def test_balanced_class_weights_on_single_label_data(tmp_path):
    from seqtool.tasks import classifier

    # 3 classes, 30 lines: 18 a, 9 b, 3 c; the validation file keeps them all in training
    lines = [f"a\tgood {i}" for i in range(18)] + [f"b\tbad {i}" for i in range(9)]
    lines += [f"c\tso so {i}" for i in range(3)]
    path = tmp_path / "train.tsv"
    path.write_text("\n".join(lines) + "\n")
    cfg = config(max_steps=4, eval_every=2, batch_size=8)
    model = {"embedding_size": 8, "hidden_size": 8}
    request = TrainRequest(
        str(path), str(path), tmp_path, TokenizerConfig("char"), model, cfg,
        options={"class_weights": "balanced"},
    )  # fmt: skip
    task = classifier.prepare(request, lambda message: None)
    torch.testing.assert_close(
        task.weights, torch.tensor([30 / (3 * 18), 30 / (3 * 9), 30 / 3 / 3])
    )
    progress = Trainer(task, cfg, tmp_path).fit()
    assert progress.step == 4 and (tmp_path / "best.ckpt").exists()


def test_resume_warns_only_about_options_that_differ(run_cli, corpus, tmp_path):
    from tests.conftest import TINY

    out = tmp_path / "run"
    args = ["train", "generator", "--train", corpus, "--out", out, *TINY]  # hidden size 8
    assert run_cli(*args, "--max-steps", 2).exit_code == 0
    same = run_cli(*args, "--max-steps", 3, "--resume")
    assert same.exit_code == 0, same.output
    assert "ignored" not in same.stderr
    other = run_cli(*args, "--max-steps", 4, "--resume", "--hidden-size", 16)
    assert other.exit_code == 0, other.output
    assert "Warning: --hidden-size ignored: a resumed run keeps its stored settings" in other.stderr


# -- plans fitted to --max-time -----------------------------------------------------------


def test_evaluations_are_spread_over_max_time(run_cli, corpus, tmp_path):
    """Without --eval-every, a --max-time run times its first steps and validates about
    ten times over the budget; with --eval-every, at exactly those steps."""
    from tests.conftest import TINY

    at = TINY.index("--eval-every")
    base = TINY[:at] + TINY[at + 2 :]
    out = tmp_path / "planned"
    args = ["train", "generator", "--train", corpus, "--out", out, *base, "--max-time", "6s"]
    result = run_cli(*args)
    assert result.exit_code == 0, result.output
    planned = re.search(r"about ([\d,]+) steps in --max-time; validating every ([\d,]+) steps",
                        result.stderr)  # fmt: skip
    assert planned, result.stderr
    every = int(planned.group(2).replace(",", ""))
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r.get("split") == "valid"]
    assert len(steps) >= 3  # several evaluations, not one at the end
    assert all(b - a >= every for a, b in zip(steps, steps[1:-1], strict=False))
    assert json.loads(run_cli("info", out, "--json").stdout)["train_config"]["eval_every"] is None
    fixed = run_cli(*args[:5], tmp_path / "fixed", *TINY, "--max-time", "3s")
    assert fixed.exit_code == 0 and "validating every" not in fixed.stderr
    records = (tmp_path / "fixed" / "metrics.jsonl").read_text().splitlines()
    steps = [json.loads(r)["step"] for r in records if '"split": "valid"' in r]
    assert all(s % 5 == 0 for s in steps[:-1])


def test_a_run_too_short_to_overfit_validates_at_its_end_only(
    run_cli, corpus, tmp_path, monkeypatch
):
    """Under FINAL_ONLY_EPOCHS predicted epochs, the fitted plan has no evaluation
    before the one at the end (the tiny corpus holds many epochs: the threshold is
    raised instead)."""
    from tests.conftest import TINY

    monkeypatch.setattr(Trainer, "FINAL_ONLY_EPOCHS", 1e9)
    at = TINY.index("--eval-every")
    out = tmp_path / "run"
    result = run_cli("train", "generator", "--train", corpus, "--out", out,
                     *TINY[:at], *TINY[at + 2 :], "--max-time", "3s")  # fmt: skip
    assert result.exit_code == 0, result.output
    assert re.search(r"validating at the end only \([\d.]+ epochs, too few to overfit\)",
                     result.stderr), result.stderr  # fmt: skip
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    evals = [r["step"] for r in records if r.get("split") == "valid"]
    assert evals == [records[-1]["step"]] and evals[0] > Trainer.PLAN_STEPS


def test_no_evaluation_is_due_just_before_the_last(corpus, tmp_path):
    """A planned evaluation with under half a spacing of steps left waits for the one at
    the end; with more left it runs."""
    cfg = config(max_steps=None, max_time=10.0, eval_every=None)
    trainer = Trainer(make_task(corpus, tmp_path, cfg), cfg, tmp_path)
    trainer.eval_every, trainer.steps_per_s = 10, 100.0  # as _plan leaves them
    trainer.progress.step = 10
    trainer.progress.elapsed = 10.0 - 4 / 100  # 4 steps left
    assert not trainer._eval_due(0.0, 0)
    trainer.progress.elapsed = 10.0 - 6 / 100  # 6 steps left
    assert trainer._eval_due(0.0, 0)
    trainer.last_eval, trainer.progress.step = {"step": 10}, 19  # 9 steps since it
    assert not trainer._eval_due(0.0, 0)


def test_the_ensemble_shrinks_to_fit_a_short_budget(tmp_path):
    """Members cost time in proportion: a budget that gives each fewer than the default
    epochs gets fewer members, built as `--ensemble k` would build them."""
    from seqtool.config import DEFAULT_EPOCHS
    from seqtool.tasks import classifier
    from tests.test_classifier import sentiment_lines

    path = tmp_path / "train.tsv"
    path.write_text("\n".join(sentiment_lines(64, 0)) + "\n")
    cfg = config(max_time=10.0, batch_size=16)
    model = {"embedding_size": 8, "hidden_size": 8, "members": 3}

    def prepare(members):
        request = TrainRequest(
            str(path), str(path), tmp_path, TokenizerConfig("char"),
            {**model, "members": members}, cfg,
        )  # fmt: skip
        return classifier.prepare(request, lambda message: None)

    task, notes = prepare(3), []
    epochs, batches = DEFAULT_EPOCHS["classifier"], task.num_batches()
    # one member's epoch takes batches * step / 3 seconds: a budget of 2.5 such epochs
    # per member for all 6 epochs affords 2 members
    step = 0.3
    budget = 2.5 * epochs * batches * step / 3
    assert task.fit_to_budget(lambda config: step, budget, set(), notes.append)
    assert task.model_config.members == 2 and "training 2" in notes[0]
    assert task.sizing == notes[0]
    expected = prepare(2).model.state_dict()
    for name, value in task.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert not prepare(3).fit_to_budget(lambda config: step, 10 * budget, set(), notes.append)
    assert not prepare(3).fit_to_budget(lambda config: step, budget, {"ensemble"}, notes.append)


def test_timing_steps_leaves_the_run_unchanged(tmp_path):
    """A run after Trainer.time_steps equals one without it, to the bit."""
    from seqtool.tasks import classifier
    from tests.test_classifier import sentiment_lines

    path = tmp_path / "train.tsv"
    path.write_text("\n".join(sentiment_lines(64, 0)) + "\n")
    cfg = config(max_steps=6, eval_every=3, batch_size=16)

    def task():
        request = TrainRequest(
            str(path), str(path), tmp_path, TokenizerConfig("char"),
            {"embedding_size": 8, "hidden_size": 8, "members": 2, "dropout": 0.3}, cfg,
        )  # fmt: skip
        return classifier.prepare(request, lambda message: None)

    plain = Trainer(task(), cfg, tmp_path / "a")
    plain.fit()
    timed_task = task()
    assert Trainer(timed_task, cfg, tmp_path / "b").time_steps(2) > 0
    timed = Trainer(timed_task, cfg, tmp_path / "b")
    timed.fit()
    for name, value in plain.model.state_dict().items():
        torch.testing.assert_close(timed.model.state_dict()[name], value, rtol=0, atol=0)


def test_a_tie_on_the_metric_goes_to_the_lower_loss(corpus, tmp_path):
    """BLEU is 0 at every evaluation when every target is one word; best.ckpt must then
    follow the validation loss, not stay the first evaluation's."""
    from seqtool import checkpoint

    task = make_task(corpus, tmp_path, config(max_steps=20, eval_every=5))
    losses = iter([3.0, 2.0, 2.5, 1.5])
    task.metric, task.higher_is_better = "bleu", True
    task.evaluate = lambda model, device: {"loss": next(losses), "bleu": 0.0}
    progress = Trainer(task, config(max_steps=20, eval_every=5), tmp_path).fit()
    assert (progress.best_step, progress.best_loss) == (20, 1.5)
    assert checkpoint.load(tmp_path / "best.ckpt")["progress"]["step"] == 20


def test_a_tie_goes_to_the_tie_break_metric_before_the_loss(corpus, tmp_path):
    """A translator's tie on BLEU goes to the higher chrF, even where the loss rose (a
    model growing sure of itself while its exact match still climbs); on a tie of both,
    to the lower loss."""
    from seqtool import checkpoint

    task = make_task(corpus, tmp_path, config(max_steps=25, eval_every=5))
    scores = iter([(3.0, 50.0), (1.0, 90.0), (1.2, 99.0), (1.4, 99.0), (1.3, 99.0)])
    task.metric, task.higher_is_better, task.tie_break = "bleu", True, "chrf"

    def evaluate(model, device):
        loss, chrf = next(scores)
        return {"loss": loss, "chrf": chrf, "bleu": 0.0}

    task.evaluate = evaluate
    progress = Trainer(task, config(max_steps=25, eval_every=5), tmp_path).fit()
    assert (progress.best_step, progress.best_tie, progress.best_loss) == (15, 99.0, 1.2)
    assert checkpoint.load(tmp_path / "best.ckpt")["progress"]["best_tie"] == 99.0


def test_the_generator_sizes_itself_to_the_budget(corpus, tmp_path):
    """The largest size of SIZES that sees TOKENS_PER_PARAMETER tokens per parameter at
    the timed speed, built as the options for it would build it; dropout only when the
    budget goes over the text DROPOUT_EPOCHS times in DROPOUT_STEPS steps or more, as
    timed without it; what the user set is kept (and timed)."""
    from seqtool.tasks import generator

    cfg = config(max_steps=None, max_time=60.0)
    defaults = {"embedding_size": 8}  # the sizes are SIZES'
    timed, timed_dropout = [], set()

    def cost(model_config):  # a step costs time in proportion to hidden * layers
        return 1e-7 * model_config.hidden_size**2 * model_config.num_layers

    def step_seconds(model_config):
        timed.append((model_config.num_layers, model_config.hidden_size))
        timed_dropout.add(model_config.dropout)
        return cost(model_config)

    task, notes = make_task(corpus, tmp_path, cfg, model=defaults), []
    window = cfg.batch_size * cfg.seq_len
    assert task.fit_to_budget(step_seconds, cfg.max_time, set(), notes.append)
    chosen = (task.model_config.num_layers, task.model_config.hidden_size)
    assert chosen in generator.SIZES and timed == list(generator.SIZES[: len(timed)])

    def per_parameter(size):
        built = make_task(corpus, tmp_path, cfg, model={**defaults, "num_layers": size[0],
                          "hidden_size": size[1]})  # fmt: skip
        parameters = sum(p.numel() for p in built.model.parameters())
        return cfg.max_time / cost(built.model_config) * window / parameters

    index = generator.SIZES.index(chosen)
    assert index == 0 or per_parameter(chosen) >= generator.TOKENS_PER_PARAMETER
    if index + 1 < len(generator.SIZES):
        assert per_parameter(generator.SIZES[index + 1]) < generator.TOKENS_PER_PARAMETER
    assert timed_dropout == {0.0}  # whether dropout pays is judged from the speed without
    steps = cfg.max_time / cost(task.model_config)
    epochs = steps / task.num_batches()
    assert steps >= generator.DROPOUT_STEPS and epochs >= generator.DROPOUT_EPOCHS
    dropout = 0.2
    assert task.model_config.dropout == dropout
    assert notes == [task.sizing] and f"a {chosen[0]}x{chosen[1]} LSTM" in task.sizing
    options = {**defaults, "num_layers": chosen[0], "hidden_size": chosen[1], "dropout": dropout}
    expected = make_task(corpus, tmp_path, cfg, model=options).model.state_dict()
    for name, value in task.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=0, atol=0)

    # a short budget on a slow machine: the smallest size, no dropout
    task = make_task(corpus, tmp_path, cfg, model=defaults)
    assert task.fit_to_budget(lambda c: 10.0, 1.0, set(), notes.append)
    assert (task.model_config.num_layers, task.model_config.hidden_size) == generator.SIZES[0]
    assert task.model_config.dropout == 0.0
    # the user's size is kept, only the dropout is chosen; all three set: nothing
    task = make_task(corpus, tmp_path, cfg, model={**defaults, "hidden_size": 24})
    assert task.fit_to_budget(step_seconds, 1e6, {"hidden_size"}, notes.append)
    assert task.model_config.hidden_size == 24 and task.model_config.dropout == 0.2
    # many epochs in few steps: still learning fast, no dropout; one step more than the
    # threshold at the same speed: dropout
    for steps, dropout in ((generator.DROPOUT_STEPS - 1, 0.0), (generator.DROPOUT_STEPS, 0.2)):
        task = make_task(corpus, tmp_path, cfg, model={**defaults, "hidden_size": 24})
        assert steps / task.num_batches() >= generator.DROPOUT_EPOCHS
        task.fit_to_budget(lambda c: 0.01, steps * 0.01, {"hidden_size"}, print)
        assert task.model_config.dropout == dropout
    # the user's dropout is the one the sizes are timed with
    timed_dropout.clear()
    task = make_task(corpus, tmp_path, cfg, model={**defaults, "dropout": 0.3})
    assert task.fit_to_budget(step_seconds, cfg.max_time, {"dropout"}, print)
    assert timed_dropout == {0.3} and task.model_config.dropout == 0.3
    given = {"hidden_size", "layers", "dropout"}
    assert not make_task(corpus, tmp_path, cfg).fit_to_budget(step_seconds, 1.0, given, print)


def test_a_sized_run_says_why_and_info_keeps_it(run_cli, corpus, tmp_path):
    """`train generator --max-time` without size options prints the rule's choice, and
    the checkpoint keeps it for `info`; with the sizes given there is no such line."""
    out = tmp_path / "sized"
    small = ["--batch-size", "4", "--seq-len", "16", "--embedding-size", "8"]
    result = run_cli("train", "generator", "--train", corpus, "--out", out, *small,
                     "--max-time", "2s")  # fmt: skip
    assert result.exit_code == 0, result.output
    line = re.search(r"--max-time 2s: a (\d)x(\d+) LSTM .* dropout ([\d.]+) \(set", result.stderr)
    assert line, result.stderr
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert line.group(0).startswith(info["sizing"][:40])
    config = info["model_config"]
    assert (config["num_layers"], config["hidden_size"]) == (int(line[1]), int(line[2]))
    assert config["dropout"] == float(line[3])
    assert "sizing " in run_cli("info", out).stdout
    given = run_cli("train", "generator", "--train", corpus, "--out", tmp_path / "given",
                    *small, "--max-time", "1s", "--hidden-size", "8", "--layers", "1",
                    "--dropout", "0.1")  # fmt: skip
    assert given.exit_code == 0 and "--max-time 1s: a" not in given.stderr
    assert "sizing" not in json.loads(run_cli("info", tmp_path / "given", "--json").stdout)


def test_a_probe_on_the_runs_trainer_has_it_built_again(corpus, tmp_path):
    """A task that times its own model's steps and then keeps that model still gets a
    fresh Trainer: the probe moved the optimizer's moments, which time_steps does not
    put back."""
    from seqtool.training import _fit_to_budget

    cfg = config(max_steps=None, max_time=60.0)
    task = make_task(corpus, tmp_path, cfg)
    trainer = Trainer(task, cfg, tmp_path)

    def keep(step_seconds, budget, given, notify):  # times the model, changes nothing
        assert step_seconds(task.model_config) > 0
        return False

    task.fit_to_budget = keep
    assert _fit_to_budget(task, trainer, cfg, None, {}, print)
    task.fit_to_budget = lambda step_seconds, budget, given, notify: False  # no probe
    assert not _fit_to_budget(task, trainer, cfg, None, {}, print)
