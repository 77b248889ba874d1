"""`seqtool --help` and `import seqtool.cli` times, and that the CLI does not import torch."""

from __future__ import annotations

import shlex
import statistics
from pathlib import Path

from harness import PYTHON, SEQTOOL, Section, Sizes, run

TITLE = "Start-up"

IMPORT_TIME = "import time; t=time.perf_counter(); import {}; print(time.perf_counter()-t)"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    def median_wall(label: str, argv: list) -> float:
        walls = [run(argv).wall for _ in range(sizes.repeats)]
        sec.commands[label] = shlex.join(str(a) for a in argv)
        return statistics.median(walls)

    def median_printed(label: str, argv: list) -> float:
        values = [float(run(argv).stdout.split()[-1]) for _ in range(sizes.repeats)]
        sec.commands[label] = shlex.join(str(a) for a in argv)
        return statistics.median(values)

    n = sizes.repeats
    help_wall = median_wall("help", [*SEQTOOL, "--help"])
    bare_wall = median_wall("python", [PYTHON, "-c", "pass"])
    cli_import = median_printed("import", [PYTHON, "-c", IMPORT_TIME.format("seqtool.cli")])
    torch_import = median_printed("torch", [PYTHON, "-c", IMPORT_TIME.format("torch")])
    check = [PYTHON, "-c", 'import sys, seqtool.cli; print("torch" in sys.modules)']
    imported = run(check).stdout.strip().splitlines()[-1] == "True"
    sec.commands["check"] = shlex.join(check)
    sec.add(
        f"`seqtool --help` wall time, median of {n} (ref: bare `python -c pass`)",
        "s",
        help_wall,
        bare_wall,
        commands=["help", "python"],
    )
    sec.add(
        f"`import seqtool.cli` time, median of {n} (ref: `import torch`)",
        "s",
        cli_import,
        torch_import,
        commands=["import", "torch"],
    )
    sec.add(
        "torch imported by `import seqtool.cli`",
        "",
        "yes" if imported else "no",
        target="value is no",
        commands=["check"],
    )
