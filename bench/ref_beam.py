"""Reference: per-sentence beam search written by hand over a seqtool translator.

One sentence at a time, one hypothesis at a time: the loop a user writes first. It
uses the same model and the same one-step decoder as `seqtool translate`, so the
difference in speed is the batched search alone.

    python bench/ref_beam.py RUN test.de --beam-size 5 > test.hyp

prints the translations to stdout and `sentences=N seconds=S sentences_per_s=R` last
on stderr (the load time is not counted).
"""

from __future__ import annotations

import argparse
import math
import sys
import time

import torch

import seqtool
from seqtool.tokenizer import BOS_ID, EOS_ID


def penalty(length: int, alpha: float) -> float:
    return ((5 + length) / 6) ** alpha


def beam_one(model, src_ids: list[int], k: int, alpha: float, ratio: float) -> list[int]:
    memory, state = model.encode(torch.tensor([src_ids]), torch.tensor([len(src_ids)]))
    beams = [(0.0, [], state)]
    finished = []
    for _ in range(math.ceil(ratio * len(src_ids)) + 5):
        candidates = []
        for score, tokens, st in beams:
            prev = torch.tensor([tokens[-1] if tokens else BOS_ID])
            log_probs, new_state, _ = model.decode_step(prev, st, memory)
            top = log_probs[0].topk(k)
            for lp, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                candidates.append((score + lp, tokens + [token], new_state))
        candidates.sort(key=lambda c: -c[0])
        beams = []
        for score, tokens, st in candidates:
            if tokens[-1] == EOS_ID:
                finished.append((score / penalty(len(tokens), alpha), tokens[:-1]))
            else:
                beams.append((score, tokens, st))
            if len(beams) == k:
                break
        if len(finished) >= k:
            break
    if not finished:
        finished = [(s / penalty(len(t), alpha), t) for s, t, _ in beams]
    return max(finished, key=lambda f: f[0])[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run")
    parser.add_argument("input")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--length-penalty", type=float, default=1.0)
    parser.add_argument("--max-length-ratio", type=float, default=2.0)
    args = parser.parse_args()
    translator = seqtool.load(args.run, task="translator", device="cpu")
    model, src_tok, tgt_tok = translator.model, translator.src_tokenizer, translator.tgt_tokenizer
    with open(args.input, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = time.perf_counter()
    with torch.inference_mode():
        for line in lines:
            ids = src_tok.encode(line)[: model.config.max_length] or [EOS_ID]
            k, alpha, ratio = args.beam_size, args.length_penalty, args.max_length_ratio
            tokens = beam_one(model, ids, k, alpha, ratio)
            print(tgt_tok.decode(tokens), flush=True)
    seconds = time.perf_counter() - start
    print(
        f"sentences={len(lines)} seconds={seconds:.3f} sentences_per_s={len(lines) / seconds:.3f}",
        file=sys.stderr,
    )


if __name__ == "__main__":
    main()
