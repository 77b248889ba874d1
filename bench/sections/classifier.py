"""SST-2 test accuracy over seeds against published figures, `seqtool classify` speed and
memory on the test sentences and on many lines streamed from stdin."""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import SEQTOOL, SST2, Section, Sizes, last_json, run

TITLE = "Text classification (SST-2)"


def test_texts() -> list[str]:
    """The SST-2 test sentences without their labels (test.tsv is `label<TAB>text`)."""
    return [line.split("\t", 1)[1] for line in (SST2 / "test.tsv").read_text().splitlines()]


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
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
    lines = test_texts()
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
