"""Looking inside models: stepped states and gates equal the fused layers', surprise,
units, --find, saturation, HTML, neighbours, translator inspection, training curves."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import seqtool
from seqtool.cli import cli
from seqtool.errors import ConfigError
from seqtool.inspect import correlations, feature_values
from seqtool.models.recurrent import make_rnn, trace
from tests.conftest import TEXT, TINY
from tests.test_translator import train_translator, write_dates

QUOTED = 'he said "to be or not" and then "yes" and no more.\n' * 6


def run_cli(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny generator (trained twice, for two runs to plot) and translator."""
    root = tmp_path_factory.mktemp("inspect")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT + QUOTED)
    found = {"corpus": corpus}
    for name, cell in (("gen", "lstm"), ("gru", "gru")):
        found[name] = root / name
        result = run_cli(
            "train", "generator", "--train", corpus, "--valid", corpus, "--out", found[name],
            "--max-steps", 10, *TINY, "--layers", 2, "--cell", cell,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    dates = write_dates(root)
    found["tr"] = root / "tr"
    result = train_translator(run_cli, dates, found["tr"])
    assert result.exit_code == 0, result.output
    found["dates"] = dates[1]
    return found


# -- stepped states equal the fused layer's ----------------------------------------------


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_trace_equals_the_fused_layer(cell, bidirectional):
    torch.manual_seed(0)
    rnn = make_rnn(cell, 5, 8, 2, bidirectional=bidirectional, batch_first=False)
    x = torch.randn(12, 5)
    output, final = rnn(x[:, None])
    traced = trace(rnn, x)
    dirs = 2 if bidirectional else 1
    assert traced["hidden"].shape == (2, 12, 8 * dirs)
    torch.testing.assert_close(traced["hidden"][-1], output[:, 0], atol=1e-5, rtol=1e-4)
    finals = [final] if cell != "lstm" else list(final)
    for kind, state in zip(["hidden", "cell"], finals, strict=False):
        # (layers * dirs, 1, hidden): forward ends at the last step, backward at the first
        state = state[:, 0].view(2, dirs, 8)
        torch.testing.assert_close(traced[kind][:, -1, :8], state[:, 0], atol=1e-5, rtol=1e-4)
        if bidirectional:
            torch.testing.assert_close(traced[kind][:, 0, 8:], state[:, 1], atol=1e-5, rtol=1e-4)


def test_lstm_gates_recompute_the_next_state():
    torch.manual_seed(1)
    t = trace(make_rnn("lstm", 4, 8, 2, batch_first=False), torch.randn(10, 4))
    previous_c = torch.cat([torch.zeros(2, 1, 8), t["cell"][:, :-1]], dim=1)
    c = t["forget"] * previous_c + t["input"] * t["candidate"]
    torch.testing.assert_close(c, t["cell"])
    torch.testing.assert_close(t["output"] * torch.tanh(c), t["hidden"])


def test_gru_gates_recompute_the_next_state():
    torch.manual_seed(2)
    t = trace(make_rnn("gru", 4, 8, 2, batch_first=False), torch.randn(10, 4))
    previous_h = torch.cat([torch.zeros(2, 1, 8), t["hidden"][:, :-1]], dim=1)
    z = t["update"]
    torch.testing.assert_close((1 - z) * t["candidate"] + z * previous_h, t["hidden"])


# -- features and correlation -------------------------------------------------------------


def test_features_of_a_text():
    assert feature_values("quotes", 'a "b" c') == [0, 0, 1, 1, 1, 0, 0]
    assert feature_values("line-position", "ab\ncd") == [0, 1, 2, 0, 1]
    assert feature_values("brackets", "a(b[c])d") == [0, 1, 1, 2, 2, 2, 1, 0]
    assert feature_values(r"\d+", "a12b") == [0, 1, 1, 0]
    assert feature_values(r"^b", "ab\nb") == [0, 0, 0, 1]  # ^ at each line
    r = correlations(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), torch.tensor([3, 2, 1]))
    assert r.tolist() == pytest.approx([-1.0, 0.0])


def cli_error(result) -> str:
    """The one `Error:` line of a command that failed cleanly."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1
    return result.stderr.rstrip("\n").splitlines()[-1]


@pytest.mark.parametrize(
    ("pattern", "reason"),
    [
        ("a{4294967296}", "the repetition number is too large"),  # OverflowError in re
        ("(" * 1000 + "a" + ")" * 1000, "groups nested too deeply"),  # RecursionError
    ],
)
def test_find_a_pattern_re_cannot_compile_is_one_error_line(runs, pattern, reason):
    result = run_cli("inspect", runs["gen"], "--text", "abc", "--find", pattern)
    assert cli_error(result) == f"Error: --find {pattern!r}: {reason}"


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("layer:1/hidden:" + "9" * 5000, "units are 0 to 7"),  # over int()'s 4300 digits
        ("layer:" + "9" * 5000 + "/hidden:1", "layers are 1 to 2"),
    ],
)
def test_a_unit_number_too_long_for_int_is_out_of_range(runs, spec, reason):
    result = run_cli("inspect", runs["gen"], "--text", "abc", "--unit", spec)
    assert cli_error(result) == f"Error: --unit {spec!r}: {reason}"
    found = run_cli("inspect", runs["gen"], "--text", "abc", "--unit", "layer:02/hidden:007")
    assert found.exit_code == 0, found.output


# -- the generator: surprise, top guesses, units -----------------------------------------


def test_find_on_a_text_without_the_feature_says_so(runs):
    gen = seqtool.load(runs["gen"], device="cpu")
    with pytest.raises(seqtool.ConfigError, match="the text has nothing of it"):
        gen.inspect("no quote marks here", find="quotes")


def test_inspect_returns_bits_top_and_units(runs):
    gen = seqtool.load(runs["gen"], device="cpu")
    text = 'to be "or" not'
    found = gen.inspect(text, top_k=3, unit="layer:1/forget:2", saturation=True)
    assert "".join(found.pieces) == text
    assert len(found.bits) == len(found.top) == len(text)
    assert all(b > 0 for b in found.bits)
    assert found.bits_per_char == pytest.approx(sum(found.bits) / len(text))
    assert all(len(t) == 3 and t[0][1] >= t[1][1] >= t[2][1] for t in found.top)
    (unit,) = found.units
    assert unit.name == "layer:1/forget:2" and len(unit.values) == len(text)
    assert all(0 < v < 1 for v in unit.values)  # a gate is a sigmoid
    # 2 layers x 3 gates, one fraction per unit
    assert [(s.layer, s.gate) for s in found.saturation][:3] == [
        (1, "input"), (1, "forget"), (1, "output"),
    ]  # fmt: skip
    assert len(found.saturation) == 6 and len(found.saturation[0].left) == 8
    # the bits are what evaluate's loss would count: -log2 p of each next character
    record = gen.inspect(text).to_dict()
    assert [r["piece"] for r in record["pieces"]] == list(text)


def test_a_text_too_long_to_hold_is_refused_before_the_model_runs(runs, monkeypatch):
    """Every position's scores, and every unit's trace, are held at once: a 1 MB text
    through the 2x512 default would have been 24 GB of traces."""
    gen = seqtool.load(runs["gen"], device="cpu")
    monkeypatch.setattr("seqtool.inspect.MAX_VALUES", gen.tokenizer.vocab_size * 40)
    assert len(gen.inspect("the fox " * 4).pieces) == 32  # 32 pieces and the context
    with pytest.raises(ConfigError) as err:
        gen.inspect("the fox " * 5)
    assert str(err.value) == (
        "inspect: the text is 41 pieces, more than the 40 this model can score at once; "
        "give a part of it"
    )


def test_inspect_cli_prints_bits_per_char_and_json(runs, tmp_path):
    result = run_cli("inspect", runs["gen"], "--text", "to be", "--top-k", 2)
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("bits_per_char ")
    printed = json.loads(run_cli("inspect", runs["gen"], "--text", "to be", "--json").stdout)
    expected = seqtool.load(runs["gen"]).inspect("to be").bits_per_char
    assert printed["bits_per_char"] == pytest.approx(expected)
    assert [r["piece"] for r in printed["pieces"]] == list("to be")
    bad = run_cli("inspect", runs["gen"], "--text", "to be", "--unit", "layer:3/cell:0")
    assert bad.exit_code == 1 and "layers are 1 to 2" in bad.output
    gru = run_cli("inspect", runs["gru"], "--text", "to be", "--unit", "layer:1/forget:0")
    assert gru.exit_code == 1 and "reset, update, candidate, hidden" in gru.output


def test_inspect_writes_html_and_saturation_png(runs, tmp_path):
    page, png = tmp_path / "report.html", tmp_path / "saturation.png"
    result = run_cli(
        "inspect", runs["gen"], runs["corpus"], "--find", "quotes", "--top-k", 2,
        "--html", page, "--saturation", png,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    html = page.read_text()
    assert html.startswith("<!DOCTYPE html>") and "layer:2/cell:" in html
    assert "http" not in html and "<script" not in html  # nothing fetched, nothing run
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert len(result.stdout.splitlines()) == 1 + 5  # bits_per_char, five ranked units


def test_find_quotes_ranks_a_planted_unit_first():
    """Unit 3 of a tiny LSTM is wired by hand to integrate the quote character: its
    input gate opens only at a quote, its forget gate always holds, and its candidate is
    +1 when the quote opens (the cell is 0) and -1 when it closes (the cell is 1), so
    the cell is 1 inside quotes and 0 outside."""
    from seqtool.inspect import inspect_recurrent
    from seqtool.tokenizer import Tokenizer

    text = QUOTED * 2
    tokenizer, _ = Tokenizer.train(text.splitlines(), "char", None)
    torch.manual_seed(0)
    embedding = torch.nn.Embedding(tokenizer.vocab_size, 4)
    rnn = make_rnn("lstm", 4, 8, 1, batch_first=False)
    quote = tokenizer.encode('"')[-1]
    k, big = 3, 30.0
    with torch.no_grad():
        embedding.weight[:, 0] = 0.0
        embedding.weight[quote, 0] = 1.0  # input feature 0 marks the quote
        for block in range(4):  # i, f, g, o rows of unit k
            row = block * 8 + k
            rnn.weight_ih_l0[row] = 0.0
            rnn.weight_hh_l0[row] = 0.0
            rnn.bias_hh_l0[row] = 0.0
        rnn.weight_ih_l0[k, 0], rnn.bias_ih_l0[k] = 2 * big, -big  # i: open at a quote
        rnn.bias_ih_l0[8 + k] = big  # f: always hold
        # g = tanh(big * (1 - 2 h_k)): +1 while outside (h_k ~ 0), -1 inside (h_k ~ 0.76)
        rnn.bias_ih_l0[16 + k] = big
        rnn.weight_hh_l0[16 + k, k] = -2 * big / 0.76
        rnn.bias_ih_l0[24 + k] = big  # o: always open
    ids = tokenizer.encode(text)
    _, units, feature, _ = inspect_recurrent(
        embedding, rnn, tokenizer, ids, 0, None, "quotes", None, "cell", False
    )
    assert units[0].index == k and units[0].correlation > 0.9
    assert feature == feature_values("quotes", text)


# -- neighbours --------------------------------------------------------------------------


def test_neighbours_exclude_the_piece_and_rank_a_duplicate_first(runs):
    gen = seqtool.load(runs["gen"], device="cpu")
    tokenizer = gen.tokenizer
    e, t = (tokenizer.encode(c)[-1] for c in "et")
    with torch.no_grad():
        gen.model.embedding.weight[t] = gen.model.embedding.weight[e] * 3
    found = gen.neighbours("e", top_k=4)
    assert len(found) == 4 and "e" not in [n.piece for n in found]
    assert found[0].piece == "t" and found[0].similarity == pytest.approx(1.0)
    printed = run_cli("neighbours", runs["gen"], "e", "--top-k", 3, "--json")
    assert printed.exit_code == 0, printed.output
    assert len(printed.stdout.splitlines()) == 3
    missing = run_cli("neighbours", runs["gen"], "zebra")
    assert missing.exit_code == 1
    assert "not a piece of this model's vocabulary" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


# -- translator --------------------------------------------------------------------------


def test_inspect_translator_shows_probabilities_and_attention(runs):
    tr = seqtool.load(runs["tr"], device="cpu")
    line = runs["dates"].read_text().splitlines()[0].split("\t")[0]
    found = tr.inspect(line)
    assert found.text == tr.translate(line).text
    assert found.target[-1].piece == "</s>"
    assert all(0 < t.probability <= 1 for t in found.target)
    assert all(t.source_piece == found.source[t.source] for t in found.target)
    printed = run_cli("inspect", runs["tr"], "--text", line, "--json")
    assert json.loads(printed.stdout)["translation"] == found.text
    sides = [run_cli("neighbours", runs["tr"], found.source[0], "--side", s) for s in ("source",)]
    assert all(r.exit_code == 0 for r in sides), sides[0].output


@pytest.mark.parametrize("bidirectional", [True, False])
def test_inspect_classifier_shows_the_units_of_its_recurrent_layer(
    tmp_path, monkeypatch, bidirectional
):
    """`inspect` of a classifier raised NameError: no test had run it."""
    data = tmp_path / "labels.tsv"
    data.write_text("".join(f"pos\tgood film {i}\nneg\tbad film {i}\n" for i in range(20)))
    run = tmp_path / "clf"
    result = run_cli(
        "train", "classifier", "--train", data, "--out", run, "--max-steps", 2,
        "--hidden-size", 8, "--embedding-size", 8, "--batch-size", 4, "--ensemble", 1,
        *([] if bidirectional else ["--no-bidirectional"]),
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    found = seqtool.load(run, device="cpu").inspect("good film", unit="layer:1/hidden:3")
    assert found.bits == [] and "".join(found.pieces).replace(" ", "") == "goodfilm"
    assert len(found.units[0].values) == len(found.pieces)
    printed = run_cli("inspect", run, "--text", "good film", "--json")
    assert printed.exit_code == 0, printed.output
    assert [p["piece"] for p in json.loads(printed.stdout)["pieces"]] == found.pieces
    units = 8 * (2 if bidirectional else 1)
    beyond = run_cli("inspect", run, "--text", "good", "--unit", f"layer:1/hidden:{units}")
    assert beyond.exit_code == 1 and "Traceback" not in beyond.output
    # a classifier scores no pieces: its trace is what is held
    monkeypatch.setattr("seqtool.inspect.MAX_VALUES", 1000)
    with pytest.raises(
        ConfigError, match=r"is 51 pieces, more than the \d+ this model can trace at once"
    ):
        seqtool.load(run, device="cpu").inspect("good film " * 5, unit="layer:1/hidden:3")


# -- training curves and TensorBoard -----------------------------------------------------


@pytest.mark.parametrize("x", ["step", "time", "tokens"])
def test_plot_two_runs(runs, tmp_path, x):
    out = tmp_path / f"curves-{x}.png"
    result = run_cli("plot", runs["gen"], runs["gru"], "--out", out, "--x", x)
    assert result.exit_code == 0, result.output
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_tokens_seen_come_from_the_log_records(runs, tmp_path):
    from seqtool.plot import read_metrics

    logs = [r for r in read_metrics(runs["gen"]) if "chars_per_s" in r]
    assert [r["tokens"] for r in logs] == [r["step"] * 4 * 16 for r in logs]  # rows x window
    # an older metrics.jsonl without the count: summed from throughput x time
    old = tmp_path / "metrics.jsonl"
    old.write_text(
        '{"step": 10, "loss": 2.0, "chars_per_s": 100.0, "elapsed": 2.0}\n'
        '{"step": 10, "split": "valid", "loss": 1.9}\n'
        '{"step": 20, "loss": 1.5, "chars_per_s": 50.0, "elapsed": 4.0}\n'
    )
    assert [r["tokens"] for r in read_metrics(old)] == [200, 200, 300]


def test_train_writes_tensorboard_events(tmp_path, corpus):
    pytest.importorskip("tensorboard")
    result = run_cli(
        "train", "generator", "--train", corpus, "--out", tmp_path / "run", "--max-steps", 5,
        *TINY, "--tensorboard",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_new_commands_help_imports_no_torch():
    code = (
        "import sys\n"
        "from seqtool.cli import cli\n"
        "for args in (['inspect'], ['plot'], ['neighbours']):\n"
        "    try:\n"
        "        cli([*args, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.count("Usage: ") == 3
    assert "layers count from 1, units from 0" in " ".join(out.stdout.split())
    assert out.stdout.strip().splitlines()[-1] == "False False"
