"""Validation bits/char after a fixed wall-time budget, against ref_charlstm.py at two
sizes trained for the same time."""

from __future__ import annotations

from pathlib import Path

from harness import (
    PYTHON,
    REF_TRAIN,
    SEQTOOL,
    TRAIN,
    VALID,
    Section,
    Sizes,
    key_values,
    last_json,
    read_metrics,
    run,
)

TITLE = "Quality after a fixed wall-time budget"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
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
        f"seqtool: its defaults{extra}, {steps} steps in {budget} (its validations count "
        f"against the budget), process wall {train.wall:.0f} s; "
        + "; ".join(f"ref hidden {h}: {r.get('steps', 0):.0f} steps" for h, r in refs.items())
    )
