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
from seqtool.inspect import correlations, feature_values
from seqtool.models.recurrent import make_rnn, trace
from tests.conftest import TEXT, TINY
from tests.test_translator import date_lines, train_translator

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
    dates = root / "dates.tsv", root / "dates_valid.tsv"
    dates[0].write_text("".join(date_lines(300, 0)))
    dates[1].write_text("".join(date_lines(20, 1)))
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
    r = correlations(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]), torch.tensor([3, 2, 1]))
    assert r.tolist() == pytest.approx([-1.0, 0.0])
