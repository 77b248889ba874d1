"""fastText as the measured reference for text classification: tuned on the validation
split by the same small grid every time, then scored on the test split.

    python bench/fasttext_ref.py --train T.tsv --valid V.tsv --test X.tsv --work DIR

Reads TSV `label<TAB>text` (or fastText lines, passed through), writes the fastText files
into DIR, trains every setting of GRID on train (one thread, a fixed seed: the same
model each run), keeps the one with the best validation accuracy (ties: the earlier,
cheaper setting), trains it again to time it, and prints one JSON line: test and
validation accuracy, the chosen setting, its training seconds, the whole tuning's
seconds. Accuracy is seqtool's: the predicted label set equals the gold one. Data with
several labels on a line is trained as fastText's docs say (`-loss ova`, one binary
classifier per label) and predicts every label of probability >= 0.5, at least one,
as `seqtool classify` does. Needs the fasttext module
(`pip install fasttext-wheel==0.9.2`); without it, exits with code 3 and one line
saying so.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from pathlib import Path

# the grid: learning rate, epochs, word n-grams and vector size, as fastText's tutorial
# tunes a classifier by hand ("-lr 1.0 -epoch 25 -wordNgrams 2"); 48 settings, each under
# a second on SST-2
GRID = {
    "lr": (0.1, 0.25, 0.5, 1.0),
    "epoch": (5, 10, 25),
    "wordNgrams": (1, 2),
    "dim": (10, 100),
}
QUICK = {"lr": (0.5,), "epoch": (5,), "wordNgrams": (1, 2), "dim": (10,)}  # a smoke test
SEED = 0


def to_fasttext(source: Path, target: Path) -> None:
    """TSV `label<TAB>text` -> `__label__label text`; fastText lines are kept as they are."""
    lines = []
    for line in source.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        if line.startswith("__label__"):
            lines.append(line)
            continue
        label, text = line.split("\t", 1)
        lines.append(f"__label__{label.replace(' ', '_')} {text}")
    target.write_text("\n".join(lines) + "\n", encoding="utf-8")


def read(path: Path) -> list[tuple[set[str], str]]:
    """The gold labels and the text of each fastText line."""
    examples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        words = line.split()
        labels = {w for w in words if w.startswith("__label__")}
        examples.append((labels, " ".join(w for w in words if w not in labels)))
    return examples


def accuracy(model, examples: list[tuple[set[str], str]], multi: bool) -> float:
    """The fraction of lines whose predicted label set equals the gold one: the top label,
    or (multi-label) every label of probability >= 0.5, else the top one."""
    texts = [text for _, text in examples]
    if multi:
        predicted, _ = model.predict(texts, k=-1, threshold=0.5)
        top, _ = model.predict(texts, k=1)
        predicted = [p or t for p, t in zip(predicted, top, strict=True)]
    else:
        predicted, _ = model.predict(texts, k=1)
    right = sum(set(p) == gold for p, (gold, _) in zip(predicted, examples, strict=True))
    return right / len(examples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name in ("train", "valid", "test", "work"):
        parser.add_argument(f"--{name}", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="Two settings: a smoke test.")
    args = parser.parse_args()
    try:
        import fasttext
    except ImportError:
        print("fasttext is not installed: pip install fasttext-wheel==0.9.2", file=sys.stderr)
        return 3
    args.work.mkdir(parents=True, exist_ok=True)
    files = {}
    for part in ("train", "valid", "test"):
        files[part] = args.work / f"{part}.ft"
        to_fasttext(getattr(args, part), files[part])
    examples = {part: read(path) for part, path in files.items()}
    multi = any(len(labels) > 1 for labels, _ in examples["train"])
    loss = "ova" if multi else "softmax"

    def fit(setting: dict):
        return fasttext.train_supervised(
            str(files["train"]), thread=1, seed=SEED, verbose=0, loss=loss, **setting
        )

    grid = QUICK if args.quick else GRID
    settings = [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]
    began = time.perf_counter()
    best, best_valid = None, -1.0
    for setting in settings:
        valid = accuracy(fit(setting), examples["valid"], multi)
        if valid > best_valid:
            best, best_valid = setting, valid
    tuning = time.perf_counter() - began
    started = time.perf_counter()
    model = fit(best)
    seconds = time.perf_counter() - started
    report = {
        "test_accuracy": accuracy(model, examples["test"], multi),
        "valid_accuracy": accuracy(model, examples["valid"], multi),
        "setting": {**best, "loss": loss},
        "train_seconds": round(seconds, 3),
        "tuning_seconds": round(tuning, 1),
        "settings_tried": len(settings),
        "threads": 1,
        "fasttext": getattr(fasttext, "__version__", "0.9.2"),
    }
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
