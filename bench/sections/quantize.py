"""`--quantize int8` against fp32 for `translate`, `generate` and `classify`: whole-process
speed, quality and peak memory, each pair measured alternately in the same run."""

from __future__ import annotations

import statistics
from pathlib import Path

import sacrebleu
from harness import (
    MULTI30K,
    PYTHON,
    REF_SAMPLE,
    SELF,
    SEQTOOL,
    SST2,
    TRAIN,
    VALID,
    Section,
    Sizes,
    key_values,
    last_json,
    run,
    train_models,
)

from sections.classifier import test_texts

TITLE = "int8 inference (`--quantize int8`)"
MODES = ("none", "int8")


def models(sec: Section, sizes: Sizes, out: Path) -> dict[str, Path]:
    """A translator, a classifier and a generator with the default model shapes, trained
    briefly: the speed depends on the shapes, the quality change on trained weights."""
    work = out / "quantize"
    data = {
        "de-en": ["translator", "--train", MULTI30K / "train", "--valid", MULTI30K / "valid",
                  "--src-lang", "de", "--tgt-lang", "en", "--max-time", sizes.quantize_train[0]],
        "sst2": ["classifier", "--train", SST2 / "train.tsv", "--valid", SST2 / "valid.tsv",
                 "--max-time", sizes.quantize_train[1]],
        "shakes": ["generator", "--train", TRAIN, "--valid", VALID,
                   "--max-time", sizes.quantize_train[2]],
    }  # fmt: skip
    return train_models(sec, work, data, sizes.quantize_extra)


def alternate(sec: Section, name: str, command: list, repeats: int) -> dict:
    """Run `command --quantize MODE` for each mode in turn, `repeats` rounds: per mode the
    median wall, the largest peak RSS and the last stdout."""
    walls, rss, stdout = {m: [] for m in MODES}, {m: 0.0 for m in MODES}, {}
    for _ in range(repeats):
        for mode in MODES:
            child = run([*command, "--quantize", mode])
            sec.commands[f"{name}_{mode}"] = child.command
            walls[mode].append(child.wall)
            rss[mode] = max(rss[mode], child.max_rss_mb)
            stdout[mode] = child.stdout
    return {m: (statistics.median(walls[m]), rss[m], stdout[m]) for m in MODES}


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    runs = models(sec, sizes, out)
    repeats = sizes.repeats
    source = MULTI30K / "test2016.de"
    references = (MULTI30K / "test2016.en").read_text(encoding="utf-8").splitlines()

    found = alternate(
        sec, "translate", [*SEQTOOL, "translate", runs["de-en"], source, "--beam-size", 5], repeats
    )
    for mode, (wall, rss, text) in found.items():
        bleu = sacrebleu.corpus_bleu(text.splitlines(), [references]).score
        found[mode] = (wall, rss, bleu)
    (w32, r32, b32), (w8, r8, b8) = found["none"], found["int8"]
    count = len(references)
    names = ["translate_none", "translate_int8"]
    sec.add("`translate` test2016 beam 5, int8 (ref: fp32), whole process", "sentences/s",
            count / w8, count / w32, "ratio >= 2", names)  # fmt: skip
    sec.add("`translate` test2016 beam 5 BLEU, int8 (ref: fp32)", "BLEU", b8, b32,
            commands=names)  # fmt: skip
    sec.add("BLEU change, int8 - fp32", "BLEU", b8 - b32, target="value >= -0.3", commands=names)
    sec.add("`translate` peak RSS, int8 (ref: fp32)", "MiB", r8, r32, commands=names)

    length = sizes.sample_length
    cfg = last_json(run([*SEQTOOL, "info", runs["shakes"], "--json"]).stdout)
    ref = run([
        PYTHON, REF_SAMPLE, "--length", length, "--hidden", cfg["model_config"]["hidden_size"],
        "--layers", cfg["model_config"]["num_layers"],
        "--emb", cfg["model_config"]["embedding_size"], "--vocab", cfg["vocab_size"]["text"],
    ])  # fmt: skip
    sec.commands["ref_sample"] = ref.command
    ref_cps = key_values(ref.stdout)["chars_per_s"]
    sampled = alternate(
        sec, "generate",
        [*SEQTOOL, "generate", runs["shakes"], "--length", length, "--seed", 0], repeats,
    )  # fmt: skip
    loop = {}
    for _ in range(repeats):  # alternating, as the whole-process runs
        for mode in MODES:
            child = run([*SELF, "probe-sample", runs["shakes"], length, 1, "cpu", mode])
            sec.commands[f"loop_{mode}"] = child.command
            loop.setdefault(mode, []).append(last_json(child.stdout)["chars_per_s"])
    for mode in MODES:
        label, target = ("int8", "ratio >= 15") if mode == "int8" else ("fp32", "")
        sec.add(f"sampling batch 1, {label}, in-process loop (ref: bench/ref_sample.py, "
                "same shape)", "chars/s", statistics.median(loop[mode]), ref_cps, target,
                [f"loop_{mode}", "ref_sample"])  # fmt: skip
        sec.add(f"`generate --length {length}` batch 1, {label}, start-up included "
                "(ref: bench/ref_sample.py, same shape)", "chars/s", length / sampled[mode][0],
                ref_cps, commands=[f"generate_{mode}", "ref_sample"])  # fmt: skip
    sec.add("`generate` peak RSS, int8 (ref: fp32)", "MiB", sampled["int8"][1],
            sampled["none"][1], commands=["generate_none", "generate_int8"])  # fmt: skip
    bits = {}
    for mode in MODES:
        child = run([*SEQTOOL, "evaluate", runs["shakes"], "--data", VALID, "--json",
                     "--quantize", mode])  # fmt: skip
        sec.commands[f"bits_{mode}"] = child.command
        bits[mode] = last_json(child.stdout)["bits_per_char"]
    sec.add("tinyshakespeare valid bits/char, int8 (ref: fp32)", "bits/char", bits["int8"],
            bits["none"], "ratio <= 1.01", ["bits_none", "bits_int8"])  # fmt: skip

    texts = out / "quantize" / "sst2_test.txt"
    texts.write_text("\n".join(test_texts()) + "\n")
    classified = alternate(sec, "classify", [*SEQTOOL, "classify", runs["sst2"], texts], repeats)
    lines = len(test_texts())
    sec.add("`classify` SST-2 test, int8 (ref: fp32), whole process", "sentences/s",
            lines / classified["int8"][0], lines / classified["none"][0], "ratio >= 1.5",
            ["classify_none", "classify_int8"])  # fmt: skip
    sec.add("`classify` peak RSS, int8 (ref: fp32)", "MiB", classified["int8"][1],
            classified["none"][1], commands=["classify_none", "classify_int8"])  # fmt: skip
    accuracy = {}
    for mode in MODES:
        child = run([*SEQTOOL, "evaluate", runs["sst2"], "--data", SST2 / "test.tsv", "--json",
                     "--quantize", mode])  # fmt: skip
        sec.commands[f"accuracy_{mode}"] = child.command
        accuracy[mode] = last_json(child.stdout)["accuracy"]
    sec.add("SST-2 test accuracy, int8 (ref: fp32)", "fraction", accuracy["int8"],
            accuracy["none"], "ratio >= 0.995", ["accuracy_none", "accuracy_int8"])  # fmt: skip
    sec.notes.append(
        f"walls: median of {repeats} whole-process runs, fp32 and int8 alternating; the "
        "models have the default shapes (translator, classifier ensemble of 3, generator "
        f"2x512 LSTM) and were trained for {', '.join(sizes.quantize_train)} (translator, "
        "classifier, generator): the speed depends on the shapes, and the quality change "
        "is measured on those weights"
    )
