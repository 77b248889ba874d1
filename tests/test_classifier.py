import json
import random
import subprocess
import sys
import threading

import pytest
import torch

import seqtool
from seqtool.cli import SORTED_BATCHES
from seqtool.config import ClassifierConfig
from seqtool.models.classifier import ClassifierEnsemble, ClassifierModel
from seqtool.tasks import classifier as classifier_task
from seqtool.tasks.classifier import classification_loss
from tests.test_cli import (
    error_line,
    interrupt,
    read_stdout,
    seqtool_process,
    typed_at_a_terminal,
)
from tests.test_device import calling_threads, with_threads

POSITIVE = ["good", "great", "lovely", "superb", "fine", "wonderful"]
NEGATIVE = ["bad", "awful", "poor", "dreadful", "boring", "terrible"]
FILLER = ["the", "film", "was", "a", "story", "and", "plot", "acting", "really", "quite"]

TINY = [
    "--hidden-size",
    "16",
    "--embedding-size",
    "16",
    "--batch-size",
    "16",
    "--eval-every",
    "20",
    "--log-every",
    "10",
    "--warmup-steps",
    "0",
    "--vocab-size",
    "300",
    "--lr",
    "0.01",
]


def sentiment_lines(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    lines = []
    for _ in range(n):
        label = rng.choice(["pos", "neg"])
        words = rng.sample(FILLER, 4) + [rng.choice(POSITIVE if label == "pos" else NEGATIVE)]
        rng.shuffle(words)
        lines.append(f"{label}\t{' '.join(words)}")
    return lines


@pytest.fixture
def sentiment(tmp_path):
    train, valid = tmp_path / "train.tsv", tmp_path / "valid.tsv"
    train.write_text("\n".join(sentiment_lines(400, 0)) + "\n")
    valid.write_text("\n".join(sentiment_lines(100, 1)) + "\n")
    return train, valid


def train_classifier(run_cli, sentiment, out, *extra):
    train, valid = sentiment
    return run_cli(
        "train", "classifier", "--train", train, "--valid", valid, "--out", out, *TINY, *extra
    )


@pytest.fixture
def trained_classifier(run_cli, sentiment, tmp_path):
    out = tmp_path / "clf"
    result = train_classifier(run_cli, sentiment, out, "--max-steps", 150, "--pooling", "attention")
    assert result.exit_code == 0, result.output
    return out


# -- metrics and model ----------------------------------------------------------------------


def tiny_config(**fields) -> ClassifierConfig:
    """A classifier of 3 labels over 20 pieces, embedding 4, hidden 6, no dropout of
    either kind."""
    base = {"vocab_size": 20, "labels": ("a", "b", "c"), "embedding_size": 4}
    return ClassifierConfig(
        **{**base, "hidden_size": 6, "dropout": 0.0, "word_dropout": 0.0, **fields}
    )


@pytest.mark.parametrize("pooling", ["max", "mean", "last", "attention"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_padding_does_not_change_a_prediction(pooling, cell):
    torch.manual_seed(0)
    model = ClassifierModel(tiny_config(cell=cell, pooling=pooling)).eval()
    short = torch.tensor([[5, 6, 7]])
    alone, _ = model(short, torch.tensor([3]))
    batch = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5]])
    together, weights = model(batch, torch.tensor([3, 5]))
    assert together.shape == (2, 3)
    torch.testing.assert_close(together[0], alone[0])
    if pooling == "attention":
        assert weights[0, 3:].abs().sum() == 0 and weights[0].sum().item() == pytest.approx(1.0)


@pytest.mark.parametrize("pooling", ["max", "last"])
@pytest.mark.parametrize(("cell", "bidirectional", "layers"), [
    ("lstm", True, 1), ("gru", True, 2), ("rnn", True, 1), ("lstm", False, 2),
])  # fmt: skip
def test_training_without_packing_computes_what_the_packed_layer_does(
    pooling, cell, bidirectional, layers, monkeypatch
):
    """On the CPU a training step runs the fused layer over the padded batch, the
    backward direction over rows reversed within their lengths (models.classifier.
    run_padded); inference packs. Same logits and gradients, padding included."""
    from seqtool.models import classifier as models

    packs = []
    pack = models.pack_padded_sequence
    monkeypatch.setattr(
        models, "pack_padded_sequence", lambda *a, **k: packs.append(1) or pack(*a, **k)
    )
    torch.manual_seed(0)
    config = tiny_config(cell=cell, num_layers=layers, bidirectional=bidirectional, pooling=pooling)
    model = ClassifierModel(config)
    tokens = torch.tensor([[5, 6, 7, 0, 0], [1, 2, 3, 4, 5], [9, 8, 0, 0, 0]])
    lengths = torch.tensor([3, 5, 2])
    results = []
    for training in (True, False):
        model.train(training)
        model.zero_grad()
        logits, _ = model(tokens, lengths)
        logits.square().sum().backward()
        results.append((logits, [p.grad.clone() for p in model.parameters()]))
        assert len(packs) == (0 if training else 1)
    (padded, padded_grads), (packed, packed_grads) = results
    torch.testing.assert_close(padded, packed)
    for a, b in zip(padded_grads, packed_grads, strict=True):
        torch.testing.assert_close(a, b)


def test_word_dropout_leaves_out_whole_pieces_in_training_only():
    torch.manual_seed(0)
    model = ClassifierModel(tiny_config(word_dropout=0.3))
    seen = []
    model.dropout.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    tokens = torch.randint(1, 20, (64, 50))
    lengths = torch.full((64,), 50)
    model.train()(tokens, lengths)
    embedded = seen[0]
    dropped = (embedded == 0).all(-1)
    assert 0.25 < dropped.float().mean().item() < 0.35  # whole pieces, about 30% of them
    kept = ~dropped
    torch.testing.assert_close(embedded[kept], model.embedding(tokens)[kept])
    seen.clear()
    model.eval()(tokens, lengths)
    torch.testing.assert_close(seen[0], model.embedding(tokens))  # none left out in use


def test_word_dropout_is_trained_with_and_kept(run_cli, sentiment, tmp_path):
    out = tmp_path / "wd"
    result = train_classifier(run_cli, sentiment, out, "--max-steps", 150, "--word-dropout", 0.3)
    assert result.exit_code == 0, result.output
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["model_config"]["word_dropout"] == 0.3
    scores = json.loads(run_cli("evaluate", out, "--data", sentiment[1], "--json").stdout)
    assert scores["accuracy"] >= 0.9


@pytest.mark.parametrize("multi_label", [False, True])
def test_ensemble_averages_its_members_probabilities(multi_label):
    torch.manual_seed(0)
    config = ClassifierConfig(
        vocab_size=20,
        labels=("a", "b", "c"),
        embedding_size=4,
        hidden_size=6,
        pooling="attention",
        multi_label=multi_label,
        members=3,
    )
    ensemble = ClassifierEnsemble(config).eval()
    tokens, lengths = torch.tensor([[5, 6, 7, 0], [1, 2, 3, 4]]), torch.tensor([3, 4])
    logits, weights = ensemble(tokens, lengths)
    members = [member(tokens, lengths) for member in ensemble.members]
    if multi_label:
        expected = torch.stack([m[0].sigmoid() for m in members]).mean(0)
        torch.testing.assert_close(logits.sigmoid(), expected)
    else:
        expected = torch.stack([m[0].softmax(-1) for m in members]).mean(0)
        torch.testing.assert_close(logits.softmax(-1), expected)
    torch.testing.assert_close(weights, torch.stack([m[1] for m in members]).mean(0))
    # in training each member has its own loss: the ensemble's is their sum
    ensemble.train()
    torch.manual_seed(1)
    stacked, _ = ensemble(tokens, lengths)
    assert stacked.shape == (3, 2, 3)
    targets = torch.tensor([[1.0, 0, 1], [0, 1, 0]]) if multi_label else torch.tensor([0, 2])
    total = sum(classification_loss(m, targets, config) for m in stacked)
    torch.testing.assert_close(classification_loss(stacked, targets, config), total)


# -- command line -----------------------------------------------------------------------------


def test_train_learns_and_evaluate_reports(run_cli, trained_classifier, sentiment):
    _, valid = sentiment
    result = run_cli("evaluate", trained_classifier, "--data", valid, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert scores["accuracy"] >= 0.9 and scores["macro_f1"] >= 0.9
    assert set(scores["per_class"]) == {"neg", "pos"}
    assert sum(map(sum, scores["confusion"])) == 100
    table = run_cli("evaluate", trained_classifier, "--data", valid)
    assert "confusion" in table.stdout and "macro_f1" in table.stdout
    assert "macro_f1" not in table.stderr


def test_ensemble_trains_classifies_and_explains(run_cli, sentiment, tmp_path):
    out = tmp_path / "ensemble"
    result = train_classifier(
        run_cli, sentiment, out, "--max-steps", 150, "--pooling", "attention", "--ensemble", 2
    )
    assert result.exit_code == 0, result.output
    _, valid = sentiment
    scores = json.loads(run_cli("evaluate", out, "--data", valid, "--json").stdout)
    assert scores["accuracy"] >= 0.9
    explained = run_cli("classify", out, "--text", "the plot was awful", "--explain")
    assert explained.stdout == "neg\n"
    weights = [float(line.split()[1]) for line in explained.stderr.splitlines() if line.strip()]
    assert sum(weights) == pytest.approx(1.0, abs=0.01)
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["model_config"]["members"] == 2
    refused = train_classifier(run_cli, sentiment, tmp_path / "none", "--ensemble", 0)
    assert refused.exit_code == 2 and "'--ensemble': 0 is not in the range" in refused.stderr


def test_classify_one_line_per_input_line(run_cli, trained_classifier):
    result = run_cli("classify", trained_classifier, input="a superb film\n\nawful plot\n")
    assert result.exit_code == 0, result.output
    assert result.stdout == "pos\n\nneg\n"


def test_classify_sorts_chunks_by_length_and_keeps_the_input_order(run_cli, trained_classifier):
    """Lines of many lengths, over several chunks of --batch-size 2: each output line is
    the library's answer for its own input line."""
    words = ["superb", "awful", "lovely", "dreadful", "film", "plot", "story", "acting"]
    rng = random.Random(0)
    lines = [
        " ".join(rng.choices(words, k=rng.randint(1, 12)))
        for _ in range(3 * SORTED_BATCHES * 2 + 5)
    ]
    result = run_cli("classify", trained_classifier, "--batch-size", 2, "--top-k", 2,
                     input="\n".join(lines) + "\n")  # fmt: skip
    assert result.exit_code == 0, result.output
    model = seqtool.load(trained_classifier)
    want = [model.classify(line, top_k=2).top for line in lines]
    got = [row.split("\t") for row in result.stdout.splitlines()]
    assert len(got) == len(lines)
    for (label1, p1, label2, p2), top in zip(got, want, strict=True):
        assert [label1, label2] == [label for label, _ in top]
        assert [float(p1), float(p2)] == pytest.approx([p for _, p in top], abs=1e-4)


def test_classify_top_k_json_and_text(run_cli, trained_classifier):
    top = run_cli("classify", trained_classifier, "--top-k", 2, input="lovely story\n")
    label1, p1, label2, p2 = top.stdout.rstrip("\n").split("\t")
    assert (label1, label2) == ("pos", "neg") and float(p1) + float(p2) == pytest.approx(
        1, abs=1e-3
    )
    as_json = run_cli("classify", trained_classifier, "--json", "--text", "dreadful acting")
    record = json.loads(as_json.stdout)
    assert record["label"] == "neg" and record["top"][0][0] == "neg"


def test_classify_explain_shows_attention(run_cli, trained_classifier):
    result = run_cli("classify", trained_classifier, "--text", "the plot was awful", "--explain")
    assert result.exit_code == 0, result.output
    assert result.stdout == "neg\n"
    explained = seqtool.load(trained_classifier).explain("the plot was awful")
    # one row per piece: the piece, its weight, a bar
    rows = [line.split() for line in result.stderr.splitlines()]
    assert [row[:2] for row in rows] == [
        [piece, f"{weight:.3f}"]
        for piece, weight in zip(explained.pieces, explained.weights, strict=True)
    ]
    assert all(len(row) == 3 and set(row[2]) == {"\u2588"} for row in rows if float(row[1]) > 0.1)
    assert sum(explained.weights) == pytest.approx(1.0, abs=0.01)
    best = max(zip(explained.weights, explained.pieces, strict=True))[1]
    assert best in "\u2581awful"  # the decision rests on the negative word


def test_explain_needs_attention_pooling(run_cli, sentiment, tmp_path):
    out = tmp_path / "maxpool"
    assert train_classifier(run_cli, sentiment, out, "--max-steps", 2).exit_code == 0
    result = run_cli("classify", out, "--text", "fine", "--explain")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "Error: explaining needs a model trained with --pooling attention (this one pools with max)"
    )


def test_unseen_label_at_evaluation(run_cli, trained_classifier, tmp_path):
    path = tmp_path / "test.tsv"
    path.write_text("pos\tgood\nmeh\tokay i guess\n")
    result = run_cli("evaluate", trained_classifier, "--data", path)
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {path}:2: label 'meh' was not seen in training (known: neg, pos)"
    )


def test_line_without_label_in_training_file(run_cli, tmp_path):
    path = tmp_path / "train.tsv"
    path.write_text("pos\tgood film\njust text\n")
    result = run_cli("train", "classifier", "--train", path, "--out", tmp_path / "r")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {path}:2: the line has no label; write it as label<TAB>text"
    )


def test_checkpoints_of_other_tasks_are_refused(run_cli, trained_classifier, trained):
    result = run_cli("classify", trained, "--text", "hello")
    assert result.exit_code == 1
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: {trained}/best.ckpt: this is a generator checkpoint, not a classifier "
        "checkpoint; use `seqtool generate` with it"
    )
    assert run_cli("generate", trained_classifier).exit_code == 1


def test_multi_label_fasttext(run_cli, tmp_path):
    rng = random.Random(0)
    lines = []
    for _ in range(300):
        tags = sorted(rng.sample(["x", "y", "z"], rng.randint(1, 2)))
        words = [{"x": "apple", "y": "river", "z": "cloud"}[t] for t in tags] + rng.sample(
            FILLER, 3
        )
        rng.shuffle(words)
        lines.append(" ".join(f"__label__{t}" for t in tags) + " " + " ".join(words))
    path = tmp_path / "tags.txt"
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "ml"
    refused = run_cli(
        "train", "classifier", "--train", path, "--out", out, *TINY, "--max-steps", 2,
        "--single-label",
    )  # fmt: skip
    assert refused.exit_code == 1 and "train without --single-label" in refused.stderr
    # without either option, lines with several labels make a multi-label model
    result = run_cli(
        "train", "classifier", "--train", path, "--out", out, *TINY, "--max-steps", 80,
        "--class-weights", "balanced",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "labels: training one sigmoid per label (--multi-label)" in result.stderr
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["model_config"]["multi_label"] is True
    scores = json.loads(run_cli("evaluate", out, "--data", path, "--json").stdout)
    assert scores["macro_f1"] > 0.8
    tagged = run_cli("classify", out, "--text", "the apple and the cloud")
    assert tagged.stdout.strip().split(" ") == ["x", "z"]


def test_labels_and_text_in_brackets_are_shown_as_written(run_cli, tmp_path):
    """Labels, pieces and file names are printed literally, never read as rich markup."""
    train = tmp_path / "[train].tsv"
    train.write_text(
        "".join(f"[x]\tgood [b] film {i}\n[/y]\tbad :smile: plot {i}\n" for i in range(40))
    )
    out = tmp_path / "brackets"
    trained = run_cli(
        "train", "classifier", "--train", train, "--valid", train, "--out", out, *TINY,
        "--max-steps", 2, "--pooling", "attention",
    )  # fmt: skip
    assert trained.exit_code == 0, trained.output
    top = run_cli("classify", out, "--top-k", 2, "--text", "good film")
    assert top.exit_code == 0, top.output
    assert sorted(top.stdout.split("\t")[::2]) == ["[/y]", "[x]"]
    table = run_cli("evaluate", out, "--data", train)
    assert table.exit_code == 0, table.output
    assert str(train) in table.stdout
    confusion = table.stdout[table.stdout.index("confusion") :]
    assert "[x]" in confusion and "[/y]" in confusion
    info = run_cli("info", out)
    assert info.exit_code == 0, info.output
    assert "[x]" in info.stdout and "[/y]" in info.stdout
    explained = run_cli("classify", out, "--text", "[b] :smile:", "--explain")
    assert explained.exit_code == 0, explained.output
    pieces = [line.split()[0] for line in explained.stderr.splitlines()]
    assert pieces == seqtool.load(out).explain("[b] :smile:").pieces


def test_non_utf8_on_stdin(run_cli, trained_classifier):
    result = run_cli("classify", trained_classifier, input=b"a good film\nan aw\xfcl plot\n")
    assert error_line(result) == (
        "Error: <stdin>:2: not valid UTF-8 (byte 0xfc at column 6); "
        "convert the input to UTF-8, e.g. with iconv -t utf-8"
    )


def test_closed_stdin(trained_classifier):
    command = [sys.executable, "-m", "seqtool", "classify", str(trained_classifier)]
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: <stdin>: standard input is closed; give INPUT or pipe lines in\n"
    )


def test_classify_into_a_closed_pipe_stops_quietly(trained_classifier, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("a superb film\n" * 200_000)
    proc = seqtool_process("classify", trained_classifier, big)
    read_stdout(proc, lambda data: b"\n" in data)
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=30) == 141
    assert proc.stderr.read() == b""


def test_classify_at_a_terminal_answers_each_line(trained_classifier):
    """Typed at a terminal, each line is labelled as soon as it is entered."""
    lines = ["a superb film", "awful plot"]
    answers, code, stderr = typed_at_a_terminal("classify", trained_classifier, lines=lines)
    assert answers == ["pos\n", "neg\n"]
    assert code == 0
    assert "Type a sentence" in stderr


def test_ctrl_c_while_reading_a_pipe_exits_130(trained_classifier):
    proc = seqtool_process("classify", trained_classifier, "--batch-size", 1, stdin=subprocess.PIPE)
    proc.stdin.write(b"a superb film\n" * SORTED_BATCHES)  # one chunk of --batch-size 1
    proc.stdin.flush()  # the pipe stays open: classify waits for the next line
    printed = read_stdout(proc, lambda data: data.count(b"\n") == SORTED_BATCHES)
    assert printed == b"pos\n" * SORTED_BATCHES
    rest, stderr = interrupt(proc)
    assert (proc.returncode, rest, stderr) == (130, b"", "")


def test_worker_threads_give_the_classes_of_one_thread(trained_classifier, monkeypatch):
    """Several batches on two threads run on workers (seqtool.device.map_batches) and
    give, in input order, what one thread gives batch after batch."""
    model = seqtool.load(trained_classifier, device="cpu")
    lines = [line.split("\t")[1] for line in sentiment_lines(30, 7)]
    padded_on = calling_threads(monkeypatch, classifier_task, "pad")
    alone = with_threads(1, lambda: model.classify(lines, top_k=2, batch_size=4))
    assert padded_on == {threading.get_ident()}
    padded_on.clear()
    workers = with_threads(2, lambda: model.classify(lines, top_k=2, batch_size=4))
    assert padded_on and threading.get_ident() not in padded_on  # all on workers
    assert [c.top for c in workers] == [c.top for c in alone]
