"""`--quantize int8` against fp32 for `translate`, `generate` and `classify`, and
`translate --shortlist` with either: whole-process speed, quality and peak memory, the
variants of a command measured alternately in the same run; and the same calls
in-process, without start-up."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import sacrebleu
from harness import (
    MULTI30K,
    PYTHON,
    REF_SAMPLE,
    SELF,
    SEQTOOL,
    SEQTOOL_P,
    SST2,
    TRAIN,
    VALID,
    BenchError,
    Section,
    Sizes,
    display_path,
    key_values,
    last_json,
    run,
    train_models,
    worktree,
)

from sections.classifier import test_texts
from sections.library import BASELINE

TITLE = "int8 inference (`--quantize int8`) and vocabulary shortlists (`--shortlist`)"
MODES = ("none", "int8")
QUANTIZE = {mode: ["--quantize", mode] for mode in MODES}
# translate: each quantization with and without the shortlist
SEARCHES = {
    **QUANTIZE,
    "shortlist": ["--shortlist"],
    "int8_shortlist": ["--quantize", "int8", "--shortlist"],
}
LABELS = {"none": "fp32", "int8": "int8", "shortlist": "fp32 --shortlist",
          "int8_shortlist": "int8 --shortlist"}  # fmt: skip


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


def alternate(sec: Section, name: str, argvs: dict, repeats: int, envs: dict | None = None) -> dict:
    """Run each variant's argv in turn (with its `envs` entry added to the environment),
    `repeats` rounds: per variant the median wall, the largest peak RSS and the last
    stdout."""
    walls, rss, stdout = {v: [] for v in argvs}, dict.fromkeys(argvs, 0.0), {}
    for _ in range(repeats):
        for variant, argv in argvs.items():
            child = run(argv, env=(envs or {}).get(variant))
            sec.commands[f"{name}_{variant}"] = child.command
            walls[variant].append(child.wall)
            rss[variant] = max(rss[variant], child.max_rss_mb)
            stdout[variant] = child.stdout
    return {v: (statistics.median(walls[v]), rss[v], stdout[v]) for v in argvs}


def with_options(command: list, variants: dict) -> dict:
    """Variant -> `command` followed by that variant's options."""
    return {variant: [*command, *options] for variant, options in variants.items()}


def with_baseline(sec: Section, args: list, variants: dict, env: dict) -> dict:
    """Variant -> argv: `seqtool ARGS` with each variant's options, and "baseline": the
    baseline's code (`env`) running ARGS, if it can (run once here, which also warms it
    up); if it cannot, why goes into the notes and its rows are left out."""
    argvs = with_options([*SEQTOOL, *args], variants)
    try:
        run([*SEQTOOL_P, *args], env=env)
    except BenchError as err:
        sec.notes.append(f"the baseline's rows are left out: {err}")
    else:
        argvs["baseline"] = [*SEQTOOL_P, *args]
    return argvs


def probe_shortlist(run_dir: str, source: str, target: str, batch_size: str) -> None:
    """How much of each reference its batch's shortlist holds, batched as `translate`
    batches (sorted by length), and the shortlists' mean size."""
    import json

    import seqtool
    from seqtool.data import encode_lines

    translator = seqtool.load(run_dir, task="translator", device="cpu")
    limit = translator.config.max_length
    read = Path(source).read_text(encoding="utf-8").splitlines()
    src = encode_lines(translator.src_tokenizer, read, limit, print, "source lines")
    tgt = encode_lines(
        translator.tgt_tokenizer, Path(target).read_text(encoding="utf-8").splitlines(), limit,
        print, "target lines",
    )  # fmt: skip
    order, size = sorted(range(len(src)), key=lambda i: len(src[i])), int(batch_size)
    listed = pieces = 0
    sizes = []
    for start in range(0, len(order), size):
        chunk = order[start : start + size]
        vocab = set(translator.shortlist([src[i] for i in chunk]).tolist())
        sizes.append(len(vocab))
        pieces += sum(len(tgt[i]) for i in chunk)
        listed += sum(t in vocab for i in chunk for t in tgt[i])
    print(json.dumps({"coverage": listed / pieces, "mean_size": statistics.mean(sizes),
                      "vocab": translator.config.tgt_vocab_size}))  # fmt: skip


def measure(sec: Section, sizes: Sizes, out: Path, baseline: str = BASELINE) -> None:
    runs = models(sec, sizes, out)
    tree = out / "quantize" / "baseline"
    with worktree(sec, tree, baseline) as rev:
        env = {"PYTHONPATH": display_path(tree)}
        translate(sec, sizes, runs["de-en"], env, rev)
        sample(sec, sizes, runs["shakes"])
        classify(sec, sizes, out, runs["sst2"], env, rev)
    sec.notes.append(
        f"walls: median of {sizes.repeats} whole-process runs, the variants alternating; the "
        "models have the default shapes (translator, classifier ensemble of 3, generator "
        f"2x512 LSTM) and were trained for {', '.join(sizes.quantize_train)} (translator, "
        "classifier, generator): the speed depends on the shapes, and the quality change "
        "is measured on those weights"
    )
    sec.notes.append(
        f'baseline: the code at {rev} (the speed targets\' "today"), run as '
        "PYTHONPATH=TREE python -P -m seqtool on the same checkpoints, alternating with "
        "this checkout's commands"
    )


def translate(sec: Section, sizes: Sizes, run_dir: Path, env: dict, rev: str) -> None:
    """Whole `translate` runs of every search variant and the baseline's fp32, BLEU,
    peak RSS, the in-process ratio and the shortlist's coverage."""
    source = MULTI30K / "test2016.de"
    references = (MULTI30K / "test2016.en").read_text(encoding="utf-8").splitlines()
    argvs = with_baseline(sec, ["translate", run_dir, source, "--beam-size", 5], SEARCHES, env)
    found = alternate(sec, "translate", argvs, sizes.repeats, {"baseline": env})
    for variant, (wall, rss, text) in found.items():
        bleu = sacrebleu.corpus_bleu(text.splitlines(), [references]).score
        found[variant] = (wall, rss, bleu)
    w32, r32, b32 = found["none"]
    count = len(references)
    for variant in list(SEARCHES)[1:]:
        wall, rss, bleu = found[variant]
        label, names = LABELS[variant], ["translate_none", f"translate_{variant}"]
        sec.add(f"`translate` test2016 beam 5, {label} (ref: fp32), whole process",
                "sentences/s", count / wall, count / w32, commands=names)  # fmt: skip
        sec.add(f"`translate` test2016 beam 5 BLEU, {label} (ref: fp32)", "BLEU", bleu, b32,
                commands=names)  # fmt: skip
        limit = "value >= -0.2" if variant == "shortlist" else "value >= -0.3"
        sec.add(f"BLEU change, {label} - fp32", "BLEU", bleu - b32, target=limit, commands=names)
        sec.add(f"`translate` peak RSS, {label} (ref: fp32)", "MiB", rss, r32, commands=names)
    if "baseline" in found:
        wall, _, bleu = found["int8_shortlist"]
        wb, _, bb = found["baseline"]
        names = ["translate_baseline", "translate_int8_shortlist"]
        sec.add(f"`translate` test2016 beam 5, int8 --shortlist (ref: fp32 at {rev}), "
                "whole process", "sentences/s", count / wall, count / wb, "ratio >= 2",
                names)  # fmt: skip
        sec.add(f"BLEU change, int8 --shortlist - fp32 at {rev}", "BLEU", bleu - bb,
                target="value >= -0.3", commands=names)  # fmt: skip
        sec.add(f"`translate` test2016 beam 5, fp32 (ref: fp32 at {rev}), whole process",
                "sentences/s", count / w32, count / wb,
                commands=["translate_baseline", "translate_none"])  # fmt: skip
    inprocess(sec, "translate", run_dir, source, sizes.repeats)
    child = run([*SELF, "probe-shortlist", run_dir, source, MULTI30K / "test2016.en", 64])
    sec.commands["coverage"] = child.command
    covered = last_json(child.stdout)
    sec.add("test2016 reference pieces in their batch's shortlist (batches of 64)", "fraction",
            covered["coverage"], commands=["coverage"])  # fmt: skip
    sec.add("shortlist size per batch of 64 (ref: the target vocabulary)", "pieces",
            covered["mean_size"], covered["vocab"], commands=["coverage"])  # fmt: skip


def sample(sec: Section, sizes: Sizes, run_dir: Path) -> None:
    """Batch-1 sampling in-process and whole `generate`, against bench/ref_sample.py run
    in the same rounds (its speed varies from run to run here), and bits/char."""
    length, repeats = sizes.sample_length, sizes.repeats
    cfg = last_json(run([*SEQTOOL, "info", run_dir, "--json"]).stdout)
    ref_argv = [
        PYTHON, REF_SAMPLE, "--length", length, "--hidden", cfg["model_config"]["hidden_size"],
        "--layers", cfg["model_config"]["num_layers"],
        "--emb", cfg["model_config"]["embedding_size"], "--vocab", cfg["vocab_size"]["text"],
    ]  # fmt: skip
    sampled = alternate(
        sec, "generate",
        with_options([*SEQTOOL, "generate", run_dir, "--length", length, "--seed", 0], QUANTIZE),
        repeats,
    )  # fmt: skip
    loop, refs = {}, []
    for _ in range(repeats):  # alternating: the reference, then each mode
        ref = run(ref_argv)
        sec.commands["ref_sample"] = ref.command
        refs.append(key_values(ref.stdout)["chars_per_s"])
        for mode in MODES:
            child = run([*SELF, "probe-sample", run_dir, length, 1, "cpu", mode])
            sec.commands[f"loop_{mode}"] = child.command
            loop.setdefault(mode, []).append(last_json(child.stdout)["chars_per_s"])
    ref_cps = statistics.median(refs)
    sec.notes.append(
        "bench/ref_sample.py chars/s in the rounds: " + ", ".join(f"{r:,.0f}" for r in refs)
    )
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
        child = run([*SEQTOOL, "evaluate", run_dir, "--data", VALID, "--json",
                     "--quantize", mode])  # fmt: skip
        sec.commands[f"bits_{mode}"] = child.command
        bits[mode] = last_json(child.stdout)["bits_per_char"]
    sec.add("tinyshakespeare valid bits/char, int8 (ref: fp32)", "bits/char", bits["int8"],
            bits["none"], "ratio <= 1.01", ["bits_none", "bits_int8"])  # fmt: skip


def classify(sec: Section, sizes: Sizes, out: Path, run_dir: Path, env: dict, rev: str) -> None:
    """Whole `classify` runs in fp32, int8 and the baseline's fp32; in-process; accuracy."""
    texts = out / "quantize" / "sst2_test.txt"
    texts.write_text("\n".join(test_texts()) + "\n")
    argvs = with_baseline(sec, ["classify", run_dir, texts], QUANTIZE, env)
    classified = alternate(sec, "classify", argvs, sizes.repeats, {"baseline": env})
    lines = len(test_texts())
    sec.add("`classify` SST-2 test, int8 (ref: fp32), whole process", "sentences/s",
            lines / classified["int8"][0], lines / classified["none"][0],
            commands=["classify_none", "classify_int8"])  # fmt: skip
    if "baseline" in classified:
        sec.add(f"`classify` SST-2 test, int8 (ref: fp32 at {rev}), whole process",
                "sentences/s", lines / classified["int8"][0], lines / classified["baseline"][0],
                "ratio >= 1.5", ["classify_baseline", "classify_int8"])  # fmt: skip
    inprocess(sec, "classify", run_dir, texts, sizes.repeats)
    sec.add("`classify` peak RSS, int8 (ref: fp32)", "MiB", classified["int8"][1],
            classified["none"][1], commands=["classify_none", "classify_int8"])  # fmt: skip
    accuracy = {}
    for mode in MODES:
        child = run([*SEQTOOL, "evaluate", run_dir, "--data", SST2 / "test.tsv", "--json",
                     "--quantize", mode])  # fmt: skip
        sec.commands[f"accuracy_{mode}"] = child.command
        accuracy[mode] = last_json(child.stdout)["accuracy"]
    sec.add("SST-2 test accuracy, int8 (ref: fp32)", "fraction", accuracy["int8"],
            accuracy["none"], "ratio >= 0.995", ["accuracy_none", "accuracy_int8"])  # fmt: skip


def inprocess(sec: Section, task: str, run_dir: Path, data: Path, repeats: int) -> None:
    """The fastest variant against fp32 on the same lines in one process, start-up left
    out (importing torch alone takes over a second here)."""
    child = run([*SELF, "probe-inprocess", run_dir, data, repeats])
    sec.commands[f"{task}_inprocess"] = child.command
    rates = last_json(child.stdout)
    fast = "int8 --shortlist" if task == "translate" else "int8"
    what = "test2016 beam 5" if task == "translate" else "SST-2 test"
    sec.add(f"`{task}` {what}, {fast} (ref: fp32), in-process", "sentences/s", rates["fast"],
            rates["fp32"], commands=[f"{task}_inprocess"])  # fmt: skip


def probe_inprocess(run_dir: str, data: str, repeats: str) -> None:
    """Prints {"fp32": lines/s, "fast": lines/s} for every line of `data` (a translator at
    beam 5; "fast" is int8 with the shortlist for a translator, int8 for a classifier):
    both models loaded once, the calls alternated `repeats` times, medians."""
    import json

    import seqtool

    lines = Path(data).read_text(encoding="utf-8").splitlines()
    fp32 = seqtool.load(run_dir, device="cpu")
    fast = seqtool.load(run_dir, device="cpu", quantize="int8")
    if fp32.task == "translator":
        calls = {"fp32": lambda: fp32.translate(lines, beam_size=5),
                 "fast": lambda: fast.translate(lines, beam_size=5, shortlist=True)}  # fmt: skip
    else:
        calls = {"fp32": lambda: fp32.classify(lines), "fast": lambda: fast.classify(lines)}
    for call in calls.values():  # warm-up
        call()
    walls: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(int(repeats)):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            walls[name].append(time.perf_counter() - start)
    print(json.dumps({name: len(lines) / statistics.median(w) for name, w in walls.items()}))
