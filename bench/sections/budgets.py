"""The generator's sizing rule at the longer budgets of the budget issue, which the
defaults section cuts to 20 s to keep near 45 minutes: each default beside the best of
a sweep in the same budget (1 minute on tinyshakespeare, 2 minutes on the three self-made
corpora). The longest budgets are the `long` section's."""

from __future__ import annotations

from pathlib import Path

from harness import Section, Sizes

from seqtool.tasks.generator import SIZES

from .defaults import Case, measure_cases

TITLE = "Defaults at longer budgets"

# The sweeps leave out the sizes that end far behind at a budget (bench/analysis.md,
# "Generator size from the budget": at 120 s 1x128 is 5-8% behind the best, at 60 s
# 2x512 sees a tenth of a token per parameter) to keep the section near 50 minutes.
SHORT, LONG = SIZES[:3], SIZES[1:]
CASES = [
    Case("prose", "generator", 60, "", (), sweep=True, name="prose_60s", sizes=SHORT),
    *(
        Case(task, "generator", 120, "", (), sweep=True, name=f"{task}_120s", sizes=LONG)
        for task in ("prose", "code", "greek")
    ),
]  # fmt: skip


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    measure_cases(
        sec, sizes, out, "budgets", CASES,
        "budgets: generators at 60 s (prose: tinyshakespeare) and 120 s; the sweep grids "
        "are in each sweep's note",
    )  # fmt: skip
