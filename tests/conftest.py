from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from seqtool.cli import cli

SHARED = Path(__file__).resolve().parents[2] / "shared" / "corpora"

TEXT = (
    "the quick brown fox jumps over the lazy dog.\n"
    "a stitch in time saves nine.\n"
    "\n"
    "to be, or not to be: that is the question.\n"
) * 40

# hidden 8, a few steps: enough to exercise every path in well under a second per run
TINY = [
    "--hidden-size",
    "8",
    "--embedding-size",
    "8",
    "--layers",
    "1",
    "--batch-size",
    "4",
    "--seq-len",
    "16",
    "--eval-every",
    "5",
    "--log-every",
    "5",
    "--warmup-steps",
    "0",
]


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    path = tmp_path / "corpus.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.fixture
def run_cli():
    def run(*args: str, input: str | None = None):
        return CliRunner().invoke(cli, [str(a) for a in args], input=input)

    return run


@pytest.fixture
def trained(tmp_path: Path, corpus: Path, run_cli) -> Path:
    out = tmp_path / "run"
    result = run_cli(
        "train", "generator", "--train", corpus, "--out", out, "--max-steps", 10, *TINY
    )
    assert result.exit_code == 0, result.output
    return out
