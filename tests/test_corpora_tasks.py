"""corpora/make_tasks.py: each task writes train/valid/test in seqtool's formats, the
same bytes for the same seed, with the documented sizes."""

from __future__ import annotations

import importlib.util
import random
import subprocess
import sys
from pathlib import Path

import pytest

from seqtool.data import parallel_paths, read_labeled, read_parallel

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "corpora" / "make_tasks.py"
SHARED = ROOT.parent / "shared" / "corpora"
PARTS = ("train", "valid", "test")


def _load():
    spec = importlib.util.spec_from_file_location("corpora_make_tasks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


tasks = _load()
SYNTHETIC = ["numbers", "reverse", "dates", "questions", "topics"]
FROM_SHARED = {"multi30k": "multi30k", "sst2": "sst2", "prose": "tinyshakespeare"}


def write(name: str, folder: Path, seed: int = 1) -> dict[str, Path]:
    if name in FROM_SHARED and not (SHARED / FROM_SHARED[name]).is_dir():
        pytest.skip(f"{SHARED / FROM_SHARED[name]} is not here")
    return tasks.write(name, folder, train=200, test=20, seed=seed, shared=SHARED)


def test_every_task_is_listed_in_the_docstring():
    assert len(tasks.TASKS) >= 10
    kinds = {task.kind for task in tasks.TASKS.values()}
    assert kinds == {"translation", "classification", "generation"}
    for name in tasks.TASKS:
        assert f"\n  {name} " in tasks.__doc__


@pytest.mark.parametrize("name", [n for n, t in tasks.TASKS.items() if t.kind == "translation"])
def test_translation_tasks_are_parallel_tsv(name, tmp_path):
    paths = write(name, tmp_path)
    assert sorted(paths) == sorted(PARTS)
    for part, count in (("train", 200), ("valid", 20), ("test", 20)):
        pairs, skipped = read_parallel(parallel_paths(str(paths[part]), None, None))
        assert (len(pairs), skipped) == (count, 0)
    if name in ("numbers", "reverse"):  # distinct sources: no test source seen in training
        sources = {part: {p.src for p in read_parallel([paths[part]])[0]} for part in PARTS}
        assert not sources["test"] & sources["train"]


@pytest.mark.parametrize("name", [n for n, t in tasks.TASKS.items() if t.kind == "classification"])
def test_classification_tasks_are_labelled_lines(name, tmp_path):
    paths = write(name, tmp_path)
    for part, count in (("train", 200), ("valid", 20), ("test", 20)):
        examples, skipped = read_labeled(paths[part])
        assert (len(examples), skipped) == (count, 0)
    labels = {label for e in read_labeled(paths["train"])[0] for label in e.labels}
    if name == "questions":
        assert labels == {"ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"}
        first = {e.text.split()[0] for e in read_labeled(paths["train"])[0] if "LOC" in e.labels}
        assert len(first) >= 3  # not keyed on the first word
    if name == "topics":
        assert labels == set(tasks.TOPICS)
        examples = read_labeled(paths["train"])[0]
        assert any(len(e.labels) > 1 for e in examples)
        for e in examples:  # each label's topic words are in the text
            assert all(set(tasks.TOPICS[label]) & set(e.text.split()) for label in e.labels)


def test_questions_ask_for_nouns_training_never_saw():
    words = {w for slot in tasks.SLOTS.values() for fill in slot for w in fill.split()}
    words |= {w for t in [*tasks.ASK, *sum(tasks.QUESTIONS.values(), [])] for w in t.split()}
    held = {n for nouns in tasks.CUES.values() for n in nouns[round(tasks.SEEN * len(nouns)) :]}
    held -= words  # nouns that only a cue can bring into a question

    def nouns(unseen: bool) -> set[str]:
        rng = random.Random(0)
        return {w for _ in range(3000) for w in tasks.question(rng, unseen).split()} & held

    assert len(held) >= 20
    assert nouns(unseen=False) == set()
    assert nouns(unseen=True) == held


@pytest.mark.parametrize("name", [n for n, t in tasks.TASKS.items() if t.kind == "generation"])
def test_generation_tasks_are_text_cut_into_three(name, tmp_path):
    paths = write(name, tmp_path)
    sizes = {part: len(paths[part].read_text(encoding="utf-8")) for part in PARTS}
    assert sizes["train"] > 8 * sizes["valid"] > 0 and sizes["test"] > 0
    if name == "greek":
        text = paths["train"].read_text(encoding="utf-8")
        assert sum("\u0370" <= c <= "\u03ff" for c in text) > 0.5 * sum(c.isalpha() for c in text)


@pytest.mark.parametrize("name", SYNTHETIC + ["code", "greek"])
def test_same_seed_same_bytes(name, tmp_path):
    a, b, c = (write(name, tmp_path / d, seed=s) for d, s in (("a", 1), ("b", 1), ("c", 2)))
    for part in PARTS:
        assert a[part].read_bytes() == b[part].read_bytes()
    if name in SYNTHETIC:
        assert a["train"].read_bytes() != c["train"].read_bytes()


def test_numbers_in_words():
    assert tasks.words(0) == "zero"
    assert tasks.words(42007) == "forty-two thousand seven"
    assert tasks.words(342517) == "three hundred forty-two thousand five hundred seventeen"
    assert tasks.words(999_999) == ("nine hundred ninety-nine thousand nine hundred ninety-nine")


def test_greek_letters():
    assert tasks.to_greek("The thesis is") == "Θε θεσις ις"


def test_command_line_writes_the_default_sizes(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "questions", str(tmp_path)],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert "5,000 lines" in result.stdout
    counts = [len((tmp_path / f"{p}.tsv").read_text().splitlines()) for p in PARTS]
    assert counts == [5000, 500, 500]
