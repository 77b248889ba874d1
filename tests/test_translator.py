import importlib.util
import json
import random
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

import seqtool
from seqtool import decoding, ui
from seqtool.cli import SORTED_BATCHES
from seqtool.config import TranslatorConfig
from seqtool.models.translator import TranslatorModel
from tests.test_cli import (
    error_line,
    interrupt,
    read_stdout,
    seqtool_process,
    typed_at_a_terminal,
)
from tests.test_device import calling_threads, with_threads

ROOT = Path(__file__).resolve().parents[1]


def load_dates():
    spec = importlib.util.spec_from_file_location("make_dates", ROOT / "corpora" / "make_dates.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def date_lines(n: int, seed: int) -> list[str]:
    return load_dates().pairs(n, random.Random(seed))


def write_dates(directory: Path) -> tuple[Path, Path]:
    """The dates task's training (300 pairs) and validation (20 pairs) files."""
    train, valid = directory / "dates.tsv", directory / "dates_valid.tsv"
    train.write_text("".join(date_lines(300, 0)))
    valid.write_text("".join(date_lines(20, 1)))
    return train, valid


@pytest.fixture
def dates(tmp_path):
    return write_dates(tmp_path)


TINY = [
    "--hidden-size", "16", "--embedding-size", "16", "--batch-size", "16",
    "--eval-every", "5", "--log-every", "5", "--warmup-steps", "0",
    "--tokenizer", "char", "--lr", "0.01",
]  # fmt: skip


def train_translator(run_cli, data, out, *extra):
    train, valid = data
    return run_cli(
        "train", "translator", "--train", train, "--valid", valid, "--out", out,
        "--max-steps", 10, *TINY, *extra,
    )  # fmt: skip


@pytest.fixture
def trained_translator(run_cli, dates, tmp_path):
    out = tmp_path / "tr"
    result = train_translator(run_cli, dates, out)
    assert result.exit_code == 0, result.output
    return out


def tiny_model(attention="bahdanau", cell="gru", input_feeding=True, seed=0, **kw):
    torch.manual_seed(seed)
    config = TranslatorConfig(
        src_vocab_size=20,
        tgt_vocab_size=12,
        cell=cell,
        embedding_size=8,
        hidden_size=8,
        attention=attention,
        input_feeding=input_feeding,
        dropout=0.0,
        **kw,
    )
    return TranslatorModel(config).eval()


def batch(*sentences):
    lengths = torch.tensor([len(s) for s in sentences])
    src = torch.zeros(len(sentences), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(sentences):
        src[i, : len(s)] = torch.tensor(s)
    return src, lengths


# -- attention and model ----------------------------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
@pytest.mark.parametrize("input_feeding", [True, False])
def test_decode_steps_equal_teacher_forcing(cell, attention, input_feeding):
    """The one-step inference path computes what the training path computes."""
    model = tiny_model(attention, cell, input_feeding)
    src, lengths = batch([4, 5, 6, 7], [8, 9])
    tgt_in = torch.tensor([[1, 4, 5, 6], [1, 7, 8, 9]])
    with torch.inference_mode():
        logits, weights = model(src, lengths, tgt_in)
        memory, state = model.encode(src, lengths)
        for t in range(tgt_in.size(1)):
            log_probs, state, w = model.decode_step(tgt_in[:, t], state, memory)
            assert torch.allclose(log_probs, logits[:, t].log_softmax(-1), atol=1e-5)
            if attention != "none":
                assert torch.allclose(w, weights[:, t], atol=1e-5)
    assert logits.shape == (2, 4, 12)
    assert (weights is None) == (attention == "none")


@pytest.mark.parametrize("attention", ["bahdanau", "luong", "none"])
def test_beams_attend_to_one_memory_row_per_sentence(attention):
    """k rows of tokens and state per sentence against the sentence's one memory row
    give what each row gives with a copy of the memory of its own."""
    model, k = tiny_model(attention), 3
    memory, state = model.encode(*batch([4, 5, 6, 7], [8, 9]))
    rows = torch.arange(2).repeat_interleave(k)
    state = state.select(rows)
    tokens = torch.tensor([1, 4, 5, 6, 7, 8])  # a different token on every beam
    with torch.inference_mode():
        shared = model.decode_step(tokens, state, memory)
        copied = model.decode_step(tokens, state, memory.select(rows))
    assert torch.allclose(shared[0], copied[0], atol=1e-6)
    assert torch.allclose(shared[1].rnn, copied[1].rnn, atol=1e-6)
    if attention != "none":
        assert shared[2].shape == (2 * k, 4) and torch.allclose(shared[2], copied[2], atol=1e-6)


def test_padding_does_not_change_a_translation():
    model = tiny_model()
    alone = decoding.beam_search(model, *batch([4, 5, 6]), beam_size=3)[0][0]
    padded = decoding.beam_search(model, *batch([4, 5, 6], [7, 8, 9, 10, 11, 12]), beam_size=3)
    assert padded[0][0].tokens == alone.tokens
    assert padded[0][0].score == pytest.approx(alone.score, abs=1e-5)


# -- search -----------------------------------------------------------------------------

SOURCES = [[4, 5, 6], [7, 8], [9, 10, 11, 12, 13], [14], [15, 16, 17, 18]]


@pytest.mark.parametrize("seed", range(4))
def test_beam_size_one_equals_greedy(seed):
    model = tiny_model(seed=seed)
    src, lengths = batch(*SOURCES)
    greedy = decoding.greedy(model, src, lengths, alpha=1.0)
    beam = decoding.beam_search(model, src, lengths, beam_size=1, alpha=1.0)
    for g, b in zip(greedy, beam, strict=True):
        assert b[0].tokens == g.tokens
        assert b[0].score == pytest.approx(g.score, abs=1e-5)


@pytest.mark.parametrize("seed", range(8))
def test_beam_search_never_scores_below_greedy(seed):
    model = tiny_model(seed=seed, cell="lstm")
    src, lengths = batch(*SOURCES)
    greedy = decoding.greedy(model, src, lengths, alpha=0.0)
    for k in (2, 4, 8):
        beam = decoding.beam_search(model, src, lengths, beam_size=k, alpha=0.0)
        for g, b in zip(greedy, beam, strict=True):
            assert b[0].score >= g.score - 1e-5


def test_n_best_lists_are_distinct_and_sorted():
    model = tiny_model(seed=3)
    found = decoding.beam_search(model, *batch(*SOURCES), beam_size=5, n_best=5)
    for hyps in found:
        assert len(hyps) == 5
        assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)
        assert len({tuple(h.tokens) for h in hyps}) == 5


def test_batched_beam_search_equals_one_sentence_at_a_time():
    model = tiny_model(seed=1)
    together = decoding.beam_search(model, *batch(*SOURCES), beam_size=4, n_best=2)
    for source, hyps in zip(SOURCES, together, strict=True):
        alone = decoding.beam_search(model, *batch(source), beam_size=4, n_best=2)[0]
        assert [h.tokens for h in hyps] == [h.tokens for h in alone]


def test_max_length_ends_every_hypothesis():
    model = tiny_model(seed=2)
    found = decoding.beam_search(model, *batch([4]), beam_size=3, max_length_ratio=1.0)
    assert all(len(h.tokens) <= 6 for h in found[0])


def test_attention_is_returned_per_step():
    model = tiny_model()
    hyp = decoding.beam_search(model, *batch([4, 5, 6]), beam_size=3, return_attention=True)[0][0]
    assert hyp.attention.shape == (len(hyp.tokens) + 1, 3)
    assert torch.allclose(hyp.attention.sum(-1), torch.ones(len(hyp.tokens) + 1), atol=1e-5)


# -- command line -----------------------------------------------------------------------


def test_train_translate_evaluate(run_cli, trained_translator, dates):
    for name in ("best.ckpt", "last.ckpt", "metrics.jsonl"):
        assert (trained_translator / name).exists()
    evals = [json.loads(line) for line in (trained_translator / "metrics.jsonl").open()]
    evals = [e for e in evals if e.get("split") == "valid"]
    assert {"loss", "perplexity", "bleu", "chrf"} <= set(evals[0])
    assert len(evals[0]["examples"]) == 3
    result = run_cli("evaluate", trained_translator, "--data", dates[1], "--json")
    assert result.exit_code == 0, result.output
    scores = json.loads(result.stdout)
    assert {"bleu", "chrf", "loss", "perplexity"} <= set(scores)
    assert scores["sentences"] == 20


def test_translate_writes_one_line_per_input_line(run_cli, trained_translator):
    lines = ["3 March 1987", "", "May 5, 2001", "1.2.1999"]
    result = run_cli("translate", trained_translator, "--batch-size", 2, input="\n".join(lines))
    assert result.exit_code == 0, result.output
    out = result.stdout.split("\n")
    assert len(out) == len(lines) + 1 and out[-1] == "" and out[1] == ""
    greedy = run_cli("translate", trained_translator, "--beam-size", 1, input="\n".join(lines))
    assert len(greedy.stdout.split("\n")) == len(lines) + 1


def test_translate_n_best_and_json(run_cli, trained_translator):
    result = run_cli(
        "translate", trained_translator, "--text", "3 March 1987", "--n-best", 3, "--beam-size", 3
    )
    assert result.exit_code == 0, result.output
    rows = [line.split("\t") for line in result.stdout.strip("\n").split("\n")]
    assert len(rows) == 3 and all(len(r) == 2 for r in rows)
    scores = [float(r[1]) for r in rows]
    assert scores == sorted(scores, reverse=True)
    result = run_cli("translate", trained_translator, "--text", "3 March 1987", "--json")
    record = json.loads(result.stdout)
    assert set(record) == {"translation", "score", "tokens"}


def test_translate_shows_attention(run_cli, trained_translator, tmp_path):
    result = run_cli("translate", trained_translator, "--text", "3 May 1987", "--show-attention")
    assert result.exit_code == 0, result.output
    header, *rows = result.stderr.rstrip("\n").split("\n")
    # the source as its pieces, read with the leading space every new translator adds
    assert header.split() == ["▁", "3", "▁", "M", "a", "y", "▁", "1", "9", "8", "7"]
    tokens = json.loads(
        run_cli("translate", trained_translator, "--text", "3 May 1987", "--json").stdout
    )["tokens"]
    assert len(rows) in (len(tokens), len(tokens) + 1)  # + the eos step, when it ended
    assert all(set(row[len(row.split()[0]) :]) <= set(" ░▒▓█") for row in rows)
    pytest.importorskip("matplotlib")
    image = tmp_path / "att.png"
    result = run_cli(
        "translate", trained_translator, "--text", "3 May 1987", "--attention-plot", image
    )
    assert result.exit_code == 0, result.output
    assert image.read_bytes()[:4] == b"\x89PNG"


def test_attention_needs_one_sentence(run_cli, trained_translator):
    result = run_cli("translate", trained_translator, "--show-attention", input="a\n")
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --show-attention and --attention-plot draw one sentence: give it with --text\n"
    )


def test_line_without_tab(run_cli, tmp_path):
    train = tmp_path / "train.tsv"
    train.write_text("eins\tone\nzwei two\n")
    result = run_cli(
        "train", "translator", "--train", train, "--out", tmp_path / "r", "--max-steps", 5, *TINY
    )
    assert result.exit_code == 1
    assert result.stderr == f"Error: {train}:2: no tab in the line; write it as source<TAB>target\n"


def test_mismatched_files_on_the_command_line(run_cli, tmp_path):
    (tmp_path / "t.de").write_text("eins\nzwei\n")
    (tmp_path / "t.en").write_text("one\n")
    result = run_cli(
        "train", "translator", "--train", tmp_path / "t", "--src-lang", "de", "--tgt-lang", "en",
        "--out", tmp_path / "r", "--max-steps", 5, *TINY,
    )  # fmt: skip
    assert result.exit_code == 1
    assert "t.de has 2 lines but" in result.stderr and "t.en has 1;" in result.stderr


def test_generator_checkpoint_given_to_translate(run_cli, trained):
    result = run_cli("translate", trained, "--text", "hallo")
    assert result.exit_code == 1
    assert "this is a generator checkpoint, not a translator checkpoint" in result.stderr
    assert result.stderr.startswith("Error: ") and result.stderr.count("\n") == 1


def test_n_best_above_beam_size(run_cli, trained_translator):
    result = run_cli(
        "translate", trained_translator, "--text", "x", "--n-best", 4, "--beam-size", 2
    )
    assert result.exit_code == 1
    assert result.stderr == "Error: --n-best 4 needs --beam-size 4 or more\n"


def test_resumed_translator_equals_uninterrupted(dates, tmp_path):
    """Stopped mid-epoch in the second epoch, resumed: the same trained weights and the
    same moving average of them (--ema) as one run."""
    from seqtool import checkpoint
    from seqtool.config import TokenizerConfig, TrainConfig
    from seqtool.errors import TrainingInterrupted
    from seqtool.tasks import TrainRequest, translator
    from seqtool.training import Trainer
    from tests.test_training import StopAt

    cfg = TrainConfig(
        batch_size=16, max_steps=40, eval_every=10, device="cpu", precision="fp32",
        label_smoothing=0.1, batch_tokens=200, ema=0.9,
    )  # fmt: skip
    model = {"embedding_size": 8, "hidden_size": 8, "dropout": 0.2, "cell": "lstm"}

    def task(run_dir, resume=None):
        request = TrainRequest(
            str(dates[0]), str(dates[1]), run_dir, TokenizerConfig("char"), model, cfg, resume
        )
        return translator.prepare(request, lambda message: None)

    whole = Trainer(task(tmp_path / "a"), cfg, tmp_path / "a")
    whole.fit()
    assert whole.task.num_batches() < 31  # the stop falls in the second epoch
    first = Trainer(task(tmp_path / "b"), cfg, tmp_path / "b", callbacks=StopAt(31))
    with pytest.raises(TrainingInterrupted):
        first.fit()
    ckpt = checkpoint.load(tmp_path / "b" / "last.ckpt")
    resumed = Trainer(task(tmp_path / "b", ckpt), cfg, tmp_path / "b", resume=ckpt)
    resumed.fit()
    for name, value in whole.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=0)
    saved = [checkpoint.load(tmp_path / run / "last.ckpt") for run in ("a", "b")]
    for name, value in saved[0]["model_state"].items():
        torch.testing.assert_close(saved[1]["model_state"][name], value, rtol=0, atol=0)
        torch.testing.assert_close(saved[1]["train_weights"][name], whole.model.state_dict()[name])


@pytest.mark.slow
def test_dates_are_learned_with_sharp_attention(run_cli, tmp_path):
    """The end-to-end check: seconds of training on the dates task give exact ISO dates,
    and the attention that writes the year rests on the year's digits."""
    import seqtool

    train, valid, test = (tmp_path / f"{n}.tsv" for n in ("train", "valid", "test"))
    train.write_text("".join(date_lines(20000, 0)))
    valid.write_text("".join(date_lines(100, 1)))
    test.write_text("".join(date_lines(200, 2)))
    out = tmp_path / "dates"
    result = run_cli(
        "train", "translator", "--train", train, "--valid", valid, "--out", out,
        "--tokenizer", "char", "--hidden-size", "64", "--embedding-size", "32",
        "--dropout", "0.1", "--lr", "3e-3", "--label-smoothing", "0", "--max-steps", "600",
        "--eval-every", "300", "--precision", "fp32",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    scores = json.loads(run_cli("evaluate", out, "--data", test, "--json").stdout)
    assert scores["exact_match"] >= 0.9, scores

    text = "Tuesday, March 3, 1987"
    found = seqtool.load(out, device="cpu").translate(text, attention=True)
    assert found.text == "1987-03-03"
    # the rows that write the year (after the leading space piece) are each sharply
    # peaked on a digit of the source's year, its last four pieces
    first = found.tokens.index("1")
    year = slice(len(found.source_tokens) - 4, len(found.source_tokens))
    for row in torch.tensor(found.attention[first : first + 4]):
        assert row.max() > 0.5
        assert row[year].sum() > 0.8


def test_joint_vocabulary_and_tied_embeddings(run_cli, dates, tmp_path):
    out = tmp_path / "joint"
    result = train_translator(run_cli, dates, out, "--joint-vocab", "--tie-embeddings")
    assert result.exit_code == 0, result.output
    ckpt = torch.load(out / "best.ckpt", weights_only=True)
    assert ckpt["tokenizers"]["src"] == ckpt["tokenizers"]["tgt"]
    assert ckpt["model_config"]["tie_embeddings"] is True
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["vocab_size"]["src"] == info["vocab_size"]["tgt"]
    # a long --max-time budget ties by default: averaged, quantized and shortlisted too
    mean = tmp_path / "mean.ckpt"
    assert run_cli("average", out / "best.ckpt", out / "last.ckpt", "--out", mean).exit_code == 0
    model = seqtool.load(mean, device="cpu").model
    assert model.out.weight is model.tgt_embedding.weight
    # the tied matrix is counted once, as the model holds it, and stays one in the mean
    counted = sum(p.numel() for p in model.parameters())
    for ckpt in (out, mean):
        assert json.loads(run_cli("info", ckpt, "--json").stdout)["parameters"] == counted
    for ckpt in (out, mean):
        for options in ([], ["--quantize", "int8", "--shortlist"]):
            result = run_cli("translate", ckpt, "--text", "3 May 1987", "--device", "cpu", *options)
            assert result.exit_code == 0 and result.stdout.strip(), result.output


def test_word_dropout_leaves_out_whole_source_and_target_pieces_in_training_only():
    model = tiny_model(word_dropout=0.3)
    seen = []
    model.dropout.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    src, tgt_in = torch.randint(1, 20, (64, 40)), torch.randint(1, 12, (64, 30))
    lengths = torch.full((64,), 40)
    model.train()(src, lengths, tgt_in)
    for embedded, embedding, tokens in ((seen[0], model.src_embedding, src),
                                        (seen[1], model.tgt_embedding, tgt_in)):  # fmt: skip
        dropped = (embedded == 0).all(-1)
        assert 0.25 < dropped.float().mean().item() < 0.35  # whole pieces, about 30%
        torch.testing.assert_close(embedded[~dropped], embedding(tokens)[~dropped])
    seen.clear()
    model.eval()(src, lengths, tgt_in)
    torch.testing.assert_close(seen[0], model.src_embedding(src))  # none left out in use
    torch.testing.assert_close(seen[1], model.tgt_embedding(tgt_in))


def test_word_dropout_is_an_option_of_the_translator(run_cli, dates, tmp_path):
    result = train_translator(run_cli, dates, tmp_path / "wd", "--word-dropout", 0.2)
    assert result.exit_code == 0, result.output
    info = json.loads(run_cli("info", tmp_path / "wd", "--json").stdout)
    assert info["model_config"]["word_dropout"] == 0.2


def test_tied_output_layer_is_the_target_embedding():
    model = tiny_model(tie_embeddings=True)
    assert model.out.weight is model.tgt_embedding.weight
    logits, _ = model(*batch([4, 5]), torch.tensor([[1, 4, 5]]))
    assert logits.shape == (1, 3, 12)
    # rows of N(0, 1/size): the first logits spread like the untied layer's, not 8x wider
    wide = TranslatorModel(TranslatorConfig(20, 4000, embedding_size=256, tie_embeddings=True))
    weight = wide.tgt_embedding.weight
    assert abs(weight[1:].std().item() - 256**-0.5) < 0.002 and not weight[0].any()


def test_missing_matplotlib_names_the_extra(run_cli, trained_translator, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    result = run_cli(
        "translate",
        trained_translator,
        "--text",
        "3 May 1987",
        "--attention-plot",
        tmp_path / "a.png",
    )
    assert result.exit_code == 1
    assert result.stderr == (
        "Error: --attention-plot needs matplotlib: pip install -e '.[plot]' in the seqtool "
        "repository, or pip install matplotlib\n"
    )


def test_interactive_at_a_terminal_answers_each_line(trained_translator):
    """Typed at a terminal, each line is translated as soon as it is entered."""
    lines = ["3 May 1987", "May 5, 2001"]
    answers, code, stderr = typed_at_a_terminal("translate", trained_translator, lines=lines)
    model = seqtool.load(trained_translator)
    assert answers == [model.translate(line).text + "\n" for line in lines]
    assert code == 0
    assert "Type a sentence" in stderr


def test_attention_matrix_keeps_source_pieces_apart(capsys):
    src, tgt = ["Ein", "\u2581Mann", "\u2581mit", "[x]"], ["A", "\u2581man", "[/y]"]
    weights = [[0.9, 0.1, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.2, 0.8]]
    ui.attention_matrix(src, tgt, weights)
    header, *rows = capsys.readouterr().err.rstrip("\n").split("\n")
    assert header.split() == src
    assert [row.split()[0] for row in rows] == tgt
    # each cell lies under its source piece, as wide as it
    starts = [header.index(piece) for piece in src]
    for row, row_weights in zip(rows, weights, strict=True):
        for start, piece, weight in zip(starts, src, row_weights, strict=True):
            cell = row[start : start + len(piece)]
            assert cell == ui._SHADES[round(weight * 4)] * len(piece)


def test_non_utf8_on_stdin(run_cli, trained_translator):
    result = run_cli("translate", trained_translator, input=b"3 May 1987\nM\xe4rz\n")
    assert error_line(result) == (
        "Error: <stdin>:2: not valid UTF-8 (byte 0xe4 at column 2); "
        "convert the input to UTF-8, e.g. with iconv -t utf-8"
    )


def test_closed_stdin(trained_translator):
    command = [sys.executable, "-m", "seqtool", "translate", str(trained_translator)]
    result = subprocess.run(
        ["sh", "-c", 'exec "$@" <&-', "sh", *command], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr == (
        "Error: <stdin>: standard input is closed; give INPUT or pipe lines in\n"
    )


def test_ctrl_c_while_reading_a_pipe_exits_130(trained_translator):
    proc = seqtool_process(
        "translate", trained_translator, "--batch-size", 1, stdin=subprocess.PIPE
    )
    proc.stdin.write(b"3 May 1987\n" * SORTED_BATCHES)  # one chunk of --batch-size 1
    proc.stdin.flush()  # the pipe stays open: translate waits for the next line
    printed = read_stdout(proc, lambda data: data.count(b"\n") == SORTED_BATCHES)
    rest, stderr = interrupt(proc)
    assert (proc.returncode, rest, stderr) == (130, b"", "")
    assert len(set(printed.splitlines())) == 1


def test_translate_into_a_closed_pipe_stops_quietly(trained_translator, tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("3 May 1987\n" * 200_000)
    proc = seqtool_process("translate", trained_translator, big, "--beam-size", 1)
    read_stdout(proc, lambda data: b"\n" in data)
    proc.stdout.close()  # as `| head -1` does
    assert proc.wait(timeout=30) == 141
    assert proc.stderr.read() == b""


def test_auto_tokenizer_reads_dates_as_characters(run_cli, dates, tmp_path):
    """Formatted strings get char tokenizers on both sides under the default `auto`, and
    the checkpoint says what was chosen and why."""
    train, valid = dates
    out = tmp_path / "auto"
    result = run_cli(
        "train", "translator", "--train", train, "--valid", valid, "--out", out,
        "--max-steps", 2, "--hidden-size", 8, "--embedding-size", 8,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "source tokenizer char: lines are short" in result.stderr
    assert "target tokenizer char: 100% of the words occur fewer than 3 times" in result.stderr
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert info["tokenizer_config"]["kind"] == "auto"
    assert info["tokenizer_config"]["lead_space"]  # a first word reads as one inside a line
    assert [c.split(":")[0] for c in info["tokenizer_config"]["chosen"]] == [
        "source char", "target char",
    ]  # fmt: skip
    assert info["vocab_size"]["tgt"] < 300  # characters (and byte pieces), not whole dates


def test_worker_threads_give_the_translations_of_one_thread(trained_translator, monkeypatch):
    """Several batches on two threads run on workers (seqtool.device.map_batches) and
    give, in input order, what one thread gives batch after batch."""
    translator = seqtool.load(trained_translator, device="cpu")
    lines = [line.split("\t")[0] for line in date_lines(30, 5)]
    searched_on = calling_threads(monkeypatch, decoding, "beam_search")
    alone = with_threads(1, lambda: translator.translate(lines, batch_size=4))
    assert searched_on == {threading.get_ident()}
    searched_on.clear()
    workers = with_threads(2, lambda: translator.translate(lines, batch_size=4))
    assert searched_on and threading.get_ident() not in searched_on  # all on workers
    assert [(t.text, t.score) for t in workers] == [(t.text, t.score) for t in alone]


WORDS = ["the", "a", "cat", "dog", "bird", "sat", "ran", "on", "under", "mat", "tree",
         "house", "garden", "quickly", "slowly"]  # fmt: skip


def write_words(directory: Path) -> Path:
    """300 pairs of short sentences of whole words: a target a unigram tokenizer reads
    in pieces of several characters."""
    rng, lines = random.Random(0), []
    for _ in range(300):
        words = rng.choices(WORDS, k=rng.randint(3, 8))
        lines.append(f"{' '.join(reversed(words))}\t{' '.join(words)}\n")
    path = directory / "words.tsv"
    path.write_text("".join(lines))
    return path


def test_the_budget_chooses_the_translators_dropout_and_rate(run_cli, dates, tmp_path):
    """Under DROPOUT_EPOCHS epochs in the budget (at the timed speed) the dropout is
    DROPOUT_SHORT, built as the options would build it; a longer budget keeps the
    default. Under SHORT_EPOCHS the rate is SHORT_LR when the target is read in pieces,
    never for characters. What the user set is kept. A fitted run says why, and `info`
    and a resumed run keep it."""
    from seqtool.config import TokenizerConfig, TrainConfig
    from seqtool.tasks import TrainRequest, translator

    cfg = TrainConfig(batch_size=16, max_time=60.0, device="cpu", precision="fp32",
                      batch_tokens=200, lr=1e-3)  # fmt: skip
    words = write_words(tmp_path)

    def task(train=dates[0], tokenizer=None, **model):
        tokenizer = tokenizer or TokenizerConfig("char")
        model = {"embedding_size": 8, "hidden_size": 8, "dropout": 0.3, **model}
        request = TrainRequest(str(train), None, tmp_path, tokenizer, model, cfg)
        return translator.prepare(request, lambda message: None)

    def pieces():
        return task(words, TokenizerConfig("unigram", vocab_size=300))

    step = 0.01
    epoch = task().num_batches() * step  # seconds
    for epochs, dropout in ((translator.DROPOUT_EPOCHS / 2, translator.DROPOUT_SHORT),
                            (2 * translator.DROPOUT_EPOCHS, 0.3)):  # fmt: skip
        fitted, notes = task(), []
        assert fitted.piece_chars < translator.PIECE_CHARS
        rebuilt = fitted.fit_to_budget(lambda config: step, epochs * epoch, set(), notes.append)
        assert rebuilt == (dropout != 0.3) and fitted.model_config.dropout == dropout
        assert fitted.config.lr == 1e-3  # characters keep the rate
        assert notes == [fitted.sizing] and f"lr 0.001, dropout {dropout:g}" in notes[0]
        expected = task(dropout=dropout).model.state_dict()
        for name, value in fitted.model.state_dict().items():
            torch.testing.assert_close(value, expected[name], rtol=0, atol=0)
    assert not task().fit_to_budget(lambda config: step, epoch, {"dropout", "lr"}, print)

    epoch = pieces().num_batches() * step
    short, long = translator.SHORT_EPOCHS / 2, 2 * translator.SHORT_EPOCHS
    wide = translator.LONG_EMBEDDING
    for epochs, given, lr, batch, tied in (
        (short, set(), translator.SHORT_LR, 16, None),
        (long, set(), translator.LONG_LR, 16 * translator.LONG_BATCH, wide),
        (long, {"batch_size"}, 1e-3, 16, wide),
        (long, {"lr"}, 1e-3, 16, wide),
        (long, {"embedding_size"}, translator.LONG_LR, 32, 8),
        (long, {"tie_embeddings"}, translator.LONG_LR, 32, None),
    ):
        fitted = pieces()
        assert fitted.piece_chars >= translator.PIECE_CHARS
        before = fitted.num_batches()
        fitted.fit_to_budget(lambda config: step, epochs * epoch, given, print)
        assert fitted.config.lr == lr and fitted.config.batch_size == batch
        assert fitted.config.batch_tokens == 200 * batch // 16
        # a long budget ties the target embedding to the output layer, at LONG_EMBEDDING
        # unless --embedding-size says otherwise; --[no-]tie-embeddings keeps the user's
        assert fitted.model_config.tie_embeddings == (tied is not None)
        assert fitted.model_config.embedding_size == (tied or 8)
        assert (fitted.model.out.weight is fitted.model.tgt_embedding.weight) == bool(tied)
        assert (", tied target embeddings" in fitted.sizing) == bool(tied)
        # larger batches, fewer of them: the epoch's order is built for the new sizes
        assert (fitted.num_batches() < before) == (batch > 16)
        assert max(len(b) for b in fitted.order) <= batch
    kept = pieces()
    assert kept.fit_to_budget(lambda config: step, epoch, {"lr"}, print)  # the dropout
    assert kept.config.lr == 1e-3 and kept.model_config.dropout == translator.DROPOUT_SHORT

    out = tmp_path / "fitted"
    result = run_cli("train", "translator", "--train", words, "--out", out, "--tokenizer",
                     "unigram", "--vocab-size", "300", "--batch-size", "16", "--hidden-size",
                     "8", "--embedding-size", "8", "--max-time", "2s")  # fmt: skip
    assert result.exit_code == 0, result.output
    line = re.search(r"--max-time 2s: about .* epochs .*: lr ([\d.e-]+), dropout ([\d.]+), "
                     r"batches of 16 pairs and 1,200 tokens \(set", result.stderr)  # fmt: skip
    assert line, result.stderr
    info = json.loads(run_cli("info", out, "--json").stdout)
    assert line.group(0).startswith(info["sizing"][:30])
    assert info["model_config"]["dropout"] == float(line[2])
    assert info["train_config"]["lr"] == float(line[1]) == translator.SHORT_LR
    resumed = run_cli("train", "translator", "--train", words, "--out", out, "--resume",
                      "--max-time", "3s")  # fmt: skip
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(run_cli("info", out, "--json").stdout)["train_config"]["lr"] == 3e-3
