"""`seqtool generate`, `classify` and `translate` start-up and speed for the current
checkout beside a baseline revision, measured in the same run.

The baseline is checked out with `git worktree add --detach` under the section's
directory and removed afterwards. Both sides run the same interpreter as
`PYTHONPATH=TREE python -P -m seqtool ...` on the same checkpoints, with `--device cpu`,
in alternating rounds (baseline, current, baseline, ...) so that drift hits both.
"""

from __future__ import annotations

import statistics
from pathlib import Path

from harness import (
    MULTI30K,
    SEQTOOL_P,
    SST2,
    TRAIN,
    BenchError,
    Child,
    Section,
    Sizes,
    check_imports,
    display_path,
    run,
    worktree,
)

from sections.classifier import test_texts

TITLE = "Inference commands before and after the library refactor"
BASELINE = "8973ed1"  # the commit before the refactor
TRAIN_DATA = {
    "generator": ["--train", TRAIN],
    "classifier": ["--train", SST2 / "train.tsv"],
    "translator": ["--train", MULTI30K / "train", "--src-lang", "de", "--tgt-lang", "en"],
}
# each inference command with the least work after loading the model: its start-up
START_UP = {
    "generator": ("generate", ["--length", 1, "--seed", 1]),
    "classifier": ("classify", ["--text", "x"]),
    "translator": ("translate", ["--text", "x"]),
}


def measure(sec: Section, sizes: Sizes, out: Path, baseline: str = BASELINE) -> None:
    work = out / "library"
    work.mkdir(parents=True, exist_ok=True)
    tree = work / "baseline"
    with worktree(sec, tree, baseline) as rev:
        compare(sec, sizes, work, {"baseline": display_path(tree), "current": "."}, rev)


def compare(sec: Section, sizes: Sizes, work: Path, trees: dict[str, str], rev: str) -> None:
    """Train the three models, then time each command on both sides; `trees` maps
    "baseline" and "current" to the directory that goes on PYTHONPATH."""
    n = sizes.repeats
    check_imports("current", trees["current"])  # the baseline's: worktree checked it

    def seqtool(side: str, args: list, label: str = "") -> Child:
        """`seqtool ARGS` run by `side`'s code; `label` names its command in the report."""
        child = run([*SEQTOOL_P, *args], env={"PYTHONPATH": trees[side]})
        if label:
            sec.commands[label if side == "current" else f"{label}_baseline"] = child.command
        return child

    def train(task: str, side: str) -> Path:
        run_dir = work / (task if side == "current" else f"{task}_baseline")
        child = seqtool(
            side,
            [
                "train", task, *TRAIN_DATA[task], "--out", run_dir, "--force",
                "--max-steps", sizes.library_steps, "--device", "cpu", *sizes.library_extra,
            ],
            f"train_{task}",
        )  # fmt: skip
        sec.notes.append(f"{task}: trained by the {side} code in {child.wall:.0f} s")
        return run_dir

    models = {}
    for task, (command, options) in START_UP.items():
        models[task] = train(task, "current")
        start_up = [command, models[task], *options, "--device", "cpu"]
        try:  # the baseline's warm-up, and whether it reads the current checkpoint
            seqtool("baseline", start_up)
        except BenchError as err:  # it cannot: both sides use one the baseline trains
            sec.notes.append(f"{task}: the baseline refused the current checkpoint ({err})")
            models[task] = train(task, "baseline")
            start_up[1] = models[task]
            seqtool("baseline", start_up)
        seqtool("current", start_up)  # warm-up; fails if it cannot read the baseline's

    def median_walls(label: str, args: list) -> dict[str, float]:
        """Side -> median wall time (s) of `seqtool ARGS --device cpu` over n rounds."""
        walls = {side: [] for side in trees}
        for _ in range(n):
            for side in trees:  # baseline first in every round
                walls[side].append(seqtool(side, [*args, "--device", "cpu"], label).wall)
        return {side: statistics.median(w) for side, w in walls.items()}

    def add(name: str, unit: str, label: str, values: dict[str, float], target: str) -> None:
        """One figure: the current side's value against the baseline's."""
        current, reference = values["current"], values["baseline"]
        commands = [label, f"{label}_baseline"]
        sec.add(f"{name}, median of {n} (ref: {rev})", unit, current, reference, target, commands)

    def rates(count: int, walls: dict[str, float]) -> dict[str, float]:
        return {side: count / wall for side, wall in walls.items()}

    # a slower start-up or a slower loop shows as a ratio past 5% either way
    slower, faster = "ratio <= 1.05", "ratio >= 0.95"
    command, options = START_UP["generator"]
    walls = median_walls("generate1", [command, models["generator"], *options])
    add("`generate --length 1` wall time (load and one char)", "s", "generate1", walls, slower)

    length = sizes.sample_length
    args = ["generate", models["generator"], "--length", length, "--seed", 1]
    walls = median_walls("generate", args)
    name = f"`generate --length {length}`, whole process"
    add(name, "chars/s", "generate", rates(length, walls), faster)

    sentences = test_texts()[: sizes.library_lines]
    texts = work / "sst2_test.txt"
    texts.write_text("\n".join(sentences) + "\n")
    walls = median_walls("classify", ["classify", models["classifier"], texts])
    name = f"`classify` on {len(sentences):,} SST-2 test sentences, whole process"
    add(name, "sentences/s", "classify", rates(len(sentences), walls), faster)

    german = (MULTI30K / "test2016.de").read_text(encoding="utf-8").splitlines()
    german = german[: sizes.library_lines]
    source = work / "test2016.de"
    source.write_text("\n".join(german) + "\n", encoding="utf-8")
    walls = median_walls("translate", ["translate", models["translator"], source, "--beam-size", 5])
    name = f"`translate --beam-size 5` on {len(german):,} test2016 sentences, whole process"
    add(name, "sentences/s", "translate", rates(len(german), walls), faster)

    for task in ("classifier", "translator"):
        command, options = START_UP[task]
        walls = median_walls(f"{command}1", [command, models[task], *options])
        add(f"`{command} --text x` wall time", "s", f"{command}1", walls, slower)

    extra = f"with {' '.join(sizes.library_extra)}" if sizes.library_extra else "(defaults)"
    sec.notes.append(
        f"the models get {sizes.library_steps} training steps {extra}: speed does not depend "
        f"on their quality, but an undertrained translator writes long outputs, so its "
        f"sentences/s is lower than in the translate section. Each command runs once per side "
        f"before timing (warm-up, and the check that the baseline reads the checkpoint); both "
        f"sides pass --device cpu, the baseline's default."
    )
