"""The Python API: seqtool.load and the Generator, Classifier and Translator it returns.

Each method is checked against the command line on the same inputs and seeds: the CLI
is a client of these methods and must print exactly what they return.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

import seqtool
from seqtool.cli import cli
from tests.conftest import TEXT, TINY
from tests.test_classifier import sentiment_lines, train_classifier
from tests.test_translator import train_translator, write_dates

README = Path(__file__).resolve().parents[1] / "README.md"


def run_cli(*args, input=None):
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """One tiny trained model of each task, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("api")
    corpus = root / "corpus.txt"
    corpus.write_text(TEXT)
    gen = root / "gen"
    result = run_cli(
        "train", "generator", "--train", corpus, "--out", gen, "--max-steps", 10, *TINY
    )
    assert result.exit_code == 0, result.output
    sentiment = root / "train.tsv", root / "valid.tsv"
    sentiment[0].write_text("\n".join(sentiment_lines(400, 0)) + "\n")
    sentiment[1].write_text("\n".join(sentiment_lines(100, 1)) + "\n")
    clf = root / "clf"
    result = train_classifier(run_cli, sentiment, clf, "--max-steps", 60, "--pooling", "attention")
    assert result.exit_code == 0, result.output
    dates = write_dates(root)
    tr = root / "tr"
    result = train_translator(run_cli, dates, tr)
    assert result.exit_code == 0, result.output
    return {
        "corpus": corpus, "gen": gen, "clf": clf, "tr": tr,
        "sentiment": sentiment[1], "dates": dates[1],
    }  # fmt: skip


# -- generator --------------------------------------------------------------------------


def test_generate_returns_what_the_cli_prints_after_the_prompt(runs):
    gen = seqtool.load(runs["gen"], device="cpu")
    assert isinstance(gen, seqtool.Generator)
    text = gen.generate("the ", length=40, temperature=0.8, top_k=5, seed=3)
    printed = run_cli(
        "generate", runs["gen"], "--prompt", "the ", "--length", 40, "--top-k", 5, "--seed", 3
    )
    assert printed.stdout == "the " + text + "\n"
    assert len(text) == 40


def test_stream_yields_the_pieces_of_generate(runs):
    gen = seqtool.load(runs["gen"])
    pieces = list(gen.stream("to be", length=50, temperature=1.0, seed=5))
    assert len(pieces) > 1  # text arrives as it is made, not at the end
    assert "".join(pieces) == gen.generate("to be", length=50, temperature=1.0, seed=5)


def test_a_batch_of_prompts_equals_each_prompt_alone(runs):
    gen = seqtool.load(runs["gen"])
    prompts = ["the ", "a stitch", ""]
    batch = gen.generate(prompts, length=30, seed=1)
    assert isinstance(batch, list) and len(batch) == 3
    for i, prompt in enumerate(prompts):
        assert batch[i] == gen.generate(prompt, length=30, seed=1 + i)
    printed = run_cli(
        "generate", runs["gen"], "--prompt", "a", "--length", 20, "--num-samples", 3, "--seed", 4
    )
    samples = gen.generate(["a"] * 3, length=20, seed=4)
    assert printed.stdout == "".join("a" + s + "\n" for s in samples)


def test_generator_evaluate_and_info_equal_the_cli_json(runs):
    gen = seqtool.load(runs["gen"])
    printed = run_cli("evaluate", runs["gen"], "--data", runs["corpus"], "--json")
    assert gen.evaluate(str(runs["corpus"])) == json.loads(printed.stdout)
    assert gen.info == json.loads(run_cli("info", runs["gen"], "--json").stdout)
    assert gen.info["task"] == "generator" and gen.info["steps"] == 10


# -- classifier -------------------------------------------------------------------------


def test_classify_equals_the_cli_json(runs):
    clf = seqtool.load(runs["clf"])
    lines = ["the plot was awful", "a gorgeous witty film", "fine"]
    results = clf.classify(lines, top_k=2)
    printed = run_cli("classify", runs["clf"], "--json", "--top-k", 2, input="\n".join(lines))
    assert [json.loads(line) for line in printed.stdout.splitlines()] == [
        r.to_dict() for r in results
    ]
    one = clf.classify("a gorgeous witty film", top_k=2)
    assert isinstance(one, seqtool.Classification)
    assert one.label == one.top[0][0] and one.probability == pytest.approx(one.top[0][1])
    assert len(one.top) == 2 and one.top[0][1] >= one.top[1][1]
    assert sum(p for _, p in clf.classify("fine").top) == pytest.approx(1.0, abs=1e-5)


def test_explain_gives_one_weight_per_piece(runs):
    clf = seqtool.load(runs["clf"])
    explanation = clf.explain("the plot was awful")
    assert len(explanation.pieces) == len(explanation.weights) > 1
    assert sum(explanation.weights) == pytest.approx(1.0, abs=1e-4)
    assert "".join(explanation.pieces).replace("▁", " ").strip() == "the plot was awful"


def test_classifier_evaluate_equals_the_cli_json(runs):
    clf = seqtool.load(runs["clf"])
    printed = run_cli("evaluate", runs["clf"], "--data", runs["sentiment"], "--json")
    ours = clf.evaluate(str(runs["sentiment"]))
    assert ours == json.loads(printed.stdout)  # the same computation: equal to the bit
    assert ours["accuracy"] > 0.5


# -- translator -------------------------------------------------------------------------


def test_translate_equals_the_cli_json(runs):
    tr = seqtool.load(runs["tr"], device="cpu")
    lines = ["3 May 1987", "Tuesday, March 3, 1987", "", "May 5, 2001"]
    results = tr.translate(lines, beam_size=3, n_best=2)
    printed = run_cli(
        "translate", runs["tr"], "--json", "--beam-size", 3, "--n-best", 2, input="\n".join(lines)
    )
    assert [json.loads(line) for line in printed.stdout.splitlines()] == [
        r.to_dict() for r in results
    ]
    assert results[2].text == "" and results[2].score is None  # an empty line stays empty
    best = results[0]
    assert [t for t, _ in best.n_best][0] == best.text and len(best.n_best) == 2
    assert best.n_best[0][1] >= best.n_best[1][1]


def test_translate_returns_attention_over_the_source_pieces(runs):
    tr = seqtool.load(runs["tr"])
    found = tr.translate("3 May 1987", attention=True)
    assert isinstance(found, seqtool.Translation)
    rows = torch.tensor(found.attention)
    assert rows.shape == (len(found.target_labels), len(found.source_tokens))
    assert torch.allclose(rows.sum(-1), torch.ones(len(rows)), atol=1e-4)
    assert tr.translate("3 May 1987").attention is None  # only when asked for


def test_translator_evaluate_equals_the_cli_json(runs):
    tr = seqtool.load(runs["tr"])
    printed = run_cli("evaluate", runs["tr"], "--data", runs["dates"], "--json", "--beam-size", 2)
    assert tr.evaluate(str(runs["dates"]), beam_size=2) == json.loads(printed.stdout)


# -- loading, errors, threads -----------------------------------------------------------


def test_load_refuses_another_task_with_the_cli_message(runs):
    with pytest.raises(seqtool.CheckpointError) as err:
        seqtool.load(runs["gen"], task="translator")
    printed = run_cli("translate", runs["gen"], "--text", "x")
    assert printed.exit_code == 1
    assert printed.stderr == f"Error: {err.value}\n"
    assert str(err.value) == (
        f"{runs['gen']}/best.ckpt: this is a generator checkpoint, not a translator "
        "checkpoint; use `seqtool generate` with it"
    )


def test_bad_options_raise_config_errors(runs):
    gen = seqtool.load(runs["gen"])
    with pytest.raises(seqtool.ConfigError, match="temperature must be >= 0"):
        gen.generate("a", temperature=-1)
    with pytest.raises(seqtool.ConfigError, match="top_p must be in"):
        gen.generate("a", top_p=1.5)
    tr = seqtool.load(runs["tr"])
    with pytest.raises(seqtool.ConfigError, match="n_best 3 needs beam_size 3 or more"):
        tr.translate("3 May 1987", beam_size=2, n_best=3)
    with pytest.raises(seqtool.ConfigError, match=r"beam_size must be in \[1, "):
        tr.translate("3 May 1987", beam_size=0)


def test_every_method_runs_in_inference_mode(runs):
    seen = []
    models = [seqtool.load(runs[name]) for name in ("gen", "clf", "tr")]
    for model in models:
        model.model.register_forward_pre_hook(
            lambda module, args: seen.append(torch.is_inference_mode_enabled())
        )
    gen, clf, tr = models
    gen.generate("a", length=3)
    list(gen.stream("a", length=3))
    gen.evaluate(str(runs["corpus"]))
    clf.classify(["fine"])
    clf.explain("fine")
    clf.evaluate(str(runs["sentiment"]))
    tr.translate(["3 May 1987"])  # the decoder steps outside forward: encode runs there
    tr.evaluate(str(runs["dates"]))
    assert seen and all(seen)


def test_concurrent_calls_from_threads_equal_sequential_ones(runs):
    gen, tr = seqtool.load(runs["gen"]), seqtool.load(runs["tr"])
    jobs = [lambda s=s: gen.generate("the ", length=60, seed=s) for s in range(6)]
    jobs += [lambda: tr.translate(["3 May 1987", "May 5, 2001"], beam_size=3)] * 4
    expected = [job() for job in jobs]
    got = [None] * len(jobs)

    def work(i):
        got[i] = jobs[i]()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert got == expected


# -- import cost ------------------------------------------------------------------------

SUBCOMMANDS = [
    [], ["train"], ["train", "generator"], ["train", "classifier"], ["train", "translator"],
    ["generate"], ["classify"], ["translate"], ["evaluate"], ["info"],
]  # fmt: skip


def test_import_seqtool_and_every_help_import_no_torch():
    code = (
        "import sys, seqtool\n"
        "from seqtool.cli import cli\n"
        f"for args in {SUBCOMMANDS!r}:\n"
        "    try:\n"
        "        cli([*args, '--help'])\n"
        "    except SystemExit:\n"
        "        pass\n"
        "print('torch' in sys.modules, 'sentencepiece' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.count("Usage: ") == len(SUBCOMMANDS)
    assert out.stdout.strip().splitlines()[-1] == "False False"


# -- the README's Python API section runs as written ------------------------------------


def test_readme_python_api_runs(runs, monkeypatch, capsys, tmp_path):
    """The README block, with its run directories and data files pointed at the tiny
    models trained here, and its training budget cut to 3 steps."""
    text = README.read_text(encoding="utf-8")
    section = text.split("## Python API", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "README's Python API section has a python block"
    code = "\n".join(blocks).replace('max_time="1m"', "max_steps=3")
    for name, path in {
        "data/tinyshakespeare/train.txt": runs["corpus"], "runs/shakes-py": tmp_path / "py",
        "runs/shakes": runs["gen"], "runs/sst2": runs["clf"], "runs/de-en": runs["tr"],
        "runs/de-en-2": runs["tr"], "data/tinyshakespeare/valid.txt": runs["corpus"],
    }.items():  # fmt: skip
        code = code.replace(f'"{name}"', repr(str(path)))
    exec(compile(code, "README.md", "exec"), {})
    assert capsys.readouterr().out  # the block prints what it makes
