"""fp32 against `--quantize int8` on one trained run, in one process: speed timed
interleaved (fp32, int8, fp32, int8, ...) so that both see the same load on the
machine, the median of the repeats and their ratio; then quality on the data file
(evaluate's figures for each).

    python bench/quantize.py RUN --data FILE [--src-lang de --tgt-lang en]
                             [--repeats 5] [--lines 200] [--length 500] [--threads N]

generator: batch-1 sampling chars/s (`stream`, as `seqtool generate` prints);
translator: sentences/s over the first --lines source lines of DATA, beam 5 and greedy;
classifier: lines/s over the first --lines texts of DATA.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

import seqtool
from seqtool.data import read_labeled
from seqtool.tasks.translator import read_pairs

MODES = {"none": "fp32", "int8": "int8"}  # --quantize value -> the name printed


def workloads(model, args) -> dict:
    """name -> (items per call, a call), for the run's task."""
    if model.task == "generator":
        sample = lambda m: list(m.stream("\n", length=args.length, seed=1))  # noqa: E731
        return {"sampling chars/s": (args.length, sample)}
    if model.task == "classifier":
        texts = [e.text for e in read_labeled(args.data)[0][: args.lines]]
        return {"classify lines/s": (len(texts), lambda m: m.classify(texts))}
    pairs = read_pairs(args.data, args.src_lang, args.tgt_lang, print)
    src = [p.src for p in pairs[: args.lines]]
    return {
        "beam-5 sentences/s": (len(src), lambda m: m.translate(src, beam_size=5)),
        "greedy sentences/s": (len(src), lambda m: m.translate(src, beam_size=1)),
    }


def quality(model, args) -> dict:
    if model.task == "generator":
        keys, result = ("bits_per_char",), model.evaluate(args.data)
    elif model.task == "classifier":
        keys, result = ("accuracy", "macro_f1"), model.evaluate(args.data)
    else:
        keys = ("bleu", "chrf")
        result = model.evaluate(
            args.data, src_lang=args.src_lang, tgt_lang=args.tgt_lang, beam_size=5
        )
    return {k: round(result[k], 4) for k in keys}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("--data", required=True)
    parser.add_argument("--src-lang")
    parser.add_argument("--tgt-lang")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--lines", type=int, default=200)
    parser.add_argument("--length", type=int, default=500)
    parser.add_argument("--threads", type=int)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = {mode: seqtool.load(args.run, device="cpu", quantize=mode) for mode in MODES}
    print(f"{args.run}: {models['none'].task}, {torch.get_num_threads()} threads", file=sys.stderr)
    for name, (items, call) in workloads(models["none"], args).items():
        seconds = {mode: [] for mode in MODES}
        for mode in MODES:
            call(models[mode])  # warm up: first calls pack weights and fill caches
        for _ in range(args.repeats):
            for mode in MODES:
                started = time.perf_counter()
                call(models[mode])
                seconds[mode].append(time.perf_counter() - started)
        rates = {mode: items / statistics.median(seconds[mode]) for mode in MODES}
        print(
            f"{name}: fp32 {rates['none']:.1f}, int8 {rates['int8']:.1f}, "
            f"int8/fp32 {rates['int8'] / rates['none']:.2f}x"
        )
    for mode, label in MODES.items():
        print(f"{args.data} {label}: {quality(models[mode], args)}")


if __name__ == "__main__":
    main()
