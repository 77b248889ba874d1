"""`seqtool inspect` on 10,000 characters with the 2x512 generator, beside `seqtool
evaluate` on the same text: inspect steps the model's own weights one character at a
time to read every gate and state, where evaluate runs the fused layer."""

from __future__ import annotations

from pathlib import Path

from harness import SEQTOOL, TRAIN, VALID, Section, Sizes, run

TITLE = "Looking inside: inspect"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    work = out / "inspect"
    model = work / "shakes"
    # the cost does not depend on training: a few steps give the 2x512 model its shape
    child = run([*SEQTOOL, "train", "generator", "--train", TRAIN, "--out", model, "--force",
                 "--max-steps", 5, "--hidden-size", sizes.hidden])  # fmt: skip
    sec.commands["train"] = child.command
    text = work / "text.txt"
    text.write_text(VALID.read_text(encoding="utf-8")[: sizes.inspect_chars], encoding="utf-8")
    n = sizes.inspect_chars
    evaluate = run([*SEQTOOL, "evaluate", model, "--data", text, "--json"])
    sec.commands["evaluate"] = evaluate.command
    views = {
        "bits": [],
        "all": ["--top", 3, "--find", "line-position", "--saturation", work / "saturation.png",
                "--html", work / "report.html"],
    }  # fmt: skip
    for label, options in views.items():
        child = run([*SEQTOOL, "inspect", model, text, "--json", *options])
        sec.commands[label] = child.command
        what = (
            "bits per character"
            if label == "bits"
            else "bits, --top 3, --find line-position, --saturation, --html"
        )
        sec.add(
            f"`inspect` {n:,} characters, {what}, whole process (ref: `evaluate` on the same text)",
            "s", child.wall, evaluate.wall, commands=[label, "evaluate"],
        )  # fmt: skip
        sec.notes.append(f"{label}: peak RSS {child.max_rss_mb:,.0f} MiB")
