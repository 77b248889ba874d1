"""Size sweep: the data behind the rules that size a generator or a translator from
--max-time (SIZES and TOKENS_PER_PARAMETER in seqtool/tasks/generator.py and
seqtool/tasks/translator.py; bench/analysis.md).

    python bench/sweep.py [--task translator] --data DIR [DIR ...] --budgets 20 120 \
        --workers 2 --out FILE

Each DIR holds train, valid and test files as corpora/make_tasks.py writes them (.txt
for generation: prose, code, greek; .tsv for translation: multi30k). For every DIR and
budget it trains each size of the task's SIZES with each dropout (and each --lrs), and
the defaults (nothing but --max-time: the rule's choice), each with --threads 1 and
`--workers` runs side by side (a run's speed is its own core's; the rules are stated in
tokens per parameter, which does not depend on the speed). It writes one JSON line per
run to FILE (the test score, parameters, tokens seen, tokens per parameter, the sizes
trained) and prints each as it ends.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from seqtool.tasks import generator

SEQTOOL = [sys.executable, "-m", "seqtool"]
# per task: the sizes swept (the generator's: those its rule weighs), the options that
# set one, the dropouts and learning rates swept (None: the default), the data files'
# extension, and the test score (evaluate --json)
TASKS = {
    "generator": {
        "sizes": generator.SIZES,  # (layers, hidden)
        "options": lambda size: ["--layers", size[0], "--hidden-size", size[1]],
        "dropouts": (0.0, 0.2),
        "lrs": (None,),
        "ext": "txt",
        "score": "bits_per_char",
    },
    "translator": {
        "sizes": (64, 128, 256, 512),  # hidden = embedding size; 256 is the default
        "options": lambda size: ["--hidden-size", size, "--embedding-size", size],
        "dropouts": (0.1, 0.3),
        "lrs": (1e-3, 3e-3),  # the default and a short budget's candidate
        "ext": "tsv",
        "score": "bleu",
    },
}


def seqtool(*argv) -> str:
    done = subprocess.run([*SEQTOOL, *map(str, argv)], capture_output=True, text=True, check=False)
    if done.returncode:
        raise SystemExit(f"seqtool {' '.join(map(str, argv))} failed:\n{done.stderr}")
    return done.stdout


def one(task: str, data: Path, budget: int, size, dropout, lr, out: Path) -> dict:
    spec = TASKS[task]
    name = "rule" if size is None else "_".join(map(str, [size, f"d{dropout}"]))
    name = name.replace("(", "").replace(")", "").replace(", ", "x")
    name += "" if lr is None else f"_lr{lr}"
    run_dir = out / data.name / f"{budget}s" / name
    options = [] if size is None else [*spec["options"](size), "--dropout", dropout]
    options += [] if lr is None else ["--lr", lr]
    files = {part: data / f"{part}.{spec['ext']}" for part in ("train", "valid", "test")}
    seqtool(
        "train", task, "--train", files["train"], "--valid", files["valid"], "--out", run_dir,
        "--force", "--threads", 1, "--max-time", f"{budget}s", *options,
    )  # fmt: skip
    scores = json.loads(
        seqtool("evaluate", run_dir, "--data", files["test"], "--json").splitlines()[-1]
    )
    info = json.loads(seqtool("info", run_dir, "--json"))
    config = info["model_config"]
    return {
        "data": data.name,
        "budget": budget,
        "name": name,
        "layers": config["num_layers"],
        "hidden": config["hidden_size"],
        "embedding": config.get("embedding_size"),
        "dropout": config["dropout"],
        "lr": info["train_config"]["lr"],
        spec["score"]: scores[spec["score"]],
        "parameters": info["parameters"],
        "tokens": info["tokens_seen"],
        "tokens_per_parameter": info["tokens_seen"] / info["parameters"],
        "epochs": info.get("epochs"),
        "sizing": info.get("sizing"),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--task", choices=TASKS, default="generator")
    parser.add_argument("--data", type=Path, nargs="+", required=True)
    parser.add_argument("--budgets", type=int, nargs="+", default=[20, 120])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--runs", type=Path, default=Path("bench/out/sweep"))
    parser.add_argument("--out", type=Path, required=True, help="JSON lines, appended")
    parser.add_argument("--lrs", type=float, nargs="+", help="Learning rates (default: its own).")
    parser.add_argument("--hidden", type=int, nargs="+", help="Only these hidden sizes.")
    parser.add_argument("--dropouts", type=float, nargs="+", help="Dropouts (default: its own).")
    parser.add_argument("--rule-only", action="store_true", help="Only the defaults' runs.")
    parser.add_argument("--sizes-only", action="store_true", help="No defaults' runs.")
    args = parser.parse_args()
    spec = TASKS[args.task]
    swept = [
        (size, dropout, lr)
        for size in spec["sizes"]
        if not args.hidden or (size[-1] if isinstance(size, tuple) else size) in args.hidden
        for dropout in args.dropouts or spec["dropouts"]
        for lr in args.lrs or spec["lrs"]
    ]
    jobs = [
        (args.task, data, budget, *choice)
        for data in args.data
        for budget in args.budgets
        for choice in ([] if args.sizes_only else [(None, None, None)])
        + ([] if args.rule_only else swept)
    ]
    with ThreadPoolExecutor(args.workers) as pool, args.out.open("a") as sink:
        for row in pool.map(lambda job: one(*job, args.runs), jobs):
            sink.write(json.dumps(row) + "\n")
            sink.flush()
            print(
                f"{row['data']:8s} {row['budget']:4d}s {row['name']:20s} "
                f"{spec['score']} {row[spec['score']]:.4f}, {row['tokens_per_parameter']:7.2f} "
                f"tokens/parameter",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
