"""Ensembles of translators: several checkpoints decoding as one (seqtool.ensemble)."""

import json
import math

import pytest
import torch

import seqtool
from seqtool import checkpoint
from seqtool.config import TranslatorConfig
from seqtool.ensemble import Ensemble
from seqtool.errors import ConfigError
from seqtool.models.translator import TranslatorModel
from seqtool.tokenizer import Tokenizer
from tests.test_cli import error_line

PAIRS = [
    ("3 march 1987", "1987-03-03"),
    ("may 5, 2001", "2001-05-05"),
    ("1.2.1999", "1999-02-01"),
    ("june 12 2020", "2020-06-12"),
    ("10 october 1066", "1066-10-10"),
]
LINES = [src for src, _ in PAIRS]


def save_translator(path, pairs, seed, **config):
    """A checkpoint of an untrained translator with char tokenizers of `pairs`: enough
    for decoding to be checked, in a fraction of a second."""
    src_tok, _ = Tokenizer.train([s for s, _ in pairs], "char")
    tgt_tok, _ = Tokenizer.train([t for _, t in pairs], "char")
    torch.manual_seed(seed)
    config = TranslatorConfig(
        src_vocab_size=src_tok.vocab_size,
        tgt_vocab_size=tgt_tok.vocab_size,
        **{"embedding_size": 8, "hidden_size": 8, "dropout": 0.0, **config},
    )
    model = TranslatorModel(config)
    with torch.no_grad():  # peaked, not near-uniform: the searches face clear choices
        model.out.weight.mul_(20)
    path.mkdir()
    checkpoint.save(
        path / "best.ckpt",
        {
            "task": "translator",
            "model_config": config.to_dict(),
            "tokenizers": {"src": src_tok.proto, "tgt": tgt_tok.proto},
            "model_state": model.state_dict(),
        },
    )
    return path


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """a and b differ in cell, attention, size and source tokenizer (b reads upper case)
    but share the target vocabulary; other_target does not."""
    tmp = tmp_path_factory.mktemp("ensemble")
    upper = [(s.upper(), t) for s, t in PAIRS]
    return {
        "a": save_translator(tmp / "a", PAIRS, seed=0),
        "b": save_translator(
            tmp / "b", upper, seed=1, cell="lstm", attention="luong", hidden_size=12, num_layers=2
        ),
        "other_target": save_translator(tmp / "c", [(s, t + "Z") for s, t in PAIRS], seed=2),
    }


@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_model_with_itself_translates_as_alone(runs, beam_size):
    alone = seqtool.load(runs["a"], device="cpu")
    twice = seqtool.load([runs["a"], runs["a"]], device="cpu")
    assert isinstance(twice.model, Ensemble)
    options = dict(beam_size=beam_size, n_best=min(3, beam_size), attention=True)
    for one, two in zip(
        alone.translate(LINES, **options), twice.translate(LINES, **options), strict=True
    ):
        assert two.text == one.text
        assert [t for t, _ in two.n_best] == [t for t, _ in one.n_best]
        assert [s for _, s in two.n_best] == pytest.approx([s for _, s in one.n_best], abs=1e-5)
        assert torch.allclose(torch.tensor(two.attention), torch.tensor(one.attention))


def test_a_model_with_itself_evaluates_as_alone(runs, tmp_path):
    data = tmp_path / "test.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS))
    alone = seqtool.load(runs["a"], device="cpu").evaluate(str(data), beam_size=5)
    twice = seqtool.load([runs["a"], runs["a"]], device="cpu").evaluate(str(data), beam_size=5)
    assert twice["bleu"] == alone["bleu"] and twice["chrf"] == alone["chrf"]
    assert twice["loss"] == pytest.approx(alone["loss"], rel=1e-6)


def test_members_read_the_source_through_their_own_tokenizers(runs):
    """The mean is symmetric: the order of the members changes nothing, unless one of
    them were given another member's source ids."""
    ab = seqtool.load([runs["a"], runs["b"]], device="cpu")
    ba = seqtool.load([runs["b"], runs["a"]], device="cpu")
    assert ab.other_readers and ba.other_readers  # the source tokenizers differ
    for x, y in zip(ab.translate(LINES, n_best=3), ba.translate(LINES, n_best=3), strict=True):
        assert [t for t, _ in x.n_best] == [t for t, _ in y.n_best]
        assert [s for _, s in x.n_best] == pytest.approx([s for _, s in y.n_best], abs=1e-5)


def test_two_different_models_through_the_command_line(run_cli, runs, tmp_path):
    lines = [*LINES[:2], "", LINES[2]]
    source = tmp_path / "test.txt"
    source.write_text("\n".join(lines) + "\n")
    from_file = run_cli("translate", runs["a"], runs["b"], source)
    assert from_file.exit_code == 0, from_file.output
    out = from_file.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[2] == "" and all(out[:2])
    from_stdin = run_cli("translate", runs["a"], runs["b"] / "best.ckpt", input=source.read_text())
    assert from_stdin.exit_code == 0, from_stdin.output
    assert from_stdin.stdout == from_file.stdout
    greedy = run_cli("translate", runs["a"], runs["b"], "-", "--beam-size", 1, input="1.2.1999")
    assert greedy.exit_code == 0 and greedy.stdout.count("\n") == 1


def test_evaluate_an_ensemble(run_cli, runs, tmp_path):
    data = tmp_path / "test.tsv"
    data.write_text("".join(f"{s}\t{t}\n" for s, t in PAIRS))
    result = run_cli("evaluate", runs["a"], runs["b"], "--data", data, "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"bleu", "chrf", "exact_match", "loss", "perplexity"} <= set(scores)
    assert math.isfinite(scores["loss"]) and scores["sentences"] == len(PAIRS)


def test_different_target_vocabularies_are_refused(run_cli, runs):
    result = run_cli("translate", runs["a"], runs["other_target"], input="1.2.1999")
    assert error_line(result) == (
        f"Error: {runs['a'] / 'best.ckpt'} and {runs['other_target'] / 'best.ckpt'} have "
        "different target vocabularies; ensembled translators must share one target tokenizer"
    )


def test_only_translators_are_ensembled(run_cli, tmp_path):
    generator = tmp_path / "gen.ckpt"
    payload = {"model_config": {"vocab_size": 3}, "tokenizers": {}, "model_state": {}}
    checkpoint.save(generator, {**payload, "task": "generator"})
    result = run_cli("evaluate", generator, generator, "--data", tmp_path / "x.txt")
    assert error_line(result) == (
        f"Error: {generator} is a generator: only translators can be ensembled"
    )


def test_only_the_last_argument_may_be_the_input(run_cli, runs, tmp_path):
    result = run_cli("translate", runs["a"], tmp_path / "in.txt", runs["b"])
    assert result.exit_code == 2
    assert f"{tmp_path / 'in.txt'}: not a checkpoint (a .ckpt file or a run directory)" in (
        result.stderr
    )


def test_looking_inside_needs_one_model(runs):
    ensemble = seqtool.load([runs["a"], runs["b"]], device="cpu")
    with pytest.raises(ConfigError, match="looks inside one model, not an ensemble"):
        ensemble.neighbours("1")
