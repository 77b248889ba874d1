"""Generator size sweep: the data behind the rule that sizes a generator from --max-time
(seqtool/tasks/generator.py, SIZES and TOKENS_PER_PARAMETER; bench/analysis.md).

    python bench/sweep.py --data DIR [DIR ...] --budgets 20 120 --workers 2 --out FILE

Each DIR holds train.txt, valid.txt and test.txt (corpora/make_tasks.py prose, code,
greek). For every DIR and budget it trains each size of SIZES with each dropout, and the
defaults (nothing but --max-time: the rule's choice), each with --threads 1 and
`--workers` runs side by side (a run's speed is its own core's; the rule is stated in
tokens per parameter, which does not depend on the speed). It writes one JSON line per
run to FILE (test bits/char, parameters, tokens seen, tokens per parameter, the sizes
trained) and prints, per DIR and budget, each run beside the best of the sweep.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seqtool.tasks.generator import SIZES  # (layers, hidden), the sizes the rule weighs

SEQTOOL = [sys.executable, "-m", "seqtool"]
DROPOUTS = (0.0, 0.2)


def seqtool(*argv) -> str:
    done = subprocess.run([*SEQTOOL, *map(str, argv)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"seqtool {' '.join(map(str, argv))} failed:\n{done.stderr}")
    return done.stdout


def one(data: Path, budget: int, size, dropout, out: Path) -> dict:
    name = "rule" if size is None else f"{size[0]}x{size[1]}_d{dropout}"
    run_dir = out / data.name / f"{budget}s" / name
    options = [] if size is None else [
        "--layers", size[0], "--hidden-size", size[1], "--dropout", dropout,
    ]  # fmt: skip
    seqtool(
        "train", "generator", "--train", data / "train.txt", "--valid", data / "valid.txt",
        "--out", run_dir, "--force", "--threads", 1, "--max-time", f"{budget}s", *options,
    )  # fmt: skip
    scores = json.loads(
        seqtool("evaluate", run_dir, "--data", data / "test.txt", "--json").splitlines()[-1]
    )
    info = json.loads(seqtool("info", run_dir, "--json"))
    config = info["model_config"]
    return {
        "data": data.name,
        "budget": budget,
        "name": name,
        "layers": config["num_layers"],
        "hidden": config["hidden_size"],
        "dropout": config["dropout"],
        "bits_per_char": scores["bits_per_char"],
        "parameters": info["parameters"],
        "tokens": info["tokens_seen"],
        "tokens_per_parameter": info["tokens_seen"] / info["parameters"],
        "sizing": info.get("sizing"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 120])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("bench/out/sweep"))
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--rule-only", action="store_true", help="Only the defaults' runs.")
    parser.add_argument("--sizes-only", action="store_true", help="No defaults' runs.")
    args = parser.parse_args()
    jobs = [
        (data, budget, size, dropout)
        for data in args.data
        for budget in args.budgets
        for size, dropout in (
            ([] if args.sizes_only else [(None, None)])
            + ([] if args.rule_only else [(s, d) for s in SIZES for d in DROPOUTS])
        )
    ]
    with ThreadPoolExecutor(args.workers) as pool, args.out.open("a") as sink:
        for row in pool.map(lambda job: one(*job, args.runs), jobs):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(
                f"{row['data']:6s} {row['budget']:4d}s {row['name']:14s} "
                f"{row['bits_per_char']:.4f} bits/char, {row['tokens_per_parameter']:7.2f} "
                f"tokens/parameter",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
