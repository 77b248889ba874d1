"""The sizing rules at the longer budgets of the budget issue, which the defaults section
cuts to keep near 45 minutes: each default beside the best of a sweep in the same budget
(generators at 1 and 2 minutes, Multi30k at 5), and tinyshakespeare for 10 minutes
beside the fixed size of before the rule."""

from __future__ import annotations

from pathlib import Path

from harness import Section, Sizes

from seqtool.tasks.generator import SIZES

from .defaults import Case, measure_cases

TITLE = "Defaults at longer budgets"

# The sweeps leave out the sizes that end far behind at a budget (bench/analysis.md,
# "Generator size from the budget": at 120 s 1x128 is 5-8% behind the best, at 60 s
# 2x512 sees a tenth of a token per parameter) to keep the section near 105 minutes;
# Multi30k's sweeps only the rate its rule picks for subword targets under 20 epochs
# (3e-3, ahead of 1e-3 at every size at 5 minutes there).
SHORT, LONG = SIZES[:3], SIZES[1:]
CASES = [
    Case("prose", "generator", 60, "", (), sweep=True, name="prose_60s", sizes=SHORT),
    *(
        Case(task, "generator", 120, "", (), sweep=True, name=f"{task}_120s", sizes=LONG)
        for task in ("prose", "code", "greek")
    ),
    # beside the fixed default of before the rule (2x512, dropout 0.2): the quality
    # section holds the 10-minute target (2.05 bits/char on tinyshakespeare's valid.txt,
    # which selects the checkpoint too); here the test is valid.txt's second half
    Case("prose", "generator", 600, "",
         ("--layers", "2", "--hidden-size", "512", "--dropout", "0.2"), name="prose_600s"),
    Case("multi30k", "translator", 300, "", (), metric="bleu", sweep=True,
         name="multi30k_300s", lrs=(3e-3,)),
]  # fmt: skip


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    measure_cases(
        sec, sizes, out, "budgets", CASES,
        "budgets: generators at 60 s (prose: tinyshakespeare) and 120 s, prose again for "
        "600 s beside the fixed 2x512 with dropout 0.2 of before the rule, Multi30k's "
        "first 10,000 pairs at 300 s; the sweep grids are in each sweep's note",
    )  # fmt: skip
