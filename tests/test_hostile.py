"""What a user can get wrong on the command line: files that cannot be written, text
that is not what it seems, values that pass the options but not the code. Each ends in
one `Error:` line (exit 1, or 2 for click's usage errors) and loses nothing."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import TEXT, TINY

from seqtool.cli import cli

SMALL = ["--hidden-size", "8", "--embedding-size", "8", "--batch-size", "4", "--eval-every", "2"]


def invoke(*args, input: bytes | str | None = None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def error(result) -> str:
    """The one `Error:` line of a failed command (and nothing else on stderr)."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1, result.stderr
    return result.stderr.rstrip("\n")


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
