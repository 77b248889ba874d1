"""`seqtool plot` on a metrics.jsonl that is not what training writes: one Error line
naming the file and line, never a traceback."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")


def error(result) -> str:
    """The one `Error:` line of a command that failed cleanly."""
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.stderr and result.stderr.count("Error:") == 1
    return result.stderr.rstrip("\n").splitlines()[-1]


def test_plot_of_a_checkpoint_says_it_is_not_a_training_log(trained, tmp_path, run_cli):
    ckpt = trained / "best.ckpt"
    message = error(run_cli("plot", ckpt, "--out", tmp_path / "p.png"))
    assert message.startswith(f"Error: {ckpt}:")
    assert message.endswith("not UTF-8 text, so not a training log (plot reads RUN/metrics.jsonl)")


def test_plot_names_the_line_that_is_not_utf8(tmp_path, run_cli):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1, "loss": 1.0}\n\xff\xfe\n')
    message = error(run_cli("plot", tmp_path, "--out", tmp_path / "p.png"))
    assert message.startswith(f"Error: {tmp_path / 'metrics.jsonl'}:2: not UTF-8 text")


@pytest.mark.parametrize(
    "line",
    [
        "[1]",
        '{"split": "train"}',
        '{"step": 1, "loss": "x", "elapsed": 1}',
        '{"step": true, "loss": 1.0}',
        '{"step": NaN, "loss": 1.0}',
        '{"step": 1, "loss": 1.0, "chars_per_s": 10}',  # a rate with no time to sum it over
        '{"step": 1, "loss": 1.0, "tokens": 1e999, "chars_per_s": 10}',
        '{"step": 1, "split": "valid", "elapsed": "x"}',
        '{"step": 1' + "0" * 400 + ', "loss": 1.0}',  # an int beyond a float
    ],
)
def test_plot_refuses_a_line_that_is_not_a_training_record(tmp_path, run_cli, line):
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"step": 1, "loss": 1.0, "elapsed": 1}\n' + line + "\n")
    message = error(run_cli("plot", tmp_path, "--out", tmp_path / "p.png"))
    assert message.startswith(f"Error: {metrics}:2: not a training record (a JSON object")


@pytest.mark.parametrize("line", ['{"step": ' + "9" * 5000 + "}", "[" * 100_000])
def test_plot_refuses_json_that_python_will_not_read(tmp_path, run_cli, line):
    (tmp_path / "metrics.jsonl").write_text(line + "\n")
    message = error(run_cli("plot", tmp_path, "--out", tmp_path / "p.png"))
    assert message == f"Error: {tmp_path / 'metrics.jsonl'}:1: not a JSON line"


def test_plot_skips_numbers_it_cannot_draw(tmp_path, run_cli):
    """NaN and infinite values are what training may write (a loss that diverged); a
    throughput x time that overflows leaves the tokens unknown, not a crash."""
    (tmp_path / "metrics.jsonl").write_text(
        '{"step": 1, "loss": NaN, "chars_per_s": 1e308, "elapsed": 1e308}\n'
        '{"step": 2, "loss": 1.0, "chars_per_s": 1e308, "elapsed": 1e308}\n'
        '{"step": 2, "split": "valid", "loss": Infinity, "perplexity": 1' + "0" * 400 + "}\n"
        '{"step": 3, "loss": 0.5, "tokens": 10, "chars_per_s": 1, "elapsed": 1}\n'
    )
    for x in ("step", "tokens"):
        out = tmp_path / f"{x}.png"
        result = run_cli("plot", tmp_path, "--out", out, "--x", x)
        assert result.exit_code == 0, result.output
        assert out.read_bytes()[:4] == b"\x89PNG"
