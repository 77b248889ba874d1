"""Vocabulary shortlists (seqtool.shortlist): the table, its coverage, searches over a
batch's shortlist, the checkpoint and the command line."""

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import seqtool
from seqtool import checkpoint, shortlist
from seqtool import quantize as quantization
from seqtool.cli import cli
from seqtool.config import SearchConfig
from seqtool.ensemble import Ensemble
from seqtool.errors import CheckpointError
from seqtool.shortlist import SPECIALS, Shortlist
from seqtool.tasks.translator import translate
from seqtool.tokenizer import Tokenizer
from tests.test_cli import error_line
from tests.test_ensemble import LINES, PAIRS, save_translator
from tests.test_translator import train_translator, write_dates


def test_each_source_piece_lists_its_most_frequent_companions():
    # target 4 is the most frequent piece: every batch gets it, no list holds it
    sources = [[5, 6], [5], [5, 7], [6]]
    targets = [[4, 8, 9], [4, 8], [4, 10, 8], [4, 9]]
    table = Shortlist.count(sources, targets, src_vocab=8, tgt_vocab=11, per_source=2, frequent=1)
    assert table.frequent.tolist() == [0, 1, 2, 3, 4]
    lists = {s: table.targets[table.offsets[s] : table.offsets[s + 1]].tolist() for s in range(8)}
    # 5 met 8 three times, 9 and 10 once each: ties go to the more frequent target
    assert lists == {0: [], 1: [], 2: [], 3: [], 4: [], 5: [8, 9], 6: [9, 8], 7: [8, 10]}
    assert table([[7]]).tolist() == [0, 1, 2, 3, 4, 8, 10]
    assert table([[5], [7, 7]]).tolist() == [0, 1, 2, 3, 4, 8, 9, 10]


def test_counting_in_chunks_and_from_a_sample(monkeypatch):
    tokenizer = Tokenizer.train(LINES + [t for _, t in PAIRS], "char")[0]
    sources = [tokenizer.encode(s) for s, _ in PAIRS] * 3
    targets = [tokenizer.encode(t) for _, t in PAIRS] * 3
    vocab = tokenizer.vocab_size

    def table(srcs, tgts):
        found = Shortlist.count(srcs, tgts, vocab, vocab, per_source=3, frequent=2)
        return [getattr(found, name).tolist() for name in ("offsets", "targets", "frequent")]

    whole = table(sources, targets)
    monkeypatch.setattr(shortlist, "CHUNK", 2)
    assert table(sources, targets) == whole
    monkeypatch.setattr(shortlist, "MAX_PAIRS", 4)  # spread evenly: pairs 0, 4, 9 and 14
    picked = [0, 4, 9, 14]
    assert table(sources, targets) == table(
        [sources[i] for i in picked], [targets[i] for i in picked]
    )


def test_given_the_whole_vocabulary_every_reference_piece_is_listed():
    tokenizer = Tokenizer.train(LINES + [t for _, t in PAIRS], "char")[0]
    sources = [tokenizer.encode(s) for s, _ in PAIRS]
    targets = [tokenizer.encode(t) for _, t in PAIRS]
    vocab = tokenizer.vocab_size
    table = Shortlist.count(sources, targets, vocab, vocab, per_source=vocab, frequent=0)
    for src, tgt in zip(sources, targets, strict=True):
        listed = set(table([src]).tolist())
        assert set(tgt) <= listed and set(SPECIALS) <= listed
    # with short lists it is smaller than the vocabulary, and still sorted, specials first
    short = Shortlist.count(sources, targets, vocab, vocab, per_source=2, frequent=0)([sources[0]])
    assert len(short) < vocab
    assert short[:4].tolist() == list(SPECIALS) and bool((short.diff() > 0).all())


def whole(model) -> Shortlist:
    """A shortlist that lists every target piece of `model`."""
    size = model.config.tgt_vocab_size
    return Shortlist(
        np.zeros(model.config.src_vocab_size + 1, np.int64), np.zeros(0, np.int64), np.arange(size)
    )


def ids(translator, lines):
    return [translator.src_tokenizer.encode(line) for line in lines]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("shortlist")
    upper = [(s.upper(), t) for s, t in PAIRS]
    return (
        save_translator(tmp / "a", PAIRS, seed=0),
        save_translator(tmp / "b", upper, seed=1, cell="lstm", attention="luong"),
    )


@pytest.mark.parametrize("beam_size", [1, 5])
@pytest.mark.parametrize("quantize", ["none", "int8"])
def test_every_piece_listed_searches_as_the_whole_vocabulary(
    runs, beam_size, quantize, monkeypatch
):
    monkeypatch.setattr(quantization, "MIN_WEIGHTS", 0)  # the tiny model's int8 paths too
    one = seqtool.load(runs[0], device="cpu", quantize=quantize)
    both = seqtool.load(list(runs), device="cpu", quantize=quantize)
    assert isinstance(both.model, Ensemble)
    for translator in (one, both):
        others = translator._other_sources(LINES)
        search = SearchConfig(beam_size, beam_size, batch_size=2)
        common = dict(return_attention=True, others=others)
        src, tokenizer = ids(translator, LINES), translator.tgt_tokenizer
        plain = translate(translator.model, src, tokenizer, translator.device, search, **common)
        listed = translate(
            translator.model,
            src,
            tokenizer,
            translator.device,
            search,
            **common,
            shortlist=whole(one.model),
        )
        for a, b in zip(plain, listed, strict=True):
            assert [text for text, _ in a] == [text for text, _ in b]
            for (_, h), (_, g) in zip(a, b, strict=True):
                assert h.tokens == g.tokens and h.score == pytest.approx(g.score, abs=1e-4)
                assert torch.allclose(h.attention, g.attention, atol=1e-5)


@pytest.mark.parametrize("beam_size", [1, 5])
def test_a_search_emits_only_listed_pieces(runs, beam_size):
    translator = seqtool.load(runs[0], device="cpu")
    src, tokenizer = ids(translator, LINES), translator.tgt_tokenizer
    search = SearchConfig(beam_size, beam_size, batch_size=3)

    def emitted(shortlist):
        found = translate(
            translator.model, src, tokenizer, translator.device, search, shortlist=shortlist
        )
        return {t for sentence in found for _, h in sentence for t in h.tokens}

    allowed = {*SPECIALS, 9, 11, 12}
    assert not emitted(None) <= allowed  # unrestricted, the model says other things
    empty = np.zeros(translator.config.src_vocab_size + 1, np.int64)
    assert emitted(Shortlist(empty, np.zeros(0, np.int64), np.array(sorted(allowed)))) <= allowed


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny translator trained on dates for a few steps; its training data."""
    data = tmp_path_factory.mktemp("shortlist_run")
    train, valid = write_dates(data)
    invoke = lambda *args: CliRunner().invoke(cli, [str(a) for a in args])  # noqa: E731
    result = train_translator(invoke, (train, valid), data / "run")
    assert result.exit_code == 0, result.output
    return data / "run", train


def test_training_stores_a_shortlist_that_translate_and_evaluate_use(run_cli, trained):
    run, train = trained
    ckpt = checkpoint.load(run)
    stored = ckpt["shortlist"]
    assert set(stored) == {"offsets", "targets", "frequent"}
    src_vocab = ckpt["model_config"]["src_vocab_size"]
    assert stored["offsets"].shape == (src_vocab + 1,)
    # dates have a dozen target characters: all of them frequent, no byte piece
    assert len(stored["frequent"]) < 20 < ckpt["model_config"]["tgt_vocab_size"]
    result = run_cli("translate", run, "--shortlist", "--text", "3 march 1987", "--json")
    assert result.exit_code == 0, result.output
    assert "translation" in json.loads(result.stdout)
    result = run_cli("evaluate", run, "--data", train, "--shortlist", "--json")
    assert result.exit_code == 0, result.output
    assert 0 <= json.loads(result.stdout)["bleu"] <= 100
    info = json.loads(run_cli("info", run, "--json").stdout)
    assert info["shortlist"] == {
        "pairs": len(stored["targets"]),
        "frequent": len(stored["frequent"]),
    }
    assert f"{len(stored['targets']):,} source-target pairs" in run_cli("info", run).stdout


def test_a_checkpoint_without_a_shortlist_says_so(run_cli, runs):
    line = error_line(run_cli("translate", runs[0], "--shortlist", "--text", "3 march 1987"))
    assert line.startswith("Error: ") and "has no vocabulary shortlist" in line
    assert "without --shortlist" in line
    assert json.loads(run_cli("info", runs[0], "--json").stdout)["shortlist"] is None
    assert "none (--shortlist needs one)" in run_cli("info", runs[0]).stdout


@pytest.mark.parametrize(
    "damage",
    [
        lambda s: {**s, "frequent": s["frequent"] + 10_000},
        lambda s: {**s, "targets": torch.tensor([10_000]), "offsets": s["offsets"].clamp(max=1)},
        lambda s: {**s, "offsets": s["offsets"][:-1]},
        lambda s: {**s, "frequent": s["frequent"][4:]},
        lambda s: {"offsets": s["offsets"]},
        lambda s: "not a table",
    ],
)
def test_a_damaged_shortlist_is_one_line(run_cli, trained, tmp_path, damage):
    ckpt = torch.load(trained[0] / "best.ckpt", weights_only=True)
    ckpt["shortlist"] = damage(ckpt["shortlist"])
    torch.save(ckpt, tmp_path / "damaged.ckpt")
    with pytest.raises(CheckpointError, match="vocabulary shortlist is damaged"):
        seqtool.load(tmp_path / "damaged.ckpt")
    for command in (["translate", tmp_path / "damaged.ckpt", "--text", "x"],
                    ["info", tmp_path / "damaged.ckpt"]):  # fmt: skip
        assert "vocabulary shortlist is damaged" in error_line(run_cli(*command))
