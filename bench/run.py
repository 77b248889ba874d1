"""Benchmark harness: `make bench` runs `python bench/run.py --out BENCHMARKS.md`.

Every figure is measured beside its reference (the hand-written PyTorch scripts in
../shared/bench/) in the same run on the same machine, and is written with the exact
command that reproduces it. Sections run one after another, never in parallel, since
they time things on a few cores:

    throughput  training chars/s, fp32 and bf16, against ref_charlstm.py
    sampling    sampling chars/s against ref_sample.py
    quality     validation bits/char after 10 minutes against ref_charlstm.py
    memory      peak RSS, tokenization speed and time to the first step on a 1 GB corpus
    startup     `seqtool --help` and `import seqtool.cli` times, torch not imported
    classifier  SST-2 test accuracy over seeds, `seqtool classify` speed and memory
    translation Multi30k de->en BLEU/chrF after 45 minutes, with and without attention
    translate   `seqtool translate` speed (greedy, beam 1/5/10) against bench/ref_beam.py,
                and memory while streaming 100,000 lines

    python bench/run.py --out BENCHMARKS.md              # everything (about an hour)
    python bench/run.py --only sampling,startup --out BENCHMARKS.md
    python bench/run.py --quick --out /tmp/bench.md      # smoke test, tiny sizes

Raw results go to bench/out/results.json (bench/out/quick/ for --quick); with --only the
other sections are kept from the previous results. `python bench/run.py probe-sample ...`
and `probe-tokenize ...` are the in-process measurements the sections run as children.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path("../shared")  # relative to ROOT, the working directory
CORPUS = SHARED / "corpora" / "tinyshakespeare"
TRAIN, VALID = CORPUS / "train.txt", CORPUS / "valid.txt"
REF_TRAIN = SHARED / "bench" / "ref_charlstm.py"
REF_SAMPLE = SHARED / "bench" / "ref_sample.py"
SST2 = SHARED / "corpora" / "sst2"
MULTI30K = SHARED / "corpora" / "multi30k"
SECTIONS = (
    "throughput",
    "sampling",
    "quality",
    "memory",
    "startup",
    "classifier",
    "translation",
    "translate",
)
CHILD_TIMEOUT = 2 * 3600  # seconds; a hung child must not hang the whole benchmark


@dataclass(frozen=True)
class Sizes:
    """How big each section runs: FULL for BENCHMARKS.md, QUICK for a smoke test."""

    hidden: int  # throughput model (and the sampling checkpoint)
    ref_steps: int  # ref_charlstm.py --steps in throughput
    steps: int  # seqtool --max-steps in throughput
    log_every: int
    sample_length: int
    quality_seconds: int
    quality_hidden: tuple[int, int]  # the two reference sizes
    quality_extra: tuple[str, ...]  # extra seqtool options (none: seqtool's defaults)
    memory_mb: int
    repeats: int  # startup timings, median of this many
    seeds: int  # classifier: seeds averaged
    classifier_extra: tuple[str, ...]  # classifier: options beyond seqtool's defaults
    stream_lines: int  # classifier and translator: lines piped through from stdin
    translation_time: str  # translator training budget
    translation_extra: tuple[str, ...]  # translator: options beyond seqtool's defaults


FULL = Sizes(512, 60, 300, 10, 2000, 600, (256, 512), (), 1000, 5, 3, (), 100_000, "45m", ())
QUICK = Sizes(
    64, 5, 30, 5, 200, 5, (32, 64), ("--hidden-size", "64"), 5, 3,
    2, ("--max-steps", "20", "--hidden-size", "16"), 3000,
    "20s", ("--hidden-size", "32", "--embedding-size", "32", "--eval-every", "50"),
)  # fmt: skip


@dataclass
class Figure:
    name: str
    unit: str
    seqtool: float | str | None
    reference: float | None = None
    ratio: float | None = None  # seqtool / reference
    target: str = ""  # "ratio >= 1.0", "deviation <= 0.02", "value < 2048", "value is no"
    met: bool | None = None
    commands: list[str] = field(default_factory=list)  # labels into Section.commands


@dataclass
class Section:
    name: str
    title: str
    date: str = ""
    seconds: float = 0.0
    quick: bool = False
    figures: list[Figure] = field(default_factory=list)
    commands: dict[str, str] = field(default_factory=dict)  # label -> shell command
    notes: list[str] = field(default_factory=list)
    error: str | None = None

    def add(self, name, unit, value, reference=None, target="", commands=()) -> None:
        """Record a figure; the ratio is value / reference, the target is checked."""
        fig = Figure(name, unit, value, reference, target=target, commands=list(commands))
        if isinstance(value, float) and reference:
            fig.ratio = value / reference
        fig.met = check_target(fig)
        self.figures.append(fig)


@dataclass
class Child:
    """A finished child process."""

    command: str
    stdout: str
    stderr: str
    wall: float  # seconds
    max_rss_mb: float  # peak resident set size, MiB


class BenchError(Exception):
    pass


# -- running children -----------------------------------------------------------------


def _display_path(path: Path) -> str:
    path = path.absolute()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


PYTHON = _display_path(Path(sys.executable))
_SEQTOOL_BIN = Path(sys.executable).parent / "seqtool"
SEQTOOL = [_display_path(_SEQTOOL_BIN)] if _SEQTOOL_BIN.exists() else [PYTHON, "-m", "seqtool"]
SELF = [PYTHON, "bench/run.py"]


def run(argv: list, timeout: float = CHILD_TIMEOUT, stdin: Path | None = None) -> Child:
    """Run a child to completion; wall time and peak RSS (os.wait4's ru_maxrss, KiB on
    Linux) are its own. Output goes to temporary files, so nothing blocks on a pipe."""
    argv = [str(a) for a in argv]
    command = shlex.join(argv) + (f" < {stdin}" if stdin else "")
    log(f"  $ {command}")
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        stdin.open("rb") if stdin else open(os.devnull, "rb") as source,
    ):
        start = time.perf_counter()
        proc = subprocess.Popen(argv, stdout=out, stderr=err, stdin=source)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        tail = " | ".join(line.strip() for line in stderr.strip().splitlines()[-3:])
        raise BenchError(f"`{command}` exited with {proc.returncode}: {tail}")
    return Child(command, stdout, stderr, wall, usage.ru_maxrss / 1024)


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def key_values(text: str) -> dict[str, float]:
    """`steps=60 chars_per_s=1234 ...` (the reference scripts' last line) -> dict."""
    return {k: float(v) for k, v in re.findall(r"(\w+)=([-+\d.eE]+)", text)}


def last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def read_metrics(run_dir: Path, speed: str = "chars_per_s") -> tuple[list[dict], list[dict]]:
    """RUN/metrics.jsonl -> (log records, validation records)."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logs = [r for r in records if speed in r]
    evals = [r for r in records if r.get("split") == "valid"]
    return logs, evals


OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt}


def check_target(fig: Figure) -> bool | None:
    if not fig.target:
        return None
    subject, op, bound = fig.target.split()
    if subject == "value":
        value = fig.seqtool
    elif fig.ratio is None:
        return None
    else:
        value = fig.ratio if subject == "ratio" else abs(fig.ratio - 1)
    if value is None:
        return None
    if op == "is":
        return str(value) == bound
    return bool(OPS[op](float(value), float(bound)))


# -- sections -------------------------------------------------------------------------


def model_options(hidden: int) -> list[str]:
    """The throughput model and schedule, as seqtool options (matching ref_charlstm.py)."""
    return [
        "--hidden-size", hidden, "--layers", 2, "--embedding-size", 64, "--batch-size", 64,
        "--seq-len", 128, "--dropout", 0, "--schedule", "constant", "--warmup-steps", 0,
        "--lr", "2e-3", "--clip", "1.0",
    ]  # fmt: skip


def throughput(sec: Section, sizes: Sizes, out: Path) -> None:
    ref = run([
        PYTHON, REF_TRAIN, "--train", TRAIN, "--valid", VALID, "--hidden", sizes.hidden,
        "--layers", 2, "--emb", 64, "--batch", 64, "--seq", 128, "--lr", "2e-3",
        "--dropout", 0, "--steps", sizes.ref_steps,
    ])  # fmt: skip
    sec.commands["ref"] = ref.command
    ref_cps = key_values(ref.stdout)["chars_per_s"]
    results = {}
    for precision in ("fp32", "bf16"):
        run_dir = out / f"tp_{precision}"
        child = run([
            *SEQTOOL, "train", "generator", "--train", TRAIN, "--valid", VALID,
            "--out", run_dir, "--force", "--precision", precision,
            "--max-steps", sizes.steps, "--eval-every", sizes.steps,
            "--log-every", sizes.log_every, *model_options(sizes.hidden),
        ])  # fmt: skip
        sec.commands[precision] = child.command
        logs, evals = read_metrics(run_dir)
        steady = logs[2:] or logs  # the first two windows are warm-up
        cps = statistics.mean(r["chars_per_s"] for r in steady)
        results[precision] = (cps, evals[-1]["loss"])
        rates = sorted(r["chars_per_s"] for r in steady)
        sec.notes.append(
            f"{precision}: mean of {len(steady)} log windows of {sizes.log_every} steps "
            f"(first {len(logs) - len(steady)} dropped as warm-up; min {rates[0]:,.0f}, median "
            f"{statistics.median(rates):,.0f}, max {rates[-1]:,.0f} chars/s); process wall "
            f"{child.wall:.0f} s, peak RSS {child.max_rss_mb:.0f} MiB"
        )
    (fp32, fp32_loss), (bf16, bf16_loss) = results["fp32"], results["bf16"]
    arch = f"LSTM 2x{sizes.hidden}, batch 64x128"
    sec.add(
        f"training chars/s, fp32 ({arch})",
        "chars/s",
        fp32,
        ref_cps,
        "ratio >= 1.0",
        ["fp32", "ref"],
    )
    sec.add(
        f"training chars/s, bf16 ({arch})",
        "chars/s",
        bf16,
        ref_cps,
        "ratio >= 1.6",
        ["bf16", "ref"],
    )
    sec.add(
        f"valid loss after {sizes.steps} steps: bf16 (seqtool) vs fp32 (reference)",
        "nats/char",
        bf16_loss,
        fp32_loss,
        "deviation <= 0.02",
        ["bf16", "fp32"],
    )
    sec.notes.append(
        f"ref: {key_values(ref.stdout).get('steps', 0):.0f} steps, its chars/s includes its "
        f"first (warm-up) steps; its val_loss is after a different number of steps, so it is "
        f"not compared. Threads: torch's default in every process."
    )


def sampling(sec: Section, sizes: Sizes, out: Path) -> None:
    run_dir = out / "tp_fp32"
    if not (run_dir / "best.ckpt").exists():
        child = run([
            *SEQTOOL, "train", "generator", "--train", TRAIN, "--valid", VALID,
            "--out", run_dir, "--force", "--precision", "fp32", "--max-steps", 10,
            "--eval-every", 10, *model_options(sizes.hidden),
        ])  # fmt: skip
        sec.commands["train"] = child.command
        sec.notes.append(
            f"no checkpoint from the throughput section: trained a small one for 10 steps "
            f"({child.wall:.0f} s); sampling speed does not depend on the weights"
        )
    info = last_json(run([*SEQTOOL, "info", run_dir, "--json"]).stdout)
    vocab = info["vocab_size"]["text"]
    cfg = info["model_config"]
    length = sizes.sample_length
    ref = run([
        PYTHON, REF_SAMPLE, "--length", length, "--hidden", cfg["hidden_size"],
        "--layers", cfg["num_layers"], "--emb", cfg["embedding_size"], "--vocab", vocab,
    ])  # fmt: skip
    sec.commands["ref"] = ref.command
    ref_cps = key_values(ref.stdout)["chars_per_s"]
    loop = {}
    for batch in (1, 4):
        child = run([*SELF, "probe-sample", run_dir, length, batch])
        sec.commands[f"loop{batch}"] = child.command
        loop[batch] = last_json(child.stdout)["chars_per_s"]
    gen = run([*SEQTOOL, "generate", run_dir, "--length", length, "--seed", 0])
    sec.commands["generate"] = gen.command
    arch = f"{cfg['cell'].upper()} {cfg['num_layers']}x{cfg['hidden_size']}, vocab {vocab}"
    sec.add(
        f"sampling chars/s, batch 1, in-process loop ({arch})",
        "chars/s",
        loop[1],
        ref_cps,
        "ratio >= 5",
        ["loop1", "ref"],
    )
    sec.add(
        "sampling chars/s, batch 4 (all samples) vs ref batch 1",
        "chars/s",
        loop[4],
        ref_cps,
        commands=["loop4", "ref"],
    )
    sec.add(
        f"`seqtool generate --length {length}` chars/s, start-up included",
        "chars/s",
        length / gen.wall,
        ref_cps,
        commands=["generate", "ref"],
    )
    sec.add(f"`seqtool generate --length {length}` wall time", "s", gen.wall, commands=["generate"])
    sec.notes.append(
        f"{length} characters at temperature 0.8; the in-process loop times "
        f"seqtool.decoding.sample after a 50-token warm-up, without loading or start-up."
    )


def quality(sec: Section, sizes: Sizes, out: Path) -> None:
    seconds = sizes.quality_seconds
    budget = f"{seconds // 60}m" if seconds % 60 == 0 else f"{seconds}s"
    refs = {}
    for hidden in sizes.quality_hidden:
        child = run([
            PYTHON, REF_TRAIN, "--train", TRAIN, "--valid", VALID, "--seconds", seconds,
            "--hidden", hidden,
        ])  # fmt: skip
        sec.commands[f"ref{hidden}"] = child.command
        refs[hidden] = key_values(child.stdout)
    run_dir = out / "quality"
    train = run([
        *SEQTOOL, "train", "generator", "--train", TRAIN, "--valid", VALID, "--out", run_dir,
        "--force", "--max-time", budget, *sizes.quality_extra,
    ])  # fmt: skip
    sec.commands["train"] = train.command
    evaluation = run([*SEQTOOL, "evaluate", run_dir, "--data", VALID, "--json"])
    sec.commands["evaluate"] = evaluation.command
    bpc = last_json(evaluation.stdout)["bits_per_char"]
    for hidden, ref in refs.items():
        sec.add(
            f"valid bits/char after {budget} vs ref hidden {hidden}",
            "bits/char",
            bpc,
            ref["val_bpc"],
            commands=["train", "evaluate", f"ref{hidden}"],
        )
    best = min(refs, key=lambda h: refs[h]["val_bpc"])
    sec.add(
        f"valid bits/char after {budget} vs the better ref (hidden {best})",
        "bits/char",
        bpc,
        refs[best]["val_bpc"],
        "ratio <= 1.0",
        ["train", "evaluate", f"ref{best}"],
    )
    logs, _ = read_metrics(run_dir)
    steps = logs[-1]["step"] if logs else "?"
    extra = f" with {' '.join(sizes.quality_extra)}" if sizes.quality_extra else ""
    sec.notes.append(
        f"seqtool: its defaults{extra}, {steps} steps in {budget} (its validation every 250 "
        f"steps counts against the budget), process wall {train.wall:.0f} s; "
        + "; ".join(f"ref hidden {h}: {r.get('steps', 0):.0f} steps" for h, r in refs.items())
    )


def make_corpus(path: Path, size: int) -> None:
    """Copies of tinyshakespeare train.txt, each after its own marker line, up to `size`
    bytes; kept between runs (bench/out/ is not in git)."""
    if path.exists() and path.stat().st_size >= size:
        return
    text = TRAIN.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("wb") as f:
        copy = 0
        while f.tell() < size:
            copy += 1
            f.write(f"=== copy {copy} ===\n".encode())
            f.write(text)
    os.replace(tmp, path)


def memory(sec: Section, sizes: Sizes, out: Path) -> None:
    """A corpus far larger than the model needs: peak RSS stays flat because the token
    ids live in a memory-mapped cache next to the run; the first start builds it, later
    starts map it."""
    corpus = out / f"big{sizes.memory_mb}mb.txt"
    make_corpus(corpus, sizes.memory_mb * 1_000_000)
    mb = corpus.stat().st_size / 1e6
    run_dir = out / "mem"
    shutil.rmtree(run_dir, ignore_errors=True)
    argv = [
        *SEQTOOL, "train", "generator", "--train", corpus, "--valid", VALID, "--out", run_dir,
        "--force", "--hidden-size", 64, "--embedding-size", 16, "--layers", 1, "--max-steps", 1,
    ]  # fmt: skip
    cold = run(argv)
    sec.commands["cold"] = cold.command
    warm = run(argv)  # --force keeps RUN/data: the cache is reused
    sec.commands["warm"] = warm.command
    shutil.rmtree(run_dir / "data", ignore_errors=True)  # its token cache, 2 bytes a char
    cache = out / "tokenize.ids"
    probe = run([*SELF, "probe-tokenize", corpus, cache])
    sec.commands["tokenize"] = probe.command
    for path in (cache, cache.with_suffix(".json")):
        path.unlink(missing_ok=True)
    speed = last_json(probe.stdout)
    sec.add(
        f"peak RSS, training on a {mb:,.0f} MB corpus (tokenize, cache, first step)",
        "MiB",
        cold.max_rss_mb,
        target="value < 2048",
        commands=["cold"],
    )
    sec.add(
        "time to the first training step, first start (builds the cache), whole process",
        "s",
        cold.wall,
        commands=["cold"],
    )
    sec.add(
        "time to the first training step, later start (maps the cache), whole process",
        "s",
        warm.wall,
        commands=["warm"],
    )
    sec.add(
        "tokenization speed (seqtool.data.encode_file, char)",
        "MB/s",
        speed["mb_per_s"],
        commands=["tokenize"],
    )
    sec.add(
        "peak RSS, tokenizer training + encode_file",
        "MiB",
        probe.max_rss_mb,
        target="value < 2048",
        commands=["tokenize"],
    )
    sec.notes.append(
        f"corpus: {corpus} ({mb:,.0f} MB), copies of tinyshakespeare train.txt, each after a "
        f"marker line; tokenizer training took {speed['train_s']:.1f} s, encode_file "
        f"{speed['encode_s']:.1f} s for {speed['tokens']:,} tokens. Both training runs stop "
        f"after one step and score the small tinyshakespeare valid.txt once. Peak RSS from "
        f"os.wait4."
    )


IMPORT_TIME = "import time; t=time.perf_counter(); import {}; print(time.perf_counter()-t)"


def startup(sec: Section, sizes: Sizes, out: Path) -> None:
    def median_wall(label: str, argv: list) -> float:
        walls = [run(argv).wall for _ in range(sizes.repeats)]
        sec.commands[label] = shlex.join(str(a) for a in argv)
        return statistics.median(walls)

    def median_printed(label: str, argv: list) -> float:
        values = [float(run(argv).stdout.split()[-1]) for _ in range(sizes.repeats)]
        sec.commands[label] = shlex.join(str(a) for a in argv)
        return statistics.median(values)

    n = sizes.repeats
    help_wall = median_wall("help", [*SEQTOOL, "--help"])
    bare_wall = median_wall("python", [PYTHON, "-c", "pass"])
    cli_import = median_printed("import", [PYTHON, "-c", IMPORT_TIME.format("seqtool.cli")])
    torch_import = median_printed("torch", [PYTHON, "-c", IMPORT_TIME.format("torch")])
    check = [PYTHON, "-c", 'import sys, seqtool.cli; print("torch" in sys.modules)']
    imported = run(check).stdout.strip().splitlines()[-1] == "True"
    sec.commands["check"] = shlex.join(check)
    sec.add(
        f"`seqtool --help` wall time, median of {n} (ref: bare `python -c pass`)",
        "s",
        help_wall,
        bare_wall,
        commands=["help", "python"],
    )
    sec.add(
        f"`import seqtool.cli` time, median of {n} (ref: `import torch`)",
        "s",
        cli_import,
        torch_import,
        commands=["import", "torch"],
    )
    sec.add(
        "torch imported by `import seqtool.cli`",
        "",
        "yes" if imported else "no",
        target="value is no",
        commands=["check"],
    )


def classifier(sec: Section, sizes: Sizes, out: Path) -> None:
    accuracies, f1s, seconds = [], [], []
    for seed in range(sizes.seeds):
        run_dir = out / f"sst2_seed{seed}"
        train = run([
            *SEQTOOL, "train", "classifier", "--train", SST2 / "train.tsv",
            "--valid", SST2 / "valid.tsv", "--out", run_dir, "--force", "--seed", seed,
            *sizes.classifier_extra,
        ])  # fmt: skip
        sec.commands[f"train{seed}"] = train.command
        test = run([*SEQTOOL, "evaluate", run_dir, "--data", SST2 / "test.tsv", "--json"])
        sec.commands[f"test{seed}"] = test.command
        scores = last_json(test.stdout)
        accuracies.append(100 * scores["accuracy"])
        f1s.append(100 * scores["macro_f1"])
        seconds.append(train.wall)
    spread = statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0
    labels = [f"train{i}" for i in range(sizes.seeds)] + [f"test{i}" for i in range(sizes.seeds)]
    sec.add(
        f"SST-2 test accuracy, mean of {sizes.seeds} seeds (ref: Kim CNN-rand, from the issue)",
        "%",
        statistics.mean(accuracies),
        82.7,
        target="ratio >= 1.0",
        commands=labels,
    )
    sec.add("SST-2 test accuracy, standard deviation over seeds", "points", spread)
    sec.add(
        "SST-2 test accuracy vs fastText tuned on valid (81.2, from the issue)",
        "%",
        statistics.mean(accuracies),
        81.2,
        target="ratio >= 1.0",
    )
    sec.add("SST-2 test macro-F1, mean over seeds", "%", statistics.mean(f1s))
    sec.add("training wall time per seed, longest", "s", max(seconds), target="value <= 300")
    sec.notes.append(
        "per seed: accuracy "
        + ", ".join(f"{a:.2f}" for a in accuracies)
        + "; the references are published or issue figures, not measured in this run"
    )

    # classify throughput on the test sentences, then 100,000 lines streamed from stdin
    texts = out / "sst2_test.txt"
    lines = [line.split("\t", 1)[1] for line in (SST2 / "test.tsv").read_text().splitlines()]
    texts.write_text("\n".join(lines) + "\n")
    model = out / "sst2_seed0"
    small = run([*SEQTOOL, "classify", model, texts])
    sec.commands["classify"] = small.command
    many = out / "lines100k.txt"
    repeat = -(-sizes.stream_lines // len(lines))
    many.write_text("\n".join((lines * repeat)[: sizes.stream_lines]) + "\n")
    stream = run([*SEQTOOL, "classify", model], stdin=many)
    sec.commands["stream"] = stream.command
    assert len(stream.stdout.splitlines()) == sizes.stream_lines, "one output line per input"
    sec.add(
        f"`seqtool classify` on the {len(lines):,} test sentences, whole process",
        "sentences/s",
        len(lines) / small.wall,
        commands=["classify"],
    )
    sec.add(
        f"`seqtool classify` on {sizes.stream_lines:,} lines from stdin, whole process",
        "sentences/s",
        sizes.stream_lines / stream.wall,
        commands=["stream"],
    )
    sec.add(
        f"peak RSS classifying {len(lines):,} lines",
        "MiB",
        small.max_rss_mb,
        commands=["classify"],
    )
    sec.add(
        f"peak RSS classifying {sizes.stream_lines:,} lines (streamed: about the same)",
        "MiB",
        stream.max_rss_mb,
        small.max_rss_mb,
        target="ratio <= 1.1",
        commands=["stream", "classify"],
    )


JOEYNMT_BLEU, JOEYNMT_CHRF = 36.9, 56.2  # the figures: JoeyNMT 2.3, 45 min here
JOEYNMT_SECONDS = 23.6  # JoeyNMT translating test2016 at beam 5, batch 64, here
JOEYNMT_TOKENS = 1200  # JoeyNMT training target tokens/s here


def translator_run(out: Path, attention: str) -> Path:
    return out / f"m30k_{attention}"


def translation(sec: Section, sizes: Sizes, out: Path) -> None:
    """Train on Multi30k de->en for the budget with seqtool's defaults, with and without
    attention; score test2016 at beam 5 (cased, detokenized sacrebleu)."""
    scores = {}
    for attention in ("bahdanau", "none"):
        run_dir = translator_run(out, attention)
        train = run([
            *SEQTOOL, "train", "translator", "--train", MULTI30K / "train",
            "--valid", MULTI30K / "valid", "--src-lang", "de", "--tgt-lang", "en",
            "--out", run_dir, "--force", "--max-time", sizes.translation_time,
            *(("--attention", "none") if attention == "none" else ()),
            *sizes.translation_extra,
        ])  # fmt: skip
        sec.commands[f"train_{attention}"] = train.command
        test = run([
            *SEQTOOL, "evaluate", run_dir, "--data", MULTI30K / "test2016",
            "--src-lang", "de", "--tgt-lang", "en", "--beam-size", 5, "--json",
        ])  # fmt: skip
        sec.commands[f"test_{attention}"] = test.command
        logs, evals = read_metrics(run_dir, "tokens_per_s")
        scores[attention] = last_json(test.stdout)
        scores[attention]["tokens_per_s"] = statistics.median(r["tokens_per_s"] for r in logs)
        scores[attention]["steps"] = logs[-1]["step"]
        scores[attention]["epochs"] = logs[-1]["epoch"]
    best, plain = scores["bahdanau"], scores["none"]
    labels = ["train_bahdanau", "test_bahdanau"]
    budget = sizes.translation_time
    sec.add(
        f"test2016 BLEU after {budget}, beam 5 (ref: JoeyNMT 2.3, {budget} here, from the issue)",
        "BLEU",
        best["bleu"],
        JOEYNMT_BLEU,
        target="ratio > 1.0",
        commands=labels,
    )
    sec.add(
        f"test2016 chrF after {budget}, beam 5 (ref: JoeyNMT 2.3, from the issue)",
        "chrF",
        best["chrf"],
        JOEYNMT_CHRF,
        target="ratio > 1.0",
        commands=labels,
    )
    sec.add(
        "test2016 BLEU, --attention none, same budget (ref: with attention, this run)",
        "BLEU",
        plain["bleu"],
        best["bleu"],
        commands=["train_none", "test_none"],
    )
    sec.add("test2016 chrF, --attention none, same budget", "chrF", plain["chrf"], best["chrf"])
    sec.add(
        "training speed, median over the run (ref: JoeyNMT here, from the issue)",
        "target tokens/s",
        best["tokens_per_s"],
        JOEYNMT_TOKENS,
        target="ratio >= 1.0",
        commands=["train_bahdanau"],
    )
    sec.notes.append(
        f"with attention: {best['steps']:,} steps, {best['epochs']:.1f} epochs, "
        f"test loss {best['loss']:.3f}; without: {plain['steps']:,} steps, "
        f"{plain['epochs']:.1f} epochs, test loss {plain['loss']:.3f}; "
        f"{best['bleu_signature']}; chrF {best['chrf_signature']}"
    )


def translate(sec: Section, sizes: Sizes, out: Path) -> None:
    """`seqtool translate` on test2016, whole process, beside bench/ref_beam.py (the same
    model, one sentence and one hypothesis at a time) and JoeyNMT's time from the issue."""
    import sacrebleu

    model = translator_run(out, "bahdanau")
    if not (model / "best.ckpt").exists():  # the translation section was not run: any model
        model = out / "m30k_speed"
        train = run([
            *SEQTOOL, "train", "translator", "--train", MULTI30K / "train",
            "--src-lang", "de", "--tgt-lang", "en", "--out", model, "--force",
            "--max-time", "2m", *sizes.translation_extra,
        ])  # fmt: skip
        sec.commands["train"] = train.command
    source = MULTI30K / "test2016.de"
    references = (MULTI30K / "test2016.en").read_text(encoding="utf-8").splitlines()
    count = len(references)

    def bleu(text: str) -> float:
        return sacrebleu.corpus_bleu(text.splitlines(), [references]).score

    walls, scores = {}, {}
    for beam in (1, 5, 10):
        child = run([*SEQTOOL, "translate", model, source, "--beam-size", beam])
        sec.commands[f"beam{beam}"] = child.command
        assert len(child.stdout.splitlines()) == count, "one output line per input line"
        walls[beam], scores[beam] = child.wall, bleu(child.stdout)
    ref = run([PYTHON, "bench/ref_beam.py", model, source, "--beam-size", 5])
    sec.commands["ref"] = ref.command
    ref_rate = key_values(ref.stderr.splitlines()[-1])["sentences_per_s"]
    for beam in (1, 5, 10):
        name = "greedy (beam 1)" if beam == 1 else f"beam {beam}"
        sec.add(
            f"`seqtool translate` test2016, {name}, whole process",
            "sentences/s",
            count / walls[beam],
            commands=[f"beam{beam}"],
        )
    sec.add(
        "beam 5, whole process (ref: bench/ref_beam.py, per sentence, without load time)",
        "sentences/s",
        count / walls[5],
        ref_rate,
        target="ratio >= 5",
        commands=["beam5", "ref"],
    )
    sec.add(
        f"beam 5, whole process (ref: JoeyNMT 2.3, {JOEYNMT_SECONDS} s here, from the issue)",
        "sentences/s",
        count / walls[5],
        count / JOEYNMT_SECONDS,
        target="ratio > 1.0",
        commands=["beam5"],
    )
    sec.notes.append(
        "test2016 BLEU of the same model: "
        + ", ".join(f"beam {b} {scores[b]:.2f}" for b in (1, 5, 10))
        + f"; bench/ref_beam.py at beam 5 {bleu(ref.stdout):.2f}"
    )

    # memory: 100,000 lines streamed from stdin against the 1,000 test lines (greedy)
    many = out / "lines100k.de"
    lines = source.read_text(encoding="utf-8").splitlines()
    many.write_text("\n".join((lines * -(-sizes.stream_lines // count))[: sizes.stream_lines]))
    stream = run([*SEQTOOL, "translate", model, "--beam-size", 1], stdin=many)
    sec.commands["stream"] = stream.command
    assert len(stream.stdout.splitlines()) == sizes.stream_lines, "one output line per input"
    sec.add(
        f"peak RSS translating {sizes.stream_lines:,} lines from stdin, greedy "
        f"(ref: {count:,} lines)",
        "MiB",
        stream.max_rss_mb,
        run([*SEQTOOL, "translate", model, source, "--beam-size", 1]).max_rss_mb,
        target="ratio <= 1.1",
        commands=["stream", "beam1"],
    )
    sec.add(
        f"`seqtool translate` {sizes.stream_lines:,} lines from stdin, greedy, whole process",
        "sentences/s",
        sizes.stream_lines / stream.wall,
        commands=["stream"],
    )


RUNNERS = {
    "throughput": (throughput, "Training throughput (tinyshakespeare)"),
    "sampling": (sampling, "Sampling speed"),
    "quality": (quality, "Quality after a fixed wall-time budget"),
    "memory": (memory, "Memory on a large corpus"),
    "startup": (startup, "Start-up"),
    "classifier": (classifier, "Text classification (SST-2)"),
    "translation": (translation, "Translation quality (Multi30k de->en)"),
    "translate": (translate, "Translation speed and memory"),
}


def run_section(name: str, sizes: Sizes, out: Path, quick: bool) -> Section:
    function, title = RUNNERS[name]
    sec = Section(name, title, date=now(), quick=quick)
    log(f"[{name}] {title}")
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    try:
        function(sec, sizes, out)
    except Exception as err:  # one failed section must not lose the others
        if not isinstance(err, BenchError):
            traceback.print_exc()
        sec.error = f"{type(err).__name__}: {err}"
        log(f"[{name}] FAILED: {sec.error}")
    sec.seconds = time.perf_counter() - start
    # other work on the machine skews every figure (oversubscribed OpenMP threads badly)
    sec.notes.append(
        f"load average (1 min) {load_before:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"figures are only trustworthy on an otherwise idle machine"
    )
    log(f"[{name}] done in {sec.seconds:.0f} s")
    return sec


# -- the machine and the report -------------------------------------------------------


def environment() -> dict:
    cpu, flags = "unknown", set()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and cpu == "unknown":
                cpu = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    versions = "import torch; print(torch.__version__, torch.get_num_threads())"
    torch_version, threads = run([PYTHON, "-c", versions]).stdout.split()[-2:]
    git = ["git", "describe", "--always", "--dirty"]
    commit = subprocess.run(git, capture_output=True, text=True, check=False).stdout.strip()
    return {
        "date": now(),
        "cpu": cpu,
        "bf16_flags": sorted(flags & {"avx512_bf16", "amx_bf16", "amx_tile"}),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "torch": torch_version,
        "threads": int(threads),
        "python": sys.version.split()[0],
        "commit": commit or "unknown",
    }


def fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.4g}"


def render(results: dict, quick: bool) -> str:
    env = results["env"]
    hw = ", ".join(env["bf16_flags"]) or "none"
    lines = [
        "# seqtool benchmarks",
        "",
        "Written by `make bench` (`.venv/bin/python bench/run.py --out BENCHMARKS.md`). Each "
        "figure is measured beside its reference in the same run on the same machine; ratio "
        "is seqtool / reference; `--only NAME` reruns one section (names are the headings).",
        "",
    ]
    if quick:
        lines += ["**Quick smoke run (`--quick`): tiny sizes, the figures mean nothing.**", ""]
    lines += [
        "| machine | |",
        "|---|---|",
        f"| date | {env['date']} |",
        f"| CPU | {env['cpu']} (bf16 flags: {hw}) |",
        f"| cores | {env['cores']} ({env['usable_cores']} usable) |",
        f"| torch | {env['torch']} |",
        f"| torch threads | {env['threads']} |",
        f"| python | {env['python']} |",
        f"| seqtool commit | {env['commit']} |",
        "",
    ]
    # the hand-written reading of the figures (decisions taken from them) comes first
    analysis = ROOT / "bench" / "analysis.md"
    if analysis.exists() and not quick:
        lines += [analysis.read_text().strip(), ""]
    for name in SECTIONS:
        sec = results["sections"].get(name)
        if sec is None:
            continue
        lines += [f"## {name}: {sec['title']}", ""]
        lines += [f"Measured {sec['date']} in {sec['seconds']:.0f} s.", ""]
        if sec["error"]:
            lines += [f"**Failed:** {sec['error']}", ""]
        if sec["figures"]:
            lines += [
                "| figure | seqtool | reference | ratio | target | met | commands |",
                "|---|---:|---:|---:|---|---|---|",
            ]
            for fig in sec["figures"]:
                unit = f" ({fig['unit']})" if fig["unit"] else ""
                met = {True: "yes", False: "**no**", None: "-"}[fig["met"]]
                ratio = "-" if fig["ratio"] is None else f"{fig['ratio']:.3f}"
                commands = ", ".join(f"`{c}`" for c in fig["commands"])
                lines.append(
                    f"| {fig['name']}{unit} | {fmt(fig['seqtool'])} | "
                    f"{fmt(fig['reference'])} | {ratio} | {fig['target'] or '-'} | {met} | "
                    f"{commands} |"
                )
            lines.append("")
        if sec["commands"]:
            lines += ["Commands (from the repository root):", ""]
            lines += [f"- `{label}`: `{cmd}`" for label, cmd in sec["commands"].items()]
            lines.append("")
        if sec["notes"]:
            lines += ["Notes:", ""]
            lines += [f"- {note}" for note in sec["notes"]]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


# -- in-process probes (run as children, so that their memory and time are their own) --


def probe_sample(run_dir: str, length: str, num_samples: str, device: str = "cpu") -> None:
    """Time seqtool.decoding.sample alone: no loading, no start-up."""
    import torch

    from seqtool import checkpoint, decoding
    from seqtool.tasks.generator import load_model

    model, tokenizer = load_model(checkpoint.load(run_dir, task="generator"))
    model.to(device)
    ids, n, batch = tokenizer.encode("\n"), int(length), int(num_samples)
    list(decoding.sample(model, ids, 50, batch, 0.8, None, None, 0))  # warm-up
    start = time.perf_counter()
    tokens = list(decoding.sample(model, ids, n, batch, 0.8, None, None, 0))
    tokens[-1].tolist()  # waits for the device to finish
    seconds = time.perf_counter() - start
    speed = {"seconds": seconds, "chars_per_s": n * batch / seconds}
    print(json.dumps({**speed, "threads": torch.get_num_threads()}))


def probe_tokenize(path: str, cache: str) -> None:
    """Train a char tokenizer on `path`, then time seqtool.data.encode_file alone."""
    from seqtool.data import TextLines, encode_file
    from seqtool.tokenizer import Tokenizer

    source, cache_path = Path(path), Path(cache)
    for stale in (cache_path, cache_path.with_suffix(".json")):
        stale.unlink(missing_ok=True)  # never time a cache hit
    start = time.perf_counter()
    tokenizer, _ = Tokenizer.train(TextLines(source), "char")
    trained_at = time.perf_counter()
    tokens = encode_file(source, tokenizer, cache_path)
    done = time.perf_counter()
    result = {
        "train_s": trained_at - start,
        "encode_s": done - trained_at,
        "tokens": len(tokens.ids),
        "mb_per_s": source.stat().st_size / 1e6 / (done - trained_at),
    }
    print(json.dumps(result))


PROBES = {"probe-sample": probe_sample, "probe-tokenize": probe_tokenize}


# -- main -----------------------------------------------------------------------------


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out_help = "Markdown report (default BENCHMARKS.md; bench/out/quick/BENCHMARKS.md if --quick)."
    parser.add_argument("--out", type=Path, help=out_help)
    parser.add_argument("--only", help=f"Comma-separated sections: {','.join(SECTIONS)}.")
    quick_help = "Tiny sizes and a few seconds per section: a smoke test."
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.names = [n for n in SECTIONS if n in names]  # always in the documented order
    return args


def main(argv: list[str]) -> int:
    if argv and argv[0] in PROBES:
        PROBES[argv[0]](*argv[1:])
        return 0
    args = parse_args(argv)
    report = args.out.absolute() if args.out else None
    os.chdir(ROOT)
    if not (CORPUS.is_dir() and REF_TRAIN.exists() and REF_SAMPLE.exists()):
        need = f"{CORPUS} and {REF_TRAIN.parent}/ref_*.py"
        sys.exit(f"bench: {need} not found; ../shared must sit beside the repository")
    sizes = QUICK if args.quick else FULL
    out = Path("bench/out/quick" if args.quick else "bench/out")
    out.mkdir(parents=True, exist_ok=True)
    report = report or (out / "BENCHMARKS.md" if args.quick else Path("BENCHMARKS.md"))
    results_path = out / "results.json"
    results = {"sections": {}}
    if args.only and results_path.exists():
        results = json.loads(results_path.read_text())
    results["env"] = environment()
    for name in args.names:
        results["sections"][name] = asdict(run_section(name, sizes, out, args.quick))
        results_path.write_text(json.dumps(results, indent=2) + "\n")  # keep what is done
    report.write_text(render(results, args.quick))
    log(f"wrote {report} and {results_path}")
    failed = [n for n in args.names if results["sections"][n]["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
