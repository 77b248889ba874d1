"""Sampling chars/s (in-process loop and `seqtool generate`) against ref_sample.py, and
the in-process probe it runs as a child."""

from __future__ import annotations

import json
import time
from pathlib import Path

from harness import (
    PYTHON,
    REF_SAMPLE,
    SELF,
    SEQTOOL,
    TRAIN,
    VALID,
    Section,
    Sizes,
    key_values,
    last_json,
    run,
)

from sections.throughput import model_options

TITLE = "Sampling speed"


def measure(sec: Section, sizes: Sizes, out: Path) -> None:
    run_dir = out / "tp_fp32"
    if not (run_dir / "best.ckpt").exists():
        child = run([
            *SEQTOOL, "train", "generator", "--train", TRAIN, "--valid", VALID,
            "--out", run_dir, "--force", "--precision", "fp32", "--max-steps", 10,
            "--eval-every", 10, *model_options(sizes.hidden),
        ])  # fmt: skip
        sec.commands["train"] = child.command
        sec.notes.append(
            f"no checkpoint from the throughput section: trained a small one for 10 steps "
            f"({child.wall:.0f} s); sampling speed does not depend on the weights"
        )
    info = last_json(run([*SEQTOOL, "info", run_dir, "--json"]).stdout)
    vocab = info["vocab_size"]["text"]
    cfg = info["model_config"]
    length = sizes.sample_length
    ref = run([
        PYTHON, REF_SAMPLE, "--length", length, "--hidden", cfg["hidden_size"],
        "--layers", cfg["num_layers"], "--emb", cfg["embedding_size"], "--vocab", vocab,
    ])  # fmt: skip
    sec.commands["ref"] = ref.command
    ref_cps = key_values(ref.stdout)["chars_per_s"]
    loop = {}
    for batch in (1, 4):
        child = run([*SELF, "probe-sample", run_dir, length, batch])
        sec.commands[f"loop{batch}"] = child.command
        loop[batch] = last_json(child.stdout)["chars_per_s"]
    gen = run([*SEQTOOL, "generate", run_dir, "--length", length, "--seed", 0])
    sec.commands["generate"] = gen.command
    arch = f"{cfg['cell'].upper()} {cfg['num_layers']}x{cfg['hidden_size']}, vocab {vocab}"
    sec.add(
        f"sampling chars/s, batch 1, in-process loop ({arch})",
        "chars/s",
        loop[1],
        ref_cps,
        "ratio >= 5",
        ["loop1", "ref"],
    )
    sec.add(
        "sampling chars/s, batch 4 (all samples) vs ref batch 1",
        "chars/s",
        loop[4],
        ref_cps,
        commands=["loop4", "ref"],
    )
    sec.add(
        f"`seqtool generate --length {length}` chars/s, start-up included",
        "chars/s",
        length / gen.wall,
        ref_cps,
        commands=["generate", "ref"],
    )
    sec.add(f"`seqtool generate --length {length}` wall time", "s", gen.wall, commands=["generate"])
    sec.notes.append(
        f"{length} characters at temperature 0.8; the in-process loop times "
        f"seqtool.decoding.sample after a 50-token warm-up, without loading or start-up."
    )


def probe_sample(
    run_dir: str, length: str, num_samples: str, device: str = "cpu", quantize: str = "none"
) -> None:
    """Time seqtool.decoding.sample alone: no loading, no start-up."""
    import torch

    import seqtool
    from seqtool import decoding

    generator = seqtool.load(run_dir, task="generator", device=device, quantize=quantize)
    prompt, n, batch = generator.tokenizer.encode("\n"), int(length), int(num_samples)
    prompts, seeds = [prompt] * batch, decoding.seeds_for(batch, 0)
    with torch.inference_mode():  # as Generator.generate runs it
        list(decoding.sample(generator.model, prompts, 50, 0.8, None, None, seeds))  # warm-up
        start = time.perf_counter()
        tokens = list(decoding.sample(generator.model, prompts, n, 0.8, None, None, seeds))
        tokens[-1].tolist()  # waits for the device to finish
        seconds = time.perf_counter() - start
    speed = {"seconds": seconds, "chars_per_s": n * batch / seconds}
    print(json.dumps({**speed, "threads": torch.get_num_threads()}))
