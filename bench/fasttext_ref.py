"""fastText as the measured reference for text classification: tuned on the validation
split by the same small grid every time, then scored on the test split.

    python bench/fasttext_ref.py --train T.tsv --valid V.tsv --test X.tsv --work DIR

Reads TSV `label<TAB>text` (or fastText lines, passed through), writes the fastText files
into DIR, trains every setting of GRID on train (one thread, a fixed seed: the same
model each run), keeps the one with the best validation accuracy (ties: the earlier,
cheaper setting), trains it again to time it, and prints one JSON line: test and
validation accuracy, the chosen setting, its training seconds, the whole tuning's
seconds. Needs the fasttext module (`pip install fasttext-wheel==0.9.2`); without it,
exits with code 3 and one line saying so.
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


def accuracy(model, path: Path) -> float:
    """Precision at 1 over single-label lines: the accuracy."""
    _, precision, _ = model.test(str(path))
    return precision


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

    def fit(setting: dict):
        return fasttext.train_supervised(
            str(files["train"]), thread=1, seed=SEED, verbose=0, **setting
        )

    grid = QUICK if args.quick else GRID
    settings = [dict(zip(grid, v, strict=True)) for v in itertools.product(*grid.values())]
    began = time.perf_counter()
    best, best_valid = None, -1.0
    for setting in settings:
        valid = accuracy(fit(setting), files["valid"])
        if valid > best_valid:
            best, best_valid = setting, valid
    tuning = time.perf_counter() - began
    started = time.perf_counter()
    model = fit(best)
    seconds = time.perf_counter() - started
    report = {
        "test_accuracy": accuracy(model, files["test"]),
        "valid_accuracy": accuracy(model, files["valid"]),
        "setting": best,
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
