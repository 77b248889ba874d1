"""Benchmark harness: `make bench` runs `python bench/run.py --out BENCHMARKS.md`.

Every figure is measured beside its reference (the hand-written PyTorch scripts in
../shared/bench/, or a baseline revision) in the same run on the same machine, and is
written with the exact command that reproduces it. Sections run one after another, never
in parallel, since they time things on a few cores; each is a module in bench/sections/:

    throughput  training chars/s, fp32 and bf16, against ref_charlstm.py
    sampling    sampling chars/s against ref_sample.py
    quality     validation bits/char after 10 minutes against ref_charlstm.py
    memory      peak RSS, tokenization speed and time to the first step on a 1 GB corpus
    startup     `seqtool --help` and `import seqtool.cli` times, torch not imported
    classifier  SST-2 test accuracy over seeds, `seqtool classify` speed and memory
    translation Multi30k de->en BLEU/chrF after 45 minutes, with and without attention
    translate   `seqtool translate` speed (greedy, beam 1/5/10) against bench/ref_beam.py,
                and memory while streaming 100,000 lines
    library     start-up and speed of `seqtool generate/classify/translate` against the
                same commands at a baseline revision (--baseline, a git worktree)
    defaults    every task trained with nothing but --train, --valid and --max-time
    serve       `seqtool serve` under 32 clients: batching on and off, streams, memory
    inspect     `seqtool inspect` beside `seqtool evaluate` on the same text
    quantize    --quantize int8 and --shortlist against fp32 and the --baseline revision

    python bench/run.py --out BENCHMARKS.md              # everything (over two hours)
    python bench/run.py --only sampling,startup --out BENCHMARKS.md
    python bench/run.py --quick --out /tmp/bench.md      # smoke test, tiny sizes

Raw results go to bench/out/results.json (bench/out/quick/ for --quick); with --only the
report's other sections are kept as it has them, and only the sections named are
written anew. `python bench/run.py probe-sample ...`,
`probe-tokenize ...`, `probe-shortlist ...`, `probe-inprocess ...`, `probe-rows ...` and
`probe-batches ...` are the in-process measurements the sections run as children.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

from harness import (
    CORPUS,
    FULL,
    QUICK,
    REF_SAMPLE,
    REF_TRAIN,
    ROOT,
    environment,
    log,
    render,
    run_section,
    splice,
)
from sections import SECTIONS, library
from sections.memory import probe_tokenize
from sections.quantize import probe_inprocess, probe_shortlist
from sections.sampling import probe_sample
from sections.serve import probe_batches, probe_rows

from seqtool.config import parse_duration
from seqtool.errors import ConfigError

PROBES = {
    "probe-sample": probe_sample,
    "probe-tokenize": probe_tokenize,
    "probe-shortlist": probe_shortlist,
    "probe-inprocess": probe_inprocess,
    "probe-rows": probe_rows,
    "probe-batches": probe_batches,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    out_help = "Markdown report (default BENCHMARKS.md; bench/out/quick/BENCHMARKS.md if --quick)."
    parser.add_argument("--out", type=Path, help=out_help)
    parser.add_argument("--only", help=f"Comma-separated sections: {','.join(SECTIONS)}.")
    quick_help = "Tiny sizes and a few seconds per section: a smoke test."
    parser.add_argument("--quick", action="store_true", help=quick_help)
    baseline_help = (
        f"Git revision the library and quantize sections compare with (default "
        f"{library.BASELINE}, the code before the library, server and int8 work)."
    )
    parser.add_argument("--baseline", default=library.BASELINE, metavar="REV", help=baseline_help)
    peers_help = "Training budget of the peers section (default 45m; 20s with --quick)."
    parser.add_argument("--peers-time", metavar="TIME", help=peers_help)
    args = parser.parse_args(argv)
    if args.peers_time:
        try:
            parse_duration(args.peers_time)
        except ConfigError as err:
            parser.error(f"--peers-time: {err}")
    names = args.only.split(",") if args.only else list(SECTIONS)
    unknown = [n for n in names if n not in SECTIONS]
    if unknown:
        parser.error(f"unknown section {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    args.names = [n for n in SECTIONS if n in names]  # always in the documented order
    return args


def main(argv: list[str]) -> int:
    if argv and argv[0] in PROBES:
        PROBES[argv[0]](*argv[1:])
        return 0
    args = parse_args(argv)
    report = args.out.absolute() if args.out else None
    os.chdir(ROOT)
    if not (CORPUS.is_dir() and REF_TRAIN.exists() and REF_SAMPLE.exists()):
        need = f"{CORPUS} and {REF_TRAIN.parent}/ref_*.py"
        sys.exit(f"bench: {need} not found; ../shared must sit beside the repository")
    sizes = QUICK if args.quick else FULL
    if args.peers_time:
        sizes = dataclasses.replace(sizes, peers_time=args.peers_time)
    out = Path("bench/out/quick" if args.quick else "bench/out")
    out.mkdir(parents=True, exist_ok=True)
    report = report or (out / "BENCHMARKS.md" if args.quick else Path("BENCHMARKS.md"))
    results_path = out / "results.json"
    results = {"sections": {}}
    if args.only and results_path.exists():
        results = json.loads(results_path.read_text())
    # --only replaces its sections in the report and keeps the others as written: the
    # results of earlier runs may be gone (a fresh checkout) or hold fewer sections
    earlier = report.read_text() if args.only and report.exists() else None
    results["env"] = environment()
    measures = {name: module.measure for name, module in SECTIONS.items()}
    for name in ("library", "quantize"):
        measures[name] = functools.partial(SECTIONS[name].measure, baseline=args.baseline)
    for name in args.names:
        title = SECTIONS[name].TITLE
        sec = run_section(name, title, measures[name], sizes, out, args.quick)
        results["sections"][name] = asdict(sec)
        results_path.write_text(json.dumps(results, indent=2) + "\n")  # keep what is done
    fresh = render(results, SECTIONS, args.quick)
    report.write_text(fresh if earlier is None else splice(earlier, fresh, args.names, SECTIONS))
    log(f"wrote {report} and {results_path}")
    failed = [n for n in args.names if results["sections"][n]["error"]]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
