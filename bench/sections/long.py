"""The sizing rules at the longest budgets of the budget issue: tinyshakespeare for 10
minutes beside the fixed size of before the generator's rule, and Multi30k's subset at 5
minutes beside a sweep of translator sizes and dropouts in the same budget."""

from __future__ import annotations

from pathlib import Path

from harness import Section, Sizes

from .defaults import Case, measure_cases

TITLE = "Defaults at the longest budgets"

# Multi30k's sweep takes only the rate its rule picks for subword targets under 20
# epochs (3e-3, ahead of 1e-3 at every size at 5 minutes there), to keep the section
# near 60 minutes.
CASES = [
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
        sec, sizes, out, "long", CASES,
        "long: prose (tinyshakespeare) for 600 s beside the fixed 2x512 with dropout 0.2 "
        "of before the rule, Multi30k's first 10,000 pairs at 300 s; the sweep grid is in "
        "the sweep's note",
    )  # fmt: skip
